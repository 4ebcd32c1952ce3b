"""HTTP behaviour every server must show, through the real ``anyserve`` command.

One server process per adapter for the whole module; a limitation a server
declares in its adapter's Capabilities is asserted as such, never skipped.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from anyserve.registry import adapters

from .app import pattern
from .conftest import Running, start_anyserve

APP = "tests.conformance.app:app"
SERVERS = list(adapters())
MiB = 1024 * 1024


def test_every_registered_server_is_installed() -> None:
    for name, cls in adapters().items():
        assert cls.is_installed(), f"{name} is registered but not installed: {cls.install_hint()}"


@pytest.fixture(scope="module", params=SERVERS)
def served(request: pytest.FixtureRequest) -> Iterator[Running]:
    running = start_anyserve(request.param, APP)
    try:
        yield running
    finally:
        running.stop()


def connect(url: str, timeout: float = 30) -> http.client.HTTPConnection:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return http.client.HTTPConnection(host, int(port), timeout=timeout)


def fetch(
    url: str, path: str, method: str = "GET", body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = connect(url)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def echo(url: str, path: str = "/echo", **kwargs: Any) -> dict[str, Any]:
    status, _, body = fetch(url, path, **kwargs)
    assert status == 200, body
    return json.loads(body)


def raw(url: str, data: bytes, timeout: float = 10) -> bytes:
    """Send raw bytes, read until the server closes or goes quiet."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
                if b"\r\n\r\n" in b"".join(chunks) and _complete(b"".join(chunks)):
                    break
        except (TimeoutError, ConnectionResetError):
            pass
        return b"".join(chunks)


def _complete(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


def capabilities(running: Running) -> Any:
    return adapters()[running.server].capabilities


def test_get(served: Running) -> None:
    report = echo(served.url, "/echo?x=1")
    assert report["method"] == "GET"
    assert report["length"] == 0


def test_head_has_no_body(served: Running) -> None:
    status, headers, body = fetch(served.url, "/echo", method="HEAD")
    assert status == 200
    assert body == b""
    assert headers["content-type"] == "application/json"


@pytest.mark.parametrize("size", [0, MiB, 50 * MiB], ids=["0B", "1MiB", "50MiB"])
def test_post_body_integrity(served: Running, size: int) -> None:
    body = b"".join(pattern(size))
    report = echo(served.url, method="POST", body=body, headers={"Content-Type": "application/octet-stream"})
    assert report["method"] == "POST"
    assert report["length"] == size
    assert report["sha256"] == hashlib.sha256(body).hexdigest()


def test_chunked_request_body(served: Running) -> None:
    parts = [b"hello ", b"chunked ", b"world" * 1000]
    encoded = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in parts) + b"0\r\n\r\n"
    request = (
        b"POST /echo HTTP/1.1\r\nHost: conformance\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + encoded
    )
    answer = raw(served.url, request)
    if capabilities(served).chunked_request:
        assert answer.startswith(b"HTTP/1.1 200") or answer.startswith(b"HTTP/1.0 200"), answer[:200]
        report = json.loads(answer.partition(b"\r\n\r\n")[2])
        whole = b"".join(parts)
        assert (report["length"], report["sha256"]) == (len(whole), hashlib.sha256(whole).hexdigest())
    else:
        # Declared limitation: the body is not decoded, so the app never sees it.
        if answer:
            report = json.loads(answer.partition(b"\r\n\r\n")[2] or b"{}")
            assert report.get("length", 0) != len(b"".join(parts))
    assert echo(served.url)["method"] == "GET"  # and it keeps serving


def test_streamed_response_first_chunk_before_the_app_finishes(served: Running, tmp_path: Path) -> None:
    release = tmp_path / "release"
    conn = connect(served.url, timeout=8)
    try:
        conn.request("GET", f"/stream?release={release}")
        response = conn.getresponse()
        assert response.status == 200
        # The app waits for the release file before its second chunk: the first must arrive first.
        first = response.fp.readline() if response.chunked is False else response.read1()
        assert first.startswith(b"first chunk")
        release.touch()
        rest = response.read()
    finally:
        conn.close()
    assert (first + rest).replace(b"first chunk\n", b"", 1) == b"released\nlast chunk\n"


def test_keep_alive(served: Running) -> None:
    conn = connect(served.url)
    try:
        conn.request("GET", "/echo")
        first = conn.getresponse()
        first.read()
        if capabilities(served).keep_alive:
            assert not first.will_close
            sock = conn.sock
            conn.request("GET", "/echo")
            second = conn.getresponse()
            assert second.status == 200
            second.read()
            assert conn.sock is sock  # the same connection answered both
        else:
            # Declared limitation (HTTP/1.0): the server closes after each response.
            assert first.will_close
    finally:
        conn.close()


def test_large_response(served: Running) -> None:
    status, _, body = fetch(served.url, f"/big?size={10 * MiB}")
    assert status == 200
    assert len(body) == 10 * MiB
    assert hashlib.sha256(body).digest() == hashlib.sha256(b"".join(pattern(10 * MiB))).digest()


def test_percent_encoded_utf8_path(served: Running) -> None:
    report = echo(served.url, "/caf%C3%A9")
    # PEP 3333: PATH_INFO holds the raw bytes decoded as latin-1.
    assert report["path_info"].encode("latin-1") == "/café".encode()


def test_query_string(served: Running) -> None:
    report = echo(served.url, "/echo?a=1&b=two%20words&c=%C3%A9&a=3")
    assert report["query_string"] == "a=1&b=two%20words&c=%C3%A9&a=3"


def test_repeated_headers(served: Running) -> None:
    request = b"GET /echo HTTP/1.1\r\nHost: conformance\r\nX-Dup: a\r\nX-Dup: b\r\nConnection: close\r\n\r\n"
    answer = raw(served.url, request)
    report = json.loads(answer.partition(b"\r\n\r\n")[2])
    if capabilities(served).repeated_headers:
        # Repeated fields combine into one comma-separated list (RFC 9110 5.3).
        assert [part.strip() for part in report["x_dup"].split(",")] == ["a", "b"]
    else:
        assert report["x_dup"] == "b"  # declared limitation: the last value wins


def test_concurrent_slow_requests(served: Running) -> None:
    results: list[int] = []
    lock = threading.Lock()

    def one() -> None:
        status, _, _ = fetch(served.url, "/slow?s=0.5")
        with lock:
            results.append(status)

    started = time.monotonic()
    threads = [threading.Thread(target=one) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    assert results == [200] * 20
    if capabilities(served).concurrent:
        assert elapsed < 5.0, f"20 requests of 0.5 s took {elapsed:.1f} s: they did not run concurrently"
    else:  # declared limitation: one request at a time
        assert elapsed >= 10.0


def test_app_exception_is_a_500_and_logged(served: Running) -> None:
    token = f"{time.monotonic_ns()}"
    status, _, _ = fetch(served.url, f"/raise?token={token}")
    assert status == 500
    assert echo(served.url)["method"] == "GET"  # the next request succeeds
    served.wait_for_output(f"conformance-app-error-{token}")
    assert "Traceback" in served.stderr_text()


def test_close_is_called(served: Running) -> None:
    before = int(fetch(served.url, "/close-count")[2])
    assert fetch(served.url, "/closing")[2] == b"closing"
    deadline = time.monotonic() + 5
    while int(fetch(served.url, "/close-count")[2]) <= before:
        assert time.monotonic() < deadline, "the response iterable's close() was not called"
        time.sleep(0.02)


def test_bad_request_is_a_4xx_and_the_server_keeps_serving(served: Running) -> None:
    answer = raw(served.url, b"GET /echo HTTX/1.1\r\nHost: conformance\r\n\r\n")
    if answer.startswith(b"HTTP/"):
        assert answer.split(b" ", 2)[1].startswith(b"4"), answer[:200]
    else:
        # Servers built on http.server answer a request line they cannot parse as
        # HTTP/0.9 would: the error page alone, without a status line.
        assert b"Error code: 400" in answer, answer[:200]
    assert echo(served.url)["method"] == "GET"


@pytest.fixture(scope="module", params=SERVERS)
def rooted(request: pytest.FixtureRequest) -> Iterator[Running]:
    running = start_anyserve(request.param, APP, "--root-path", "/prefix")
    try:
        yield running
    finally:
        running.stop()


def test_root_path_sets_script_name(rooted: Running) -> None:
    report = echo(rooted.url, "/prefix/echo")
    assert (report["script_name"], report["path_info"]) == ("/prefix", "/echo")
