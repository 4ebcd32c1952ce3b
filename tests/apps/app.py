"""The plain WSGI app of the conformance suite: one endpoint per behaviour to check."""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import parse_qs

StartResponse = Callable[..., Any]
CLOSES = {"count": 0}
_lock = threading.Lock()
_called = threading.local()


def pattern(size: int) -> Iterator[bytes]:
    """*size* deterministic bytes, in 64 KiB chunks."""
    block = bytes(range(256)) * 256
    while size > 0:
        yield block[: min(size, len(block))]
        size -= len(block)


def read_body(environ: dict[str, Any]) -> bytes:
    stream = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH")
    if length:
        return stream.read(int(length))
    if environ.get("wsgi.input_terminated"):
        return stream.read()
    return b""


class Closing:
    """A response iterable whose close() is counted, as PEP 3333 asks servers to call it."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    def __iter__(self) -> Iterator[bytes]:
        yield self.body

    def close(self) -> None:
        with _lock:
            CLOSES["count"] += 1


class RaisingBody:
    """A streamed body that fails after its first chunk; its close() leaves *mark*."""

    def __init__(self, mark: str) -> None:
        self.mark = mark

    def __iter__(self) -> Iterator[bytes]:
        yield b"first chunk\n"
        raise RuntimeError("conformance-app-error-in-body")

    def close(self) -> None:
        with open(self.mark, "w"):
            pass


class OnThread:
    """A streamed body whose close() records whether it runs on the thread (or
    greenlet) that called the app, where a threaded server runs it, and an app
    keeping the request in thread-locals (CherryPy) needs it."""

    def __init__(self, token: object, mark: str) -> None:
        self.token = token
        self.mark = mark

    def __iter__(self) -> Iterator[bytes]:
        yield b"first "
        time.sleep(0.02)  # requests side by side: a server may ask other threads for the rest
        yield b"second"

    def close(self) -> None:
        same = getattr(_called, "token", None) is self.token
        with open(self.mark + ".part", "w") as fh:
            fh.write(json.dumps(same))
        os.replace(self.mark + ".part", self.mark)


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "")
    query = {key: values[-1] for key, values in parse_qs(environ.get("QUERY_STRING", "")).items()}
    if path == "/echo" or path.startswith(("/caf", "/echo/")) or environ.get("REQUEST_METHOD") == "CONNECT":
        body = read_body(environ)
        report = {
            "method": environ["REQUEST_METHOD"],
            "path_info": environ.get("PATH_INFO", ""),
            "script_name": environ.get("SCRIPT_NAME", ""),
            "query_string": environ.get("QUERY_STRING", ""),
            "x_dup": environ.get("HTTP_X_DUP"),
            "host": environ.get("HTTP_HOST"),
            "content_length": environ.get("CONTENT_LENGTH"),
            "content_type": environ.get("CONTENT_TYPE"),
            "transfer_encoding": environ.get("HTTP_TRANSFER_ENCODING"),
            "length": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
            "pid": os.getpid(),
            "url_scheme": environ.get("wsgi.url_scheme"),
            "multithread": environ.get("wsgi.multithread"),
            "multiprocess": environ.get("wsgi.multiprocess"),
            "forwarded_host": environ.get("HTTP_X_FORWARDED_HOST"),
        }
        return respond(start_response, json.dumps(report).encode(), "application/json")
    if path == "/big":
        size = int(query.get("size", "0"))
        start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))])
        return pattern(size)
    if path == "/stream":
        return stream(start_response, query.get("release", ""))
    if path == "/slow":
        if "mark" in query:
            with open(query["mark"], "w"):
                pass
        time.sleep(float(query.get("s", "0.5")))
        if "size" in query:  # a body large enough to be sent over several writes
            return respond(start_response, b"".join(pattern(int(query["size"]))), "application/octet-stream")
        return respond(start_response, b"slept")
    if path == "/header-case":  # names as an app may write them, one of them repeated
        start_response(
            "200 OK",
            [
                ("WWW-Authenticate", "Negotiate"),
                ("X-Request-ID", "7"),
                ("WWW-Authenticate", 'Basic realm="foo"'),
                ("Content-Length", "2"),
            ],
        )
        return [b"ok"]
    if path == "/dated":  # the app's own Date and Server headers
        start_response(
            "200 OK",
            [("Date", "Tue, 01 Dec 2026 00:00:00 GMT"), ("Server", "conformance-app"), ("Content-Length", "2")],
        )
        return [b"ok"]
    if path == "/unsized":  # a body of unknown length: chunked on HTTP/1.1
        start_response("200 OK", [("Content-Type", "text/plain")])
        return iter([b"un", b"sized"])
    if path == "/status":  # a status without a body (204, 304)
        start_response(f"{query['code']} Status", [])
        return []
    if path == "/raise":
        raise RuntimeError(f"conformance-app-error-{query.get('token', '')}")
    if path == "/closing":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "7")])
        return Closing(b"closing")
    if path == "/same-thread":
        _called.token = token = object()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return OnThread(token, query["mark"])
    if path == "/raise-in-body":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return RaisingBody(query["mark"])
    if path == "/wrapped":  # the server's wsgi.file_wrapper, where it has one
        size = int(query.get("size", "0"))
        start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))])
        body = io.BytesIO(b"".join(pattern(size)))
        wrapper = environ.get("wsgi.file_wrapper")
        return wrapper(body, 65536) if wrapper is not None else iter(lambda: body.read(65536), b"")
    if path == "/overlong":  # a body longer than the Content-Length it declares
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
        return [b"I have too many bytes"]
    if path == "/close-count":
        with _lock:
            count = CLOSES["count"]
        return respond(start_response, str(count).encode())
    return respond(start_response, b"not found", status="404 Not Found")


def respond(
    start_response: StartResponse, body: bytes, content_type: str = "text/plain", status: str = "200 OK"
) -> list[bytes]:
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]


def stream(start_response: StartResponse, release: str) -> Iterator[bytes]:
    """A first chunk, then the rest only once the test has created the *release* file:
    a server that buffers the response never shows the first chunk in time."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"first chunk\n"
    deadline = time.monotonic() + 10
    while release and not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.01)
    yield b"released\n" if os.path.exists(release) else b"never released\n"
    yield b"last chunk\n"
