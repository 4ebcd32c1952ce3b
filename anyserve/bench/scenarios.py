"""The benchmark scenarios: small WSGI apps and the request each one is measured with.

Shipped inside the package so ``anyserve bench --scenario NAME`` works from an
installed anyserve; ``benchmarks/scenario_apps.py`` reuses these apps. The
``cherrypy`` scenario lives in :mod:`anyserve.bench.cherrypy_app`, so importing
this module never imports CherryPy.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

StartResponse = Callable[..., Any]

HELLO = b"Hello, world!"  # 13 bytes
LARGE = b"x" * (1024 * 1024)  # 1 MiB
UPLOAD_SIZE = 1024 * 1024
SLOW_SECONDS = 0.05
#: Loop turns of :func:`cpu`; about 1 ms of pure Python on the reference machine.
CPU_TURNS = 17_000
#: A document of about 1 KB once serialised, re-serialised on every request.
DOCUMENT = {
    "id": 12345,
    "name": "anyserve",
    "tags": ["wsgi", "benchmark", "server", "python"],
    "items": [{"id": i, "title": f"item number {i}", "price": i * 1.25, "in_stock": i % 2 == 0} for i in range(12)],
}


def _plain(start_response: StartResponse, body: bytes, content_type: str = "text/plain") -> list[bytes]:
    start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]


def hello(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """13 bytes of text."""
    return _plain(start_response, HELLO)


def json_document(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """About 1 KB of JSON, serialised per request."""
    return _plain(start_response, json.dumps(DOCUMENT).encode(), "application/json")


def large(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """A 1 MiB response."""
    return _plain(start_response, LARGE, "application/octet-stream")


def upload(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """Read the whole request body and answer its length."""
    stream = environ["wsgi.input"]
    remaining = int(environ.get("CONTENT_LENGTH") or 0)
    received = 0
    while remaining > 0:
        chunk = stream.read(min(remaining, 65536))
        if not chunk:
            break
        received += len(chunk)
        remaining -= len(chunk)
    return _plain(start_response, str(received).encode())


def slow(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """Each request blocks for 50 ms, as a call to a slow backend would."""
    time.sleep(SLOW_SECONDS)
    return _plain(start_response, HELLO)


def cpu(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """About 1 ms of pure Python work per request."""
    total = 0
    for i in range(CPU_TURNS):
        total += i * i % 7
    return _plain(start_response, str(total).encode())


@dataclass(frozen=True)
class Scenario:
    """An app to serve and the request the load generator repeats against it."""

    name: str
    app: str
    description: str
    path: str = "/"
    method: str = "GET"
    body_size: int = 0
    #: A module the app needs, checked before any server starts.
    requires: str | None = None

    def body(self) -> bytes:
        return b"x" * self.body_size


_HERE = __name__
SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("hello", f"{_HERE}:hello", "13 bytes of text"),
        Scenario("json", f"{_HERE}:json_document", "about 1 KB of JSON, serialised per request"),
        Scenario("large", f"{_HERE}:large", "a 1 MiB response"),
        Scenario(
            "upload",
            f"{_HERE}:upload",
            "POST 1 MiB, the app reads it and answers its length",
            method="POST",
            body_size=UPLOAD_SIZE,
        ),
        Scenario("slow", f"{_HERE}:slow", "each request blocks 50 ms (threads, greenlets or a loop?)"),
        Scenario("cpu", f"{_HERE}:cpu", "about 1 ms of pure Python work per request"),
        Scenario(
            "cherrypy",
            "anyserve.bench.cherrypy_app:make_root()",
            "the hello page through a full CherryPy app",
            requires="cherrypy",
        ),
    )
}
