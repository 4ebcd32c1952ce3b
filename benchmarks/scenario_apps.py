"""Scenario apps for the benchmarks."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

HELLO = b"Hello, world!"  # 13 bytes


def hello(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(HELLO)))])
    return [HELLO]


def blocking(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Each request blocks for 50 ms, as a call to a slow backend would."""
    time.sleep(0.05)
    return hello(environ, start_response)
