"""An app that configures logging the simplest way, ``logging.basicConfig``, at
import, and logs an INFO line per request to its own logger."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

logging.basicConfig(format="APP %(levelname)s %(name)s: %(message)s", level=logging.INFO)
log = logging.getLogger("myapp")


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    log.info("serving %s", environ["PATH_INFO"])
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
    return [b"ok\n"]
