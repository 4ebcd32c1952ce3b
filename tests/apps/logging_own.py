"""An app that logs as a fresh Django project does: its own logger with a console
handler of its own, propagating to the root logger, which it leaves alone."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger("shop.request")
_handler = logging.StreamHandler(sys.stderr)
_handler.setFormatter(logging.Formatter("SHOP %(levelname)s %(message)s"))
log.addHandler(_handler)
log.setLevel(logging.INFO)


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    log.info("seen %s", path)
    log.warning("Not Found: %s", path)
    start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "10")])
    return [b"not found\n"]
