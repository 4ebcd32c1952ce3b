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


def test_chunked_request_body_with_extensions_and_trailers(served: Running) -> None:
    # RFC 9112 section 7.1: a chunk may carry extensions, the last chunk trailer fields.
    encoded = b"5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
    upload = request_bytes("POST", "/echo", "Transfer-Encoding: chunked", "Connection: close", body=encoded)
    response = read_response_to(served.url, upload)
    devs = deviations(served.server)
    if devs.no_chunk_extensions_or_trailers:  # declared: refused (tornado: 400; werkzeug: reading it fails, 500)
        assert response.status in (400, 500), response
    elif devs.no_chunked_request:  # declared: the app gets no body (see test_chunked_request_body)
        assert response.status == 200 and json.loads(response.body)["length"] == 0, response
    else:
        assert response.status == 200, response
        assert (json.loads(response.body)["length"], json.loads(response.body)["sha256"]) == digest(b"hello world")
    assert echo(served.url)["method"] == "GET"


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


def test_http10_keep_alive_when_asked(served: Running) -> None:
    ask = b"GET /echo?%s HTTP/1.0\r\nHost: conformance\r\nConnection: Keep-Alive\r\n\r\n"
    with raw_connection(served.url) as (sock, reader):
        sock.sendall(ask % b"first")
        first = read_response(reader)
        assert first.status == 200, first
        devs = deviations(served.server)
        if not (devs.no_keep_alive or devs.no_http10_keep_alive):
            # RFC 9112 section 9.3 and appendix C.2.2: a 1.0 client asks, the server says it keeps it.
            assert first.header("connection").lower() == "keep-alive", first.head
            sock.sendall(ask % b"second")
            assert json.loads(read_response(reader).body)["query_string"] == "second"
        else:  # declared: closed after the response
            assert "keep-alive" not in first.header("connection").lower(), first.head
            assert is_closed(reader), "the server neither kept the HTTP/1.0 connection nor closed it"


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
        body = answer.partition(b"\r\n\r\n")[2]
        if not deviations(served.server).bare_bad_request:
            assert body, f"a 4xx that does not say what was wrong: {answer[:300]!r}"
        else:  # declared: a bare 400, no body
            assert answer.startswith(b"HTTP/1.1 400 ") and body == b"", answer[:300]
    assert echo(served.url)["method"] == "GET"


# -- the WSGI environ --------------------------------------------------------------


def test_percent_encoded_utf8_path(served: Running) -> None:
    report = echo(served.url, "/caf%C3%A9")
    # PEP 3333: PATH_INFO holds the decoded bytes of the path as latin-1 characters.
    assert report["path_info"].encode("latin-1") == "/café".encode()


def test_query_string_is_raw(served: Running) -> None:
    report = echo(served.url, "/echo?a=1&b=two%20words&c=%C3%A9&a=3&d=%2F+x")
    assert report["query_string"] == "a=1&b=two%20words&c=%C3%A9&a=3&d=%2F+x"


def test_body_longer_than_its_content_length(served: Running) -> None:
    with raw_connection(served.url) as (sock, reader):
        sock.sendall(request_bytes("GET", "/overlong"))
        response = read_response(reader)  # the status line comes: the client is not left with nothing
        if response.status == 500:  # as cheroot answers it: nothing of the app's response is sent
            assert response.body == b"The requested resource returned more bytes than the declared Content-Length."
        else:
            # Or the declared bytes only; what is over is never sent, so a next
            # request on the connection gets its own response (or the connection closes).
            assert (response.status, response.body) == (200, b"I hav"), response
            try:
                sock.sendall(request_bytes("GET", "/echo?next"))
                following = read_response(reader)
            except (EOFError, ConnectionError):
                following = None
            if following is not None:
                assert json.loads(following.body)["query_string"] == "next", following
    assert echo(served.url)["method"] == "GET"


def test_file_wrapper_response(served: Running) -> None:
    response = fetch(served.url, f"/wrapped?size={MiB + 3}")
    assert response.status == 200
    assert digest(response.body) == digest(b"".join(pattern(MiB + 3)))


def test_close_runs_on_the_thread_that_called_the_app(served: Running, tmp_path: Path) -> None:
    # CherryPy keeps the request in thread-locals from the app's call to its close().
    marks = [tmp_path / f"closed-{number}" for number in range(8)]
    bodies: list[bytes] = []

    def one(mark: Path) -> None:
        bodies.append(fetch(served.url, f"/same-thread?mark={mark}").body)

    clients = [threading.Thread(target=one, args=(mark,)) for mark in marks]
    for client in clients:
        client.start()
    for client in clients:
        client.join()
    assert bodies == [b"first second"] * len(marks)
    deadline = time.monotonic() + 5
    while not all(mark.exists() for mark in marks):
        assert time.monotonic() < deadline, "the response's close() was not called"
        time.sleep(0.02)
    elsewhere = [mark.name for mark in marks if json.loads(mark.read_text()) is not True]
    assert not elsewhere, f"close() ran on another thread than the app's call: {elsewhere}"


def test_close_is_called_when_the_body_fails(served: Running, tmp_path: Path) -> None:
    # PEP 3333: close() either way; CherryPy runs its on_end_request hooks there.
    mark = tmp_path / "closed"
    with raw_connection(served.url) as (sock, reader):
        sock.sendall(request_bytes("GET", f"/raise-in-body?mark={mark}", "Connection: close"))
        reader.read()  # a cut response, whatever its framing
    deadline = time.monotonic() + 5
    while not mark.exists():
        assert time.monotonic() < deadline, "close() was not called after the body raised"
        time.sleep(0.02)
    assert echo(served.url)["method"] == "GET"


def test_absent_content_headers_are_absent(served: Running) -> None:
    # CherryPy answers 411 to a POST without Content-Length, and tells a missing Content-Type from an empty one.
    with raw_connection(served.url) as (sock, reader):
        sock.sendall(request_bytes("GET", "/echo"))
        report = json.loads(read_response(reader).body)
    if not deviations(served.server).made_up_content_type:
        assert (report["content_type"], report["content_length"]) == (None, None), report
    else:  # declared: http.server's text/plain, and eventlet's empty CONTENT_LENGTH
        assert report["content_type"] == "text/plain" and report["content_length"] in (None, ""), report


def test_host_header_reaches_the_app_as_sent(served: Running) -> None:
    # Not a host name (an RFC 2047 word with a newline in it): the app's to judge, not the server's.
    report = echo(served.url, headers={"Host": "=?iso-8859-1?q?foo=0Abar?="})
    assert report["host"] == "=?iso-8859-1?q?foo=0Abar?=", report


def test_malformed_multipart_body_reaches_the_app(served: Running) -> None:
    # Lines ended by LF alone, as CherryPy's upload tutorial test sends them: the app parses its body.
    body = b'--x\nContent-Disposition: form-data; name="f"; filename="a.txt"\r\n\r\naaaaa\n--x--\n'
    report = echo(served.url, method="POST", body=body, headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert (report["length"], report["sha256"]) == digest(body)


# -- the request target, read as cheroot reads it for CherryPy (RFC 9112 section 3.2) --


def answer_to(url: str, method: str, target: str) -> tuple[int, bytes]:
    """The status and body of one request with *target* sent as it is."""
    response = read_response_to(url, request_bytes(method, target, "Connection: close"))
    return response.status, response.body


def read_response_to(url: str, request: bytes) -> Any:
    with raw_connection(url) as (sock, reader):
        sock.sendall(request)
        return read_response(reader)


def test_absolute_form_target_gives_its_path_and_query(served: Running) -> None:
    status, body = answer_to(served.url, "GET", "http://conformance/echo/a%20b?q=1&r=%2F")
    assert status == 200, body
    report = json.loads(body)
    assert (report["path_info"], report["query_string"]) == ("/echo/a b", "q=1&r=%2F"), report


def test_connect_target_is_the_path(served: Running) -> None:
    status, body = answer_to(served.url, "CONNECT", "created.example.com:3128")
    assert status == 200, body
    report = json.loads(body)
    assert (report["method"], report["path_info"], report["query_string"]) == (
        "CONNECT",
        "/created.example.com:3128",
        "",
    ), report


@pytest.mark.parametrize("target", ["example.com", "http://example.com:33", "/echo/", "echo/", "/echo?q=f"])
def test_connect_to_anything_but_host_and_port_is_a_400(served: Running, target: str) -> None:
    status, body = answer_to(served.url, "CONNECT", target)
    assert status == 400, body
    assert body == b"Invalid path in Request-URI: request-target must match authority-form.", body


def test_target_without_a_leading_slash_is_a_400(served: Running) -> None:
    status, body = answer_to(served.url, "GET", "echo/without/leading/slash")
    assert status == 400, body
    # cheroot's words where the request reaches anyserve; gunicorn refuses such
    # a request line itself, with a page of its own ("Invalid HTTP request line").
    assert b"Invalid path in Request-URI" in body or b"Invalid HTTP request line" in body, body
    assert echo(served.url)["method"] == "GET"


def test_encoded_slash_stays_in_path_info(served: Running) -> None:
    # As cheroot gives it to CherryPy: "a%2Fb" is one segment, not two.
    report = echo(served.url, "/echo/a%2Fb/c%20d%2fe?x=%2F")
    assert (report["path_info"], report["query_string"]) == ("/echo/a%2Fb/c d%2Fe", "x=%2F"), report


def test_target_with_a_fragment_is_a_400(served: Running) -> None:
    status, body = answer_to(served.url, "GET", "/echo#fragment")
    assert status == 400, body
    assert body == b"Illegal #fragment in Request-URI.", body


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
