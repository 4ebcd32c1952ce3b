"""HTTP behaviour every server must show, through the real ``anyserve`` command.

One server process per adapter for the whole module (two: one more with
--root-path); a limitation a server declares in its adapter's Capabilities is
asserted as such, never skipped.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from anyserve.registry import adapters

from ..apps.app import pattern
from ..harness import (
    APP,
    Running,
    capabilities,
    connect,
    deviations,
    exchange,
    fetch,
    is_closed,
    raw_connection,
    read_response,
    start_anyserve,
    suite_args,
)

MiB = 1024 * 1024
SLOW = 0.5  # seconds each request of the concurrency case sleeps in the app
CONCURRENT = 20


def test_every_registered_server_is_installed() -> None:
    for name, cls in adapters().items():
        assert cls.is_installed(), f"{name} is registered but not installed: {cls.install_hint()}"


@pytest.fixture(scope="module")
def served(server: str) -> Iterator[Running]:
    running = start_anyserve(server, APP, *suite_args(server))
    try:
        yield running
    finally:
        running.stop()


def echo(url: str, path: str = "/echo", **kwargs: Any) -> dict[str, Any]:
    response = fetch(url, path, **kwargs)
    assert response.status == 200, response
    return json.loads(response.body)


def request_bytes(method: str, path: str, *headers: str, body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: conformance", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def digest(data: bytes) -> tuple[int, str]:
    return len(data), hashlib.sha256(data).hexdigest()


# -- methods and bodies ------------------------------------------------------------


def test_get(served: Running) -> None:
    report = echo(served.url, "/echo?x=1")
    assert (report["method"], report["length"]) == ("GET", 0)


def test_wsgi_flags_say_how_the_app_is_run(served: Running) -> None:
    report = echo(served.url)
    assert report["multiprocess"] is bool(suite_args(served.server)), report  # -w 2 for pre-fork servers
    # Requests run side by side on threads.
    if capabilities(served.server).threads and not deviations(served.server).one_request_at_a_time:
        assert report["multithread"] is True, report


def test_head_has_the_headers_and_no_body(served: Running) -> None:
    answer = exchange(served.url, request_bytes("HEAD", "/echo", "Connection: close"))
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert re.match(rb"HTTP/1\.[01] 200 ", head), answer[:300]
    assert b"content-type: application/json" in head.lower()
    # RFC 9112 6.3: a response to HEAD ends with its header section. Bytes after
    # it are read by a keep-alive client as the start of the next response.
    assert rest == b"", f"{served.server} sent {len(rest)} bytes of content after a HEAD response: {rest[:80]!r}"


@pytest.mark.parametrize("size", [0, MiB, 50 * MiB], ids=["0B", "1MiB", "50MiB"])
def test_post_body_integrity(served: Running, size: int) -> None:
    body = b"".join(pattern(size))
    report = echo(served.url, method="POST", body=body, headers={"Content-Type": "application/octet-stream"})
    assert report["method"] == "POST"
    assert (report["length"], report["sha256"]) == digest(body)


def test_chunked_request_body(served: Running) -> None:
    devs = deviations(served.server)
    parts = [b"a", b"hello chunked world\n" * 100, b"z" * 4097]
    if not devs.no_chunked_request:
        parts.insert(2, b"".join(pattern(MiB + 7)))
    # else a small body: a server that does not read it must not block the upload
    whole = b"".join(parts)
    encoded = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in parts) + b"0\r\n\r\n"
    upload = request_bytes("POST", "/echo", "Transfer-Encoding: chunked", "Content-Type: text/plain", body=encoded)
    with raw_connection(served.url) as (sock, reader):
        sock.sendall(upload)
        response = read_response(reader)
        if not devs.no_chunked_request:
            assert response.status == 200, response
            report = json.loads(response.body)
            assert (report["length"], report["sha256"]) == digest(whole)
            if not devs.no_keep_alive:  # the whole upload was consumed: the next request on the connection is answered
                sock.sendall(request_bytes("GET", "/echo?after-chunked"))
                after = read_response(reader)
                assert json.loads(after.body)["query_string"] == "after-chunked"
        else:
            # Declared limitation: the app gets no body (wsgiref gives it neither a
            # CONTENT_LENGTH nor wsgi.input_terminated), and the connection closes
            # after the answer, so the chunks are never read as a request.
            assert response.status == 200, response
            report = json.loads(response.body)
            assert (report["length"], report["content_length"] or "0") == (0, "0"), report
            assert report["transfer_encoding"] == "chunked"
            assert is_closed(reader), "the connection stayed open after a chunked upload the server cannot read"
    assert echo(served.url)["method"] == "GET"  # and it keeps serving


# -- responses ---------------------------------------------------------------------


def test_streamed_response_first_chunk_before_the_app_finishes(served: Running, tmp_path: Path) -> None:
    release = tmp_path / "release"
    conn = connect(served.url, timeout=8)
    try:
        conn.request("GET", f"/stream?release={release}")
        response = conn.getresponse()
        assert response.status == 200
        # The app yields its first chunk, then waits for the release file: a
        # server that buffers the response would never show the first one in time.
        first = b""
        while b"\n" not in first:
            data = response.read1(64)
            assert data, f"the response ended before its first chunk: {first!r}"
            first += data
        assert first.startswith(b"first chunk\n"), first
        release.touch()
        rest = response.read()
    finally:
        conn.close()
    assert first + rest == b"first chunk\nreleased\nlast chunk\n"


def test_large_response(served: Running) -> None:
    response = fetch(served.url, f"/big?size={10 * MiB}")
    assert response.status == 200
    assert digest(response.body) == digest(b"".join(pattern(10 * MiB)))


# -- connections -------------------------------------------------------------------


def test_keep_alive(served: Running) -> None:
    with raw_connection(served.url) as (sock, reader):
        sock.sendall(request_bytes("GET", "/echo?first"))
        first = read_response(reader)
        assert first.status == 200, first
        if not deviations(served.server).no_keep_alive:
            assert "close" not in first.header("connection").lower(), first.head
            sock.sendall(request_bytes("GET", "/echo?second"))
            second = read_response(reader)  # on the very same socket
            assert second.status == 200, second
            assert json.loads(second.body)["query_string"] == "second"
        else:
            # Declared limitation: one response per connection, and the server
            # says so before it closes.
            assert first.version == "HTTP/1.0" or "close" in first.header("connection").lower(), first.head
            assert is_closed(reader), "the server neither kept the connection for a second request nor closed it"


@pytest.mark.parametrize(
    "garbage",
    [b"GARBAGE\r\n\r\n", b"GET /echo HTTX/1.1\r\nHost: conformance\r\n\r\n", b"\x16\x03\x01\x02\x00\x01\x00\r\n\r\n"],
    ids=["no-version", "bad-version", "tls-hello"],
)
def test_bad_request_is_a_4xx_and_the_server_keeps_serving(served: Running, garbage: bytes) -> None:
    answer = exchange(served.url, garbage)
    if b"HTTX" in garbage and deviations(served.server).any_http_version:
        # Declared limitation: the request is served, its status line echoing the version it named.
        assert answer.startswith(b"HTTX/1.1 200 "), answer[:200]
    else:
        assert re.match(rb"HTTP/1\.[01] 4\d\d", answer), f"not a 4xx status line: {answer[:200]!r}"
    assert echo(served.url)["method"] == "GET"


# -- the WSGI environ --------------------------------------------------------------


def test_percent_encoded_utf8_path(served: Running) -> None:
    report = echo(served.url, "/caf%C3%A9")
    # PEP 3333: PATH_INFO holds the decoded bytes of the path as latin-1 characters.
    assert report["path_info"].encode("latin-1") == "/café".encode()


def test_query_string_is_raw(served: Running) -> None:
    report = echo(served.url, "/echo?a=1&b=two%20words&c=%C3%A9&a=3&d=%2F+x")
    assert report["query_string"] == "a=1&b=two%20words&c=%C3%A9&a=3&d=%2F+x"


def test_repeated_headers(served: Running) -> None:
    answer = exchange(served.url, request_bytes("GET", "/echo", "X-Dup: a", "X-Dup: b", "Connection: close"))
    report = json.loads(answer.partition(b"\r\n\r\n")[2])
    if not deviations(served.server).last_repeated_header:
        # One comma-separated value, in order (RFC 9110 5.3, RFC 3875 4.1.18).
        assert [part.strip() for part in report["x_dup"].split(",")] == ["a", "b"]
    else:
        assert report["x_dup"] == "b"  # declared limitation: the last value wins


# -- concurrency -------------------------------------------------------------------


def run_slow_requests(url: str, count: int) -> float:
    """Send *count* slow requests at once; return the wall time until all were answered."""
    statuses: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def one() -> None:
        try:
            status = fetch(url, f"/slow?s={SLOW}").status
        except BaseException as exc:  # reported below, with the others
            with lock:
                errors.append(exc)
            return
        with lock:
            statuses.append(status)

    started = time.monotonic()
    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    assert not errors, errors
    assert statuses == [200] * count
    return elapsed


def assert_concurrent(url: str, server: str) -> None:
    elapsed = run_slow_requests(url, CONCURRENT)
    assert elapsed < CONCURRENT * SLOW / 2, (
        f"{server}: {CONCURRENT} requests of {SLOW} s took {elapsed:.1f} s: they did not run concurrently"
    )


def test_concurrent_slow_requests(served: Running) -> None:
    if not deviations(served.server).one_request_at_a_time:
        # With its defaults: at least 4 requests at a time (waitress's 4 threads
        # take 2.5 s; a thread per connection or a greenlet each take 0.5 s).
        assert_concurrent(served.url, served.server)
        return
    # Declared limitation: with the defaults, one request at a time (in each worker process).
    workers = 2 if suite_args(served.server) else 1
    elapsed = run_slow_requests(served.url, 3)
    assert elapsed >= math.ceil(3 / workers) * SLOW, f"3 requests of {SLOW} s took {elapsed:.2f} s on {workers} workers"
    if capabilities(served.server).threads:  # ...but --threads makes it concurrent
        running = start_anyserve(served.server, APP, "--threads", str(CONCURRENT))
        try:
            assert_concurrent(running.url, f"{served.server} --threads {CONCURRENT}")
        finally:
            running.stop()


@pytest.mark.servers(has="threads")
def test_one_thread_serves_one_request_at_a_time(server: str) -> None:
    running = start_anyserve(server, APP, "--threads", "1")
    try:
        elapsed = run_slow_requests(running.url, 3)
        assert elapsed >= 3 * SLOW, f"{server} --threads 1: 3 requests of {SLOW} s took {elapsed:.2f} s"
        assert echo(running.url)["method"] == "GET"
    finally:
        running.stop()


# -- the app failing, and its iterable ---------------------------------------------


def test_app_exception_is_a_500_and_logged(served: Running) -> None:
    token = f"{time.monotonic_ns()}"
    assert fetch(served.url, f"/raise?token={token}").status == 500
    assert echo(served.url)["method"] == "GET"  # the next request succeeds
    marker = f"RuntimeError: conformance-app-error-{token}"  # the last line of the traceback
    text = served.wait_for_output(re.escape(marker))
    assert "Traceback (most recent call last)" in text[: text.index(marker)], text[-2000:]


def test_close_is_called(served: Running) -> None:
    before = int(fetch(served.url, "/close-count").body)
    assert fetch(served.url, "/closing").body == b"closing"
    # close() may run just after the last byte is sent: wait for it, boundedly.
    deadline = time.monotonic() + 5
    while int(fetch(served.url, "/close-count").body) <= before:
        assert time.monotonic() < deadline, "the response iterable's close() was not called"
        time.sleep(0.02)


# -- SCRIPT_NAME -------------------------------------------------------------------


@pytest.fixture(scope="module")
def rooted(server: str) -> Iterator[Running]:
    running = start_anyserve(server, APP, "--root-path", "/prefix")
    try:
        yield running
    finally:
        running.stop()


def test_root_path_sets_script_name(rooted: Running) -> None:
    report = echo(rooted.url, "/prefix/echo?q=1")
    assert (report["script_name"], report["path_info"], report["query_string"]) == ("/prefix", "/echo", "q=1")
