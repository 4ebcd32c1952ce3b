"""The middleware the core applies for the options: access log, proxy headers,
mounts, virtual hosts, profiler. Pure WSGI, called directly."""

from __future__ import annotations

import io
import logging
import pstats
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from anyserve.config import COMBINED_LOG_FORMAT
from anyserve.middleware import (
    OVERLONG,
    AccessLog,
    ContentLengthGuard,
    Mounts,
    Profiler,
    ProxyHeaders,
    TrustedPeers,
    VirtualHosts,
    format_access_line,
    header_environ,
    parse_forwarded,
    path_info,
    profile_file_name,
    read_target,
    request_line_of,
)


def make_environ(path: str = "/", **extra: Any) -> dict[str, Any]:
    environ = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
    }
    environ.update(extra)
    return environ


def call(app: Callable[..., Iterable[bytes]], environ: dict[str, Any]) -> tuple[str, bytes]:
    """Call *app* as a server does: iterate, then close."""
    seen: dict[str, str] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
        seen["status"] = status
        return lambda data: None

    result = app(environ, start_response)
    try:
        body = b"".join(result)
    finally:
        if hasattr(result, "close"):
            result.close()
    return seen["status"], body


def echo(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """Reports what the routing and the proxy headers left in the environ."""
    keys = ("SCRIPT_NAME", "PATH_INFO", "REMOTE_ADDR", "wsgi.url_scheme", "HTTP_HOST", "SERVER_NAME", "SERVER_PORT")
    body = " ".join(f"{key}={environ.get(key, '')}" for key in keys).encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]


def named(name: str) -> Callable[..., list[bytes]]:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [f"{name} {environ['SCRIPT_NAME']}|{environ['PATH_INFO']}".encode()]

    return app


# -- access log ------------------------------------------------------------------------


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def access() -> Iterator[tuple[logging.Logger, Collect]]:
    logger = logging.getLogger("anyserve.test-access")
    handler = Collect()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield logger, handler
    finally:
        logger.removeHandler(handler)


COMBINED = re.compile(
    r"^(?P<h>\S+) - (?P<u>\S+) \[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] "
    r'"(?P<r>[^"]*)" (?P<s>\d{3}|-) (?P<b>\d+|-) "(?P<f>[^"]*)" "(?P<a>[^"]*)"$'
)


def test_combined_format_counts_the_bytes_of_a_streamed_body(access: Any) -> None:
    logger, lines = access

    def streaming(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"abc"
        yield b""
        yield b"defg"

    app = AccessLog(streaming, COMBINED_LOG_FORMAT, logger)
    environ = make_environ("/caf\xc3\xa9", QUERY_STRING="a=1", HTTP_REFERER="http://r/", HTTP_USER_AGENT="ua/1")
    _status, body = call(app, environ)
    assert body == b"abcdefg"
    match = COMBINED.match(lines.lines[0])
    assert match, lines.lines
    assert match.groupdict() == {
        "h": "127.0.0.1",
        "u": "-",
        "r": "GET /caf%C3%A9?a=1 HTTP/1.1",
        "s": "200",
        "b": "7",
        "f": "http://r/",
        "a": "ua/1",
    }


def test_the_line_is_written_on_close_not_before(access: Any) -> None:
    logger, lines = access

    def streaming(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
        start_response("200 OK", [])
        yield b"x"

    app = AccessLog(streaming, COMBINED_LOG_FORMAT, logger)
    result = app(make_environ(), lambda status, headers: None)
    assert b"".join(result) == b"x"
    assert lines.lines == []
    result.close()
    assert len(lines.lines) == 1


def test_a_list_body_is_logged_at_once_and_returned_as_the_same_list(access: Any) -> None:
    logger, lines = access
    body = [b"hello"]

    def listing(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        start_response("201 Created", [])
        return body

    app = AccessLog(listing, "%(s)s %(B)s %(b)s", logger)
    assert app(make_environ(), lambda status, headers: None) is body  # servers rely on the type
    assert lines.lines == ["201 5 5"]


def test_head_counts_no_body_and_empty_bodies_show_a_dash(access: Any) -> None:
    logger, lines = access
    app = AccessLog(named("x"), "%(m)s %(b)s %(B)s", logger)
    call(app, make_environ(REQUEST_METHOD="HEAD"))
    assert lines.lines == ["HEAD - 0"]


def test_write_callable_bytes_are_counted(access: Any) -> None:
    logger, lines = access

    def legacy(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        write = start_response("200 OK", [])
        write(b"12345")
        return [b"678"]

    call(AccessLog(legacy, "%(b)s", logger), make_environ())
    assert lines.lines == ["8"]


def test_an_app_that_raises_is_logged_as_500(access: Any) -> None:
    logger, lines = access

    def failing(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        raise RuntimeError("boom")

    def failing_late(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
        start_response("200 OK", [])
        raise RuntimeError("boom")
        yield b""

    for app in (failing, failing_late):
        with pytest.raises(RuntimeError):
            call(AccessLog(app, "%(s)s %(b)s", logger), make_environ())
    assert lines.lines == ["500 -", "500 -"]


def test_atoms_headers_environ_times_and_the_user() -> None:
    environ = make_environ(
        "/p",
        HTTP_X_REQUEST_ID="abc",
        HTTP_AUTHORIZATION="Basic dXNlcjpwYXNz",  # user:pass
        CONTENT_TYPE="text/plain",
        REMOTE_ADDR="",
    )
    line = format_access_line(
        "%(h)s %(u)s %({x-request-id}i)s %({Content-Type}i)s %({x-missing}i)s %({x-out}o)s %({PATH_INFO}e)s "
        "%(U)s %(q)s %(H)s %(T)s %(M)s %(D)s %(L)s %(p)s %(zz)s",
        environ,
        request_line_of(environ),
        200,
        [("X-Out", "yes")],
        3,
        0.0,
        1.5,
    )
    assert line.startswith("- user abc text/plain - yes /p /p  HTTP/1.1 1 1500 1500000 1.500000 <")
    assert line.endswith("> -")


def test_the_request_line_is_taken_before_inner_middleware_changes_the_path(access: Any) -> None:
    logger, lines = access
    app = AccessLog(Mounts({"/a": named("a")}), "%(r)s", logger)
    _status, body = call(app, make_environ("/a/b"))
    assert body == b"a /a|/b"
    assert lines.lines == ["GET /a/b HTTP/1.1"]


def test_nothing_is_done_when_the_access_logger_is_off(access: Any) -> None:
    logger, lines = access
    logger.setLevel(logging.WARNING)
    body = [b"x"]
    assert AccessLog(lambda e, sr: body, "%(r)s", logger)(make_environ(), None) is body
    assert lines.lines == []


# -- proxy headers ---------------------------------------------------------------------


def fields(body: bytes) -> dict[str, str]:
    return dict(item.split("=", 1) for item in body.decode().split(" "))


def test_x_forwarded_headers_from_a_trusted_peer() -> None:
    app = ProxyHeaders(echo, ["127.0.0.1"])
    environ = make_environ(
        "/x",
        HTTP_X_FORWARDED_FOR="203.0.113.7",
        HTTP_X_FORWARDED_PROTO="https",
        HTTP_X_FORWARDED_HOST="example.com",
        HTTP_X_FORWARDED_PREFIX="/shop/",
    )
    seen = fields(call(app, environ)[1])
    assert seen == {
        "SCRIPT_NAME": "/shop",
        "PATH_INFO": "/x",
        "REMOTE_ADDR": "203.0.113.7",
        "wsgi.url_scheme": "https",
        "HTTP_HOST": "example.com",
        "SERVER_NAME": "example.com",
        "SERVER_PORT": "443",
    }
    assert environ["HTTPS"] == "on"


def test_an_untrusted_peer_changes_nothing() -> None:
    app = ProxyHeaders(echo, ["10.0.0.1"])
    seen = fields(call(app, make_environ(HTTP_X_FORWARDED_FOR="1.2.3.4", HTTP_X_FORWARDED_PROTO="https"))[1])
    assert seen["REMOTE_ADDR"] == "127.0.0.1"
    assert seen["wsgi.url_scheme"] == "http"


@pytest.mark.parametrize(
    ("allowed", "chain", "client"),
    [
        (["127.0.0.1"], "1.1.1.1, 2.2.2.2", "2.2.2.2"),  # the nearest untrusted hop: 1.1.1.1 may be forged
        (["127.0.0.1", "2.2.2.2"], "1.1.1.1, 2.2.2.2", "1.1.1.1"),
        (["127.0.0.0/8", "10.0.0.0/8"], "1.1.1.1, 10.1.2.3", "1.1.1.1"),
        (["*"], "1.1.1.1, 2.2.2.2", "1.1.1.1"),
        (["127.0.0.1", "2.2.2.2"], "2.2.2.2", "2.2.2.2"),
    ],
)
def test_the_client_in_a_chain_of_proxies(allowed: list[str], chain: str, client: str) -> None:
    assert fields(call(ProxyHeaders(echo, allowed), make_environ(HTTP_X_FORWARDED_FOR=chain))[1])["REMOTE_ADDR"] == (
        client
    )


def test_rfc7239_forwarded_wins_over_x_forwarded() -> None:
    environ = make_environ(
        HTTP_FORWARDED='for=192.0.2.60;proto=https;host="Example.com:8443", for="[2001:db8:cafe::17]:4711"',
        HTTP_X_FORWARDED_FOR="9.9.9.9",
    )
    seen = fields(call(ProxyHeaders(echo, ["127.0.0.1"]), environ)[1])
    assert seen["REMOTE_ADDR"] == "2001:db8:cafe::17"
    assert seen["wsgi.url_scheme"] == "https"
    assert (seen["HTTP_HOST"], seen["SERVER_NAME"], seen["SERVER_PORT"]) == ("Example.com:8443", "Example.com", "8443")


def test_parse_forwarded() -> None:
    assert parse_forwarded('For="[2001:db8::1]:80";proto=http, for=unknown;by=_x, garbage, for=1.2.3.4') == [
        {"for": "[2001:db8::1]:80", "proto": "http"},
        {"for": "unknown", "by": "_x"},
        {"for": "1.2.3.4"},
    ]
    assert parse_forwarded('for="a\\"b, c";host=h') == [{"for": 'a"b, c', "host": "h"}]


def test_x_forwarded_port_and_a_unix_socket_peer() -> None:
    environ = make_environ(REMOTE_ADDR="", HTTP_X_FORWARDED_HOST="example.com", HTTP_X_FORWARDED_PORT="8080")
    seen = fields(call(ProxyHeaders(echo, ["127.0.0.1"]), environ)[1])
    assert (seen["HTTP_HOST"], seen["SERVER_PORT"]) == ("example.com:8080", "8080")


def test_trusted_peers() -> None:
    peers = TrustedPeers(["127.0.0.1", "::1", "10.0.0.0/8"])
    assert "10.200.0.1" in peers and "::1" in peers and "::ffff:127.0.0.1" in peers
    assert "11.0.0.1" not in peers and "unknown" not in peers
    assert peers.trusts_peer("") and not peers.trusts_peer("192.168.0.1")


# -- mounts and virtual hosts ----------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "answer"),
    [
        ("/app0", b"app0 /app0|"),
        ("/app0/", b"app0 /app0|/"),
        ("/app0/x/y", b"app0 /app0|/x/y"),
        ("/app0x", b"default |/app0x"),  # segment boundaries: /app0 does not take /app0x
        ("/app0/deep", b"deep /app0/deep|"),  # the longest prefix first
        ("/app0/deep/er", b"deep /app0/deep|/er"),
        ("/", b"default |/"),
    ],
)
def test_mounts(path: str, answer: bytes) -> None:
    app = Mounts({"/app0": named("app0"), "/app0/deep": named("deep"), "": named("default")})
    assert call(app, make_environ(path)) == ("200 OK", answer)


def test_mounts_without_a_default_answer_404_and_keep_an_outer_script_name() -> None:
    app = Mounts({"/a": named("a")})
    assert call(app, make_environ("/b"))[0] == "404 Not Found"
    assert call(app, make_environ("/a/x", SCRIPT_NAME="/root"))[1] == b"a /root/a|/x"


@pytest.mark.parametrize(
    ("host", "answer"),
    [
        ("company.com", b"company"),
        ("COMPANY.com:8080", b"company"),
        ("company.com.", b"company"),
        ("a.home.net", b"home"),
        ("x.y.home.net", b"home"),
        ("home.net", b"default"),
        ("other.org", b"default"),
        ("[::1]:80", b"default"),
    ],
)
def test_virtual_hosts(host: str, answer: bytes) -> None:
    app = VirtualHosts({"company.com": named("company"), "*.home.net": named("home")}, named("default"))
    assert call(app, make_environ(HTTP_HOST=host))[1].split()[0] == answer


def test_virtual_hosts_without_a_default_answer_404() -> None:
    app = VirtualHosts({"company.com": named("company")}, None)
    assert call(app, make_environ(HTTP_HOST="else.com"))[0] == "404 Not Found"
    environ = make_environ(SERVER_NAME="company.com")
    del environ["HTTP_HOST"]  # HTTP/1.0 without Host: the server's name decides
    assert call(app, environ)[0] == "200 OK"


# -- profiler --------------------------------------------------------------------------


def test_one_profile_file_per_request(tmp_path: Path) -> None:
    def streaming(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
        start_response("200 OK", [])
        yield b"a"
        yield b"b"

    app = Profiler(streaming, str(tmp_path))
    assert call(app, make_environ("/hello/world"))[1] == b"ab"
    assert call(app, make_environ("/"))[1] == b"ab"
    files = sorted(tmp_path.iterdir())
    assert len(files) == 2
    names = sorted(file.name for file in files)
    assert re.fullmatch(r"\d{8}T\d{6}\.\d{6}-GET-hello\.world-\d+\.\dms\.prof", names[0]), names
    assert re.fullmatch(r"\d{8}T\d{6}\.\d{6}-GET-root-\d+\.\dms\.prof", names[1]), names
    stats = pstats.Stats(str(files[0]))
    assert any(func[2] == "streaming" for func in stats.stats)  # type: ignore[attr-defined]


def test_profile_file_names_are_safe() -> None:
    name = profile_file_name(make_environ("/../etc/pass wd", REQUEST_METHOD="GE/T"), 0.0, 0.0123)
    assert "/" not in name and " " not in name and name.endswith("-GET-...etc.pass_wd-12.3ms.prof")


# -- the request target and the body's length, the same on every server --------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("/a%20b", "/a b"), ("/page%2Fname", "/page%2Fname"), ("/x%2fy%C3%A9", "/x%2Fy\xc3\xa9"), (b"/%41", "/A")],
)
def test_path_info_keeps_encoded_slashes(raw: str | bytes, expected: str) -> None:
    assert path_info(raw) == expected


def test_header_environ_joins_repeated_fields() -> None:
    pairs = [("X-Dup", "a"), ("Content-Type", "text/plain"), ("x-dup", "b"), ("Content-Length", "3")]
    assert header_environ(pairs) == {"HTTP_X_DUP": "a, b", "CONTENT_TYPE": "text/plain", "CONTENT_LENGTH": "3"}


@pytest.mark.parametrize(
    ("environ", "problem", "path", "query"),
    [
        ({"REQUEST_METHOD": "GET", "PATH_INFO": "http://h/p", "QUERY_STRING": "q"}, None, "/p", "q"),
        ({"REQUEST_METHOD": "CONNECT", "PATH_INFO": "h:3128"}, None, "/h:3128", ""),
        ({"REQUEST_METHOD": "CONNECT", "PATH_INFO": "3128", "REQUEST_URI": "h:3128"}, None, "/h:3128", ""),
        ({"REQUEST_METHOD": "CONNECT", "PATH_INFO": "h"}, "must match authority-form", "h", None),
        ({"REQUEST_METHOD": "GET", "PATH_INFO": "p/q"}, "must contain origin-form", "p/q", None),
        ({"REQUEST_METHOD": "GET", "PATH_INFO": "/p", "REQUEST_URI": "/p#f"}, "Illegal #fragment", "/p", None),
        ({"REQUEST_METHOD": "OPTIONS", "PATH_INFO": "*"}, None, "/*", None),
        ({"REQUEST_METHOD": "GET", "PATH_INFO": "", "SCRIPT_NAME": "/app", "REQUEST_URI": "/app"}, None, "", None),
        ({"REQUEST_METHOD": "GET", "PATH_INFO": "/a/b", "REQUEST_URI": "/a%2Fb?x"}, None, "/a%2Fb", None),
        (
            {"REQUEST_METHOD": "GET", "PATH_INFO": "/a/b", "SCRIPT_NAME": "/m", "REQUEST_URI": "/m/a%2Fb"},
            None,
            "/a%2Fb",
            None,
        ),
    ],
)
def test_read_target(environ: dict[str, Any], problem: str | None, path: str, query: str | None) -> None:
    found = read_target(environ)
    assert (found is None) if problem is None else (problem in (found or ""))
    assert environ["PATH_INFO"] == path
    if query is not None:
        assert environ["QUERY_STRING"] == query


def guarded(body: Iterable[bytes], length: int) -> tuple[list[Any], bytes]:
    calls: list[Any] = []

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Length", str(length))])
        return body

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        calls.append((status, exc_info is not None))
        return lambda data: None

    result = ContentLengthGuard(app)({"REQUEST_METHOD": "GET", "PATH_INFO": "/"}, start_response)
    return calls, b"".join(result)


def test_content_length_guard_passes_a_body_within_its_length() -> None:
    assert guarded([b"abc", b"de"], 5) == ([("200 OK", False)], b"abcde")
    assert guarded(iter([b"", b"abc"]), 5) == ([("200 OK", False)], b"abc")


def test_content_length_guard_answers_500_when_the_first_chunk_is_over() -> None:
    calls, body = guarded([b"I have too many bytes"], 5)
    assert (calls, body) == ([("500 Internal Server Error", False)], OVERLONG)


def test_content_length_guard_cuts_a_body_that_goes_over_later() -> None:
    assert guarded(iter([b"abc", b"defg", b"hi"]), 5) == ([("200 OK", False)], b"abcde")
