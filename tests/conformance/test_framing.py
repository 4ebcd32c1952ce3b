"""What the server adds to, drops from or keeps of the app's response and the
client's request: header names as the app wrote them, one Date and one Server,
the connection kept after a chunked or bodiless response and closed when asked,
nothing after a HEAD's head and no Content-Length on a 204 or 304, repeated
request headers, a path that is not UTF-8, ``Expect: 100-continue`` and
``X-Forwarded-*`` as the app should see them, and request heads no server
should serve or leave waiting. Through the real ``anyserve`` command, one server
process per adapter; a declared deviation is asserted, never skipped.
"""

from __future__ import annotations

import contextlib
import json
import re
import select

import pytest

from ..harness import (
    Response,
    Running,
    deviations,
    exchange,
    fetch,
    raw_connection,
    read_response,
)


def request_bytes(method: str, path: str, *headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: conformance", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def header_names(head: bytes) -> list[str]:
    return [line.split(b":", 1)[0].decode("latin-1") for line in head.split(b"\r\n")[1:] if line]


def test_response_header_names_as_the_app_wrote_them(served: Running) -> None:
    answer = exchange(served.url, request_bytes("GET", "/header-case", "Connection: close"))
    head = answer.partition(b"\r\n\r\n")[0]
    names = header_names(head)
    values = [line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")[1:] if line.lower().startswith(b"www-")]
    # A repeated field keeps its order (RFC 9110 section 5.3), whatever the spelling.
    assert values == [b"Negotiate", b'Basic realm="foo"'], head
    if not deviations(served.server).respelled_header_names:
        assert names.count("WWW-Authenticate") == 2 and "X-Request-ID" in names, head
    else:  # declared: the server writes (some) names its own way
        wrote = ["WWW-Authenticate", "X-Request-ID", "WWW-Authenticate"]
        sent = [name for name in names if name.lower() in ("www-authenticate", "x-request-id")]
        assert sorted(name.lower() for name in sent) == sorted(name.lower() for name in wrote), head
        assert sorted(sent) != sorted(wrote), f"{served.server} declares it respells header names, yet did not"


def test_date_and_server_of_the_app_sent_once(served: Running) -> None:
    # RFC 9110 sections 6.6.1 and 10.2.4: one Date and one Server, the app's or the server's.
    answer = exchange(served.url, request_bytes("GET", "/dated", "Connection: close"))
    head = answer.partition(b"\r\n\r\n")[0]
    fields = [line.split(b":", 1) for line in head.split(b"\r\n")[1:]]
    dates = [value.strip() for name, value in fields if name.lower() == b"date"]
    servers = [value.strip() for name, value in fields if name.lower() == b"server"]
    assert (len(dates), len(servers)) == (1, 1), head


@pytest.mark.parametrize(
    ("path", "status", "body"),
    [("/unsized", 200, b"unsized"), ("/status?code=204", 204, b""), ("/status?code=304", 304, b"")],
    ids=["chunked", "204", "304"],
)
def test_connection_kept_after_a_chunked_or_empty_response(
    served: Running, path: str, status: int, body: bytes
) -> None:
    with raw_connection(served.url) as (sock, reader):
        sock.sendall(request_bytes("GET", path))
        first = read_response(reader)
        assert (first.status, first.body) == (status, body), first
        if deviations(served.server).no_keep_alive:
            assert is_closing(first), first.head  # declared: one response per connection
            return
        # HTTP/1.1 frames these without closing: the connection serves the next request.
        assert "close" not in first.header("connection").lower(), first.head
        sock.sendall(request_bytes("GET", "/echo?after"))
        second = read_response(reader)
        assert json.loads(second.body)["query_string"] == "after", second


@pytest.mark.parametrize("code", [204, 304])
def test_no_content_length_added_to_a_204_or_304(served: Running, code: int) -> None:
    # RFC 9110 section 8.6: never on a 204; on a 304 only the length a 200 would have.
    answer = exchange(served.url, request_bytes("GET", f"/status?code={code}", "Connection: close"))
    head = answer.partition(b"\r\n\r\n")[0]
    assert head.startswith(b"HTTP/1.") and b" %d " % code in head.split(b"\r\n")[0], head
    assert "content-length" not in [name.lower() for name in header_names(head)], head


def test_head_of_unknown_length_has_nothing_after_its_head(served: Running) -> None:
    with raw_connection(served.url) as (sock, reader):
        sock.sendall(request_bytes("HEAD", "/unsized"))
        head = read_response(reader, "HEAD")
        assert head.status == 200, head
        if is_closing(head):  # a server may close rather than keep a connection it cannot frame
            assert reader.read() == b"", "bytes came after the head of a HEAD response"
            return
        # Kept: the next bytes are the next request's response, not a body's end.
        sock.sendall(request_bytes("GET", "/echo?after-head"))
        second = read_response(reader)
        assert json.loads(second.body)["query_string"] == "after-head", second


def is_closing(response: Response) -> bool:
    return response.version == "HTTP/1.0" or "close" in response.header("connection").lower()


def test_close_asked_for_is_confirmed(served: Running) -> None:
    # RFC 9112 section 9.6: the server closes, and says so in its response.
    with raw_connection(served.url) as (sock, reader):
        sock.sendall(request_bytes("GET", "/echo?closing", "Connection: close"))
        response = read_response(reader)
        assert is_closing(response), response.head
        assert reader.read() == b"", "the connection stayed open, or more came, after the response"


def test_repeated_request_header_joined_with_comma_and_space(served: Running) -> None:
    answer = exchange(served.url, request_bytes("GET", "/echo", "X-Dup: a", "X-Dup: b", "Connection: close"))
    report = json.loads(answer.partition(b"\r\n\r\n")[2])
    devs = deviations(served.server)
    if devs.last_repeated_header:
        assert report["x_dup"] == "b", report  # declared: the last value wins
    elif devs.repeated_header_joined_without_space:
        assert report["x_dup"] == "a,b", report  # declared
    else:
        assert report["x_dup"] == "a, b", report  # as cheroot joins the headers it knows to be lists


def test_percent_encoded_path_that_is_not_utf8(served: Running) -> None:
    # PEP 3333: PATH_INFO holds the path's decoded bytes as latin-1 characters, UTF-8 or not.
    answer = exchange(served.url, request_bytes("GET", "/caf%E9%20%d4", "Connection: close"))
    report = json.loads(answer.partition(b"\r\n\r\n")[2])
    assert report["path_info"].encode("latin-1") == b"/caf\xe9 \xd4", report


def test_expect_continue_without_a_body_is_answered(served: Running) -> None:
    # Nothing to continue with: the server answers, with or without a 100 first.
    with raw_connection(served.url, timeout=5) as (sock, reader):
        sock.sendall(request_bytes("GET", "/echo?expect", "Expect: 100-continue"))
        response = read_response(reader)
        while 100 <= response.status < 200:
            response = read_response(reader)
    assert response.status == 200, response
    assert json.loads(response.body)["query_string"] == "expect"


def test_expect_continue_gets_one_100_at_most(served: Running) -> None:
    with raw_connection(served.url, timeout=5) as (sock, reader):
        sock.sendall(request_bytes("POST", "/echo?expect-body", "Content-Length: 5", "Expect: 100-continue"))
        # A client waits a moment for the 100, then sends the body anyway (RFC 9110 section 10.1.1).
        select.select([sock], [], [], 1)
        sock.sendall(b"hello")
        interim = 0
        response = read_response(reader)
        while 100 <= response.status < 200:
            interim += 1
            response = read_response(reader)
    assert interim <= 1, f"{interim} interim responses before the final one"
    assert response.status == 200 and json.loads(response.body)["length"] == 5, response


def test_forwarded_headers_reach_the_app(served: Running) -> None:
    # Like any other header; only --proxy-headers makes anyserve act on them.
    answer = exchange(
        served.url, request_bytes("GET", "/echo", "X-Forwarded-Host: www.example.test", "Connection: close")
    )
    report = json.loads(answer.partition(b"\r\n\r\n")[2])
    assert report["forwarded_host"] == "www.example.test", report


def test_header_line_that_is_not_a_field_is_a_400(served: Running) -> None:
    # RFC 9112 section 5: a field line is "name: value". A parser that stops at
    # this one drops the fields after it (the close asked for, here) unseen.
    request = request_bytes("GET", "/echo?bad-line", "Content-Type: text/plain", "re, 1.2.3.4", "Connection: close")
    with raw_connection(served.url, timeout=5) as (sock, reader):
        sock.sendall(request)
        if deviations(served.server).bad_header_line_unanswered:
            # Declared: the connection is closed with no answer.
            with contextlib.suppress(ConnectionResetError):
                assert reader.read() == b"", f"{served.server} declares it does not answer, yet it did"
            return
        response = read_response(reader)
    assert response.status == 400, response
    assert fetch(served.url, "/echo?after").status == 200  # and it keeps serving


def test_request_head_with_bare_line_feeds_is_answered_at_once(served: Running) -> None:
    # RFC 9112 section 2.2: a server may take a bare LF as a line's end, or refuse
    # the request; it should not leave the client waiting for a CRLF that never comes.
    with raw_connection(served.url, timeout=5) as (sock, reader):
        sock.sendall(b"GET /echo?bare HTTP/1.1\nHost: conformance\n\n")
        if deviations(served.server).waits_on_bare_lf:
            # Declared: no answer; the server closes the connection, or waits on
            # until --timeout-keep-alive answers the request that never came whole.
            with contextlib.suppress(TimeoutError, ConnectionResetError):
                first = reader.readline()
                assert first in (b"", b"HTTP/1.1 408 Request Timeout\r\n"), (
                    f"{served.server} declares it does not answer, yet it did: {first!r}"
                )
            return
        response = read_response(reader)
    assert re.fullmatch(r"HTTP/1\.[01]", response.version), response
    assert response.status in (200, 400), response
