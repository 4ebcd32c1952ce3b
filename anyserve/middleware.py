"""Small WSGI middleware the core applies itself, only when an option asks for it."""

from __future__ import annotations

import base64
import cProfile
import ipaddress
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import quote, unquote_to_bytes, urlsplit


class RootPath:
    """Serve an app under a URL prefix (--root-path): the prefix becomes SCRIPT_NAME
    and is taken off PATH_INFO when the request carries it, as a proxy that does
    not strip it would send."""

    def __init__(self, app: Callable[..., Iterable[bytes]], prefix: str) -> None:
        self.app = app
        self.prefix = prefix.rstrip("/")

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == self.prefix or path.startswith(self.prefix + "/"):
            path = path[len(self.prefix) :]
        environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + self.prefix
        environ["PATH_INFO"] = path
        return self.app(environ, start_response)


class EnvironFlags:
    """Set environ values on every request before the app sees it (the WSGI flags
    a server gets wrong under anyserve, see ``Adapter.environ_flags``)."""

    def __init__(self, app: Callable[..., Iterable[bytes]], values: dict[str, Any]) -> None:
        self.app = app
        self.values = values

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        environ.update(self.values)
        return self.app(environ, start_response)


class UnixPorts:
    """On a unix socket some servers put the socket's path, or part of it, in
    SERVER_PORT, or "None" in REMOTE_PORT, which are port numbers (CGI, PEP 3333)
    that CherryPy and others read as such: left empty there, as cheroot and
    gunicorn leave them."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        for key in ("SERVER_PORT", "REMOTE_PORT"):
            if not str(environ.get(key, "")).isdigit():
                environ[key] = ""
        return self.app(environ, start_response)


class RequestTarget:
    """The request target read the same on every server, as cheroot reads it for
    CherryPy (RFC 9112 section 3.2): an absolute-form target (``GET http://host/p?q``)
    gives PATH_INFO ``/p`` and QUERY_STRING ``q``; ``CONNECT host:port`` gives
    PATH_INFO ``/host:port`` and anything else after CONNECT a 400; a target that
    is neither a path nor absolute (``GET p``), or that carries a ``#fragment``,
    a 400; ``%2F`` stays as it came in PATH_INFO (:func:`path_info`). Servers
    leave these to the app, each its own way.

    The target as sent is REQUEST_URI (RAW_URI for gunicorn, RAW_PATH_INFO for
    eventlet) where the server gives it; else PATH_INFO, already decoded."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        problem = read_target(environ)
        if problem is None:
            return self.app(environ, start_response)
        body = problem.encode("latin-1")
        start_response("400 Bad Request", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]


#: cheroot's words for the targets it refuses, which CherryPy's users (and tests) read.
NOT_AUTHORITY = "Invalid path in Request-URI: request-target must match authority-form."
NOT_ORIGIN = (
    "Invalid path in Request-URI: request-target must contain origin-form which starts with absolute-path "
    '(URI starting with a slash "/").'
)
FRAGMENT = "Illegal #fragment in Request-URI."


def read_target(environ: dict[str, Any]) -> str | None:
    """Set PATH_INFO and QUERY_STRING of an absolute-form or CONNECT target as
    :class:`RequestTarget` says; the reason a target is refused, or None."""
    path = environ.get("PATH_INFO") or ""
    method = environ.get("REQUEST_METHOD", "")
    sent = environ.get("REQUEST_URI") or environ.get("RAW_URI") or environ.get("RAW_PATH_INFO")
    if method == "CONNECT":
        target = sent or path
        authority = urlsplit("//" + target)
        try:
            port = authority.port
        except ValueError:
            port = None
        if authority.netloc != target or not port or authority.path or authority.query or authority.fragment:
            return NOT_AUTHORITY
        environ["PATH_INFO"] = "/" + target
        environ["QUERY_STRING"] = ""
        return None
    if sent is not None and "#" in sent and method != "OPTIONS":
        return FRAGMENT
    if sent is not None and sent.startswith("/") and ("%2F" in sent or "%2f" in sent):
        # Most servers decode %2F into a slash; cheroot keeps it, so "/page%2Fname" stays one segment.
        kept = path_info(sent.partition("?")[0])
        script_name = environ.get("SCRIPT_NAME") or ""
        if kept.startswith(script_name):
            environ["PATH_INFO"] = path = kept[len(script_name) :]
    if not path or path.startswith("/"):  # empty: the root of the app's mount point
        return None
    parts = urlsplit(path)
    if parts.scheme or parts.netloc:
        environ["PATH_INFO"] = parts.path if parts.path.startswith("/") else "/" + parts.path
    elif method == "OPTIONS":  # OPTIONS * names no path
        environ["PATH_INFO"] = "/" + path
    else:
        return NOT_ORIGIN
    return None


def path_info(path: str | bytes) -> str:
    """PATH_INFO of the path part of a request target, decoded as cheroot decodes
    it for CherryPy: each ``%XX`` but ``%2F``, which stays as it came, so that a
    slash inside a segment does not split it (``/page%2Fname``)."""
    raw = path.encode("latin-1") if isinstance(path, str) else path
    parts = re.split(rb"%2[fF]", raw)
    return b"%2F".join(unquote_to_bytes(part) for part in parts).decode("latin-1")


def header_environ(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The CGI variables of the request's header fields: CONTENT_TYPE,
    CONTENT_LENGTH and HTTP_*; a repeated field's values joined with ", " in the
    order they came (RFC 9110 section 5.3, RFC 3875 section 4.1.18)."""
    environ: dict[str, str] = {}
    for name, value in headers:
        key = name.upper().replace("-", "_")
        if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            key = "HTTP_" + key
        environ[key] = f"{environ[key]}, {value}" if key in environ else value
    return environ


#: cheroot's words for a body longer than its Content-Length, answered when nothing was sent.
OVERLONG = b"The requested resource returned more bytes than the declared Content-Length."


class ContentLengthGuard:
    """Never send more of the app's body than the Content-Length it declared:
    some servers would send the rest, which a keep-alive client reads as the
    start of the next response. The app's headers reach the server with its
    first chunk (as the server would send them): when that chunk already goes
    over, a 500 says why instead, as cheroot answers it; past that, the body is
    cut at the declared length. Either way the error is logged."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        exchange = _Declared(environ, start_response)
        result = self.app(environ, exchange.start_response)
        if exchange.called and exchange.declared is None:
            return result  # no Content-Length: nothing to hold the body to
        file_wrapper = environ.get("wsgi.file_wrapper")
        if isinstance(file_wrapper, type) and isinstance(result, file_wrapper):
            exchange.commit()  # the server's own (sendfile, say): left to it
            return result
        if isinstance(result, (list, tuple)) and exchange.declared is not None:
            if exchange.sent + sum(len(chunk) for chunk in result) <= exchange.declared:
                exchange.commit()
                return result
        return exchange.guard(result)


class _Declared:
    """One response under :class:`ContentLengthGuard`: its headers, held until
    the first chunk, and the bytes sent of the Content-Length it declared."""

    def __init__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> None:
        self.environ = environ
        self.server_start_response = start_response
        self.called = False
        self.declared: int | None = None
        self.held: tuple[str, list[tuple[str, str]]] | None = None  # not given to the server yet
        self.server_write: Callable[[bytes], Any] | None = None
        self.sent = 0

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        self.called = True
        lengths = [value.strip() for name, value in headers if name.lower() == "content-length"]
        self.declared = int(lengths[0]) if len(lengths) == 1 and lengths[0].isdigit() else None
        if self.declared is not None and self.server_write is None:
            self.held = (status, headers)  # replaced by a later call with exc_info, as the server would
        else:
            self.held = None
            args = (status, headers, exc_info) if exc_info else (status, headers)
            self.server_write = self.server_start_response(*args)
        return self.write

    def commit(self, status: str | None = None, headers: list[tuple[str, str]] | None = None) -> None:
        if self.held is not None:
            held, self.held = self.held, None
            self.server_write = self.server_start_response(status or held[0], headers or held[1])

    def write(self, data: bytes) -> Any:
        """The app's legacy write() callable."""
        self.commit()
        assert self.server_write is not None
        return self.server_write(self.within(data))

    def within(self, chunk: bytes) -> bytes:
        if self.declared is None:
            return chunk
        part = chunk[: max(self.declared - self.sent, 0)]
        self.sent += len(part)
        if len(part) < len(chunk):
            logging.getLogger("anyserve").error(
                "%s %s: the app's body is longer than its Content-Length (%d bytes); cut there",
                self.environ.get("REQUEST_METHOD"),
                self.environ.get("PATH_INFO"),
                self.declared,
            )
        return part

    def guard(self, result: Iterable[bytes]) -> Iterator[bytes]:
        try:
            for chunk in result:
                if not chunk:
                    if self.held is None:
                        yield chunk
                    continue
                if self.held is not None and self.declared is not None and len(chunk) > self.declared:
                    self.within(chunk)  # logs it
                    headers = [("Content-Type", "text/plain"), ("Content-Length", str(len(OVERLONG)))]
                    self.commit("500 Internal Server Error", headers)
                    yield OVERLONG
                    return
                self.commit()
                part = self.within(chunk)
                if part:
                    yield part
                if len(part) < len(chunk):
                    return
            self.commit()
        finally:
            if hasattr(result, "close"):
                result.close()


class HeadWithoutBody:
    """For servers that would send the app's body after a HEAD response (RFC 9112
    section 6.3 forbids it; a keep-alive client then misreads the next response):
    the app runs as for GET, up to its first chunk so a deferred start_response
    happens, and nothing of the body is returned."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        result = self.app(environ, start_response)
        if environ.get("REQUEST_METHOD") != "HEAD":
            return result
        try:
            for chunk in result:
                if chunk:
                    break
        finally:
            if hasattr(result, "close"):
                result.close()
        return []


# -- the access log ------------------------------------------------------------------

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
#: Characters left as they are when a decoded path is written back into the request line.
_PATH_SAFE = "/:@!$&'()*+,;=~"


class _Atoms(dict):  # type: ignore[type-arg]
    """gunicorn's atoms: a missing one, or a header absent from the request, is '-'."""

    def __missing__(self, key: str) -> str:
        if key.startswith("{") and "}" in key:
            name, kind = key[1:].split("}", 1)
            lookup = {"i": self.get("_request_headers"), "o": self.get("_response_headers"), "e": self.get("_environ")}
            source = lookup.get(kind)
            if source is not None:
                value = source.get(name.lower() if kind != "e" else name)
                if value is not None:
                    return str(value)
        return "-"


def format_access_line(
    fmt: str,
    environ: dict[str, Any],
    request_line: str,
    status: int | None,
    headers: list[tuple[str, str]],
    sent: int | None,
    started: float,
    duration: float,
) -> str:
    """One access log line: *fmt* with gunicorn's atoms filled in.

    h remote address, l '-', u user, t time of the request, r request line,
    m method, U path, q query string, H protocol, s status, B body bytes,
    b body bytes or '-', f referer, a user agent, T seconds, M milliseconds,
    D microseconds, L seconds as a decimal, p process id, {name}i a request
    header, {name}o a response header, {name}e an environ key."""
    local = time.localtime(started)
    offset = local.tm_gmtoff or 0
    sign = "-" if offset < 0 else "+"
    zone = f"{sign}{abs(offset) // 3600:02d}{abs(offset) % 3600 // 60:02d}"
    stamp = (
        f"[{local.tm_mday:02d}/{_MONTHS[local.tm_mon - 1]}/{local.tm_year}:"
        f"{local.tm_hour:02d}:{local.tm_min:02d}:{local.tm_sec:02d} {zone}]"
    )
    atoms = _Atoms(
        h=environ.get("REMOTE_ADDR") or "-",
        l="-",
        u=_remote_user(environ),
        t=stamp,
        r=request_line,
        m=environ.get("REQUEST_METHOD", "-"),
        U=request_line.split(" ")[1].split("?", 1)[0] if request_line.count(" ") >= 2 else "-",
        q=environ.get("QUERY_STRING", ""),
        H=environ.get("SERVER_PROTOCOL", "-"),
        s=str(status) if status is not None else "-",
        B=str(sent or 0),
        b=str(sent) if sent else "-",
        f=environ.get("HTTP_REFERER", "-"),
        a=environ.get("HTTP_USER_AGENT", "-"),
        T=str(int(duration)),
        M=str(int(duration * 1000)),
        D=str(int(duration * 1_000_000)),
        L=f"{duration:.6f}",
        p=f"<{os.getpid()}>",
        _environ=environ,
        _request_headers={
            key[5:].replace("_", "-").lower(): value for key, value in environ.items() if key.startswith("HTTP_")
        }
        | {"content-type": environ.get("CONTENT_TYPE"), "content-length": environ.get("CONTENT_LENGTH")},
        _response_headers={key.lower(): value for key, value in headers},
    )
    return fmt % atoms


def _remote_user(environ: dict[str, Any]) -> str:
    user = environ.get("REMOTE_USER")
    if user:
        return str(user)
    auth = environ.get("HTTP_AUTHORIZATION", "")
    scheme, _, credentials = auth.partition(" ")
    if scheme.lower() == "basic" and credentials:
        try:
            return base64.b64decode(credentials.strip()).decode("utf-8").split(":", 1)[0] or "-"
        except (ValueError, UnicodeDecodeError):
            return "-"
    return "-"


def request_line_of(environ: dict[str, Any]) -> str:
    """The request line, rebuilt from the environ the same way whatever the server."""
    path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    try:
        uri = quote(path.encode("latin-1"), safe=_PATH_SAFE) or "/"
    except UnicodeEncodeError:  # not a PEP 3333 string; show it as it is
        uri = path or "/"
    query = environ.get("QUERY_STRING")
    if query:
        uri = f"{uri}?{query}"
    return f"{environ.get('REQUEST_METHOD', '-')} {uri} {environ.get('SERVER_PROTOCOL', '-')}"


class AccessLog:
    """One line per request in --access-log-format (Apache combined by default),
    written when the response is done, with the body bytes the app gave: the same
    line whatever the server. The request line is taken as the request came in;
    the client's address after --proxy-headers (inside this) applied."""

    def __init__(self, app: Callable[..., Iterable[bytes]], fmt: str, logger: logging.Logger) -> None:
        self.app = app
        self.format = fmt
        self.logger = logger

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not self.logger.isEnabledFor(logging.INFO):
            return self.app(environ, start_response)
        record = _Exchange(self, environ)

        def logging_start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            record.status = int(status[:3]) if status[:3].isdigit() else None
            record.headers = headers
            write = start_response(status, headers, exc_info) if exc_info else start_response(status, headers)

            def counting_write(data: bytes) -> Any:
                record.sent += len(data)
                return write(data)

            return counting_write

        try:
            result = self.app(environ, logging_start_response)
        except BaseException:
            record.status = 500
            record.done()
            raise
        if isinstance(result, (list, tuple)):  # the whole body is known; servers rely on its type
            record.sent += sum(len(chunk) for chunk in result)
            record.done()
            return result
        return _CountedBody(result, record)

    def log(self, record: _Exchange) -> None:
        head = record.environ.get("REQUEST_METHOD") == "HEAD"
        try:
            line = format_access_line(
                self.format,
                record.environ,
                record.request_line,
                record.status,
                record.headers,
                0 if head else record.sent,
                record.wall_start,
                time.monotonic() - record.start,
            )
        except Exception:  # a bad atom must not fail the request
            self.logger.exception("cannot format the access log line")
            return
        self.logger.info(line)


class _Exchange:
    """What the access log learns about one request while it is answered."""

    def __init__(self, owner: AccessLog, environ: dict[str, Any]) -> None:
        self.owner = owner
        self.environ = environ
        self.request_line = request_line_of(environ)
        self.wall_start = time.time()
        self.start = time.monotonic()
        self.status: int | None = None
        self.headers: list[tuple[str, str]] = []
        self.sent = 0
        self.logged = False

    def done(self) -> None:
        if not self.logged:
            self.logged = True
            self.owner.log(self)


class _CountedBody:
    """The app's response body, counted as the server takes it; logged on close()."""

    def __init__(self, body: Iterable[bytes], record: _Exchange) -> None:
        self.body = body
        self.record = record

    def __iter__(self) -> Iterator[bytes]:
        try:
            for chunk in self.body:
                self.record.sent += len(chunk)
                yield chunk
        except GeneratorExit:  # the server stopped reading (the client left)
            raise
        except BaseException:
            if not self.record.sent:
                self.record.status = 500  # nothing sent yet: the server answers 500
            raise

    def close(self) -> None:
        try:
            if hasattr(self.body, "close"):
                self.body.close()
        finally:
            self.record.done()


# -- behind a proxy ------------------------------------------------------------------

_FORWARDED_PAIR = re.compile(r'\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;,\s]*)\s*([;,]?)')


def parse_forwarded(value: str) -> list[dict[str, str]]:
    """The elements of an RFC 7239 ``Forwarded`` header, nearest proxy last, keys in lower case."""
    elements: list[dict[str, str]] = [{}]
    pos = 0
    while pos < len(value):
        match = _FORWARDED_PAIR.match(value, pos)
        if match is None or match.end() == pos:  # malformed: skip to the next element
            comma = value.find(",", pos)
            if comma < 0:
                break
            elements.append({})
            pos = comma + 1
            continue
        key, raw, separator = match.groups()
        if raw.startswith('"') and raw.endswith('"') and len(raw) >= 2:
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        elements[-1].setdefault(key.lower(), raw)
        pos = match.end()
        if separator == ",":
            elements.append({})
    return [element for element in elements if element]


def _node_host(node: str) -> str:
    """The address of a Forwarded node: ``[v6]:port``, ``v4:port``, a bare address or an identifier."""
    node = node.strip()
    if node.startswith("["):
        return node[1:].split("]", 1)[0]
    if node.count(":") == 1:
        return node.split(":", 1)[0]
    return node


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # a dual-stack listener's view of an IPv4 peer
    return address


class TrustedPeers:
    """The --forwarded-allow-ips list: addresses, networks (CIDR), or ``*`` for any."""

    def __init__(self, allowed: Iterable[str]) -> None:
        items = [item.strip() for item in allowed if item.strip()]
        self.everyone = "*" in items
        self.networks = [ipaddress.ip_network(item, strict=False) for item in items if item != "*"]

    def __contains__(self, host: str) -> bool:
        if self.everyone:
            return True
        address = _ip(host)
        return address is not None and any(address in network for network in self.networks)

    def trusts_peer(self, remote_addr: str) -> bool:
        """The connected peer: a unix socket peer (no IP address) is trusted, as gunicorn does."""
        return self.everyone or _ip(remote_addr) is None or remote_addr in self

    def client_of(self, chain: list[str]) -> str:
        """The client in a chain of forwarded addresses: the nearest one not trusted."""
        if self.everyone:
            return chain[0]
        for host in reversed(chain):
            if host not in self:
                return host
        return chain[0]


class ProxyHeaders:
    """--proxy-headers: from a trusted peer, ``Forwarded`` (RFC 7239) or else
    X-Forwarded-For/-Proto/-Host/-Port, and X-Forwarded-Prefix, set REMOTE_ADDR,
    wsgi.url_scheme, HTTP_HOST/SERVER_NAME/SERVER_PORT and SCRIPT_NAME. From any
    other peer the headers are left for the app to see and nothing changes."""

    def __init__(self, app: Callable[..., Iterable[bytes]], allowed: Iterable[str]) -> None:
        self.app = app
        self.trusted = TrustedPeers(allowed)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if self.trusted.trusts_peer(environ.get("REMOTE_ADDR") or ""):
            self.apply(environ)
        return self.app(environ, start_response)

    def apply(self, environ: dict[str, Any]) -> None:
        forwarded = environ.get("HTTP_FORWARDED")
        port: str | None = None
        if forwarded:
            elements = parse_forwarded(forwarded)
            chain = [_node_host(element["for"]) for element in elements if "for" in element]
            proto = next((e["proto"] for e in reversed(elements) if "proto" in e), None)
            host = next((e["host"] for e in reversed(elements) if "host" in e), None)
        else:
            chain = _values(environ.get("HTTP_X_FORWARDED_FOR"))
            proto = _last(environ.get("HTTP_X_FORWARDED_PROTO"))
            host = _last(environ.get("HTTP_X_FORWARDED_HOST"))
            port = _last(environ.get("HTTP_X_FORWARDED_PORT"))
        if chain:
            client = self.trusted.client_of(chain)
            if _ip(client) is not None:
                environ["REMOTE_ADDR"] = client.strip("[]")
        if proto and proto.lower() in ("http", "https"):
            environ["wsgi.url_scheme"] = proto.lower()
            if proto.lower() == "https":
                environ["HTTPS"] = "on"
            else:
                environ.pop("HTTPS", None)
        scheme = environ.get("wsgi.url_scheme", "http")
        if host:
            name, _, host_port = _split_host(host)
            environ["HTTP_HOST"] = host
            environ["SERVER_NAME"] = name
            environ["SERVER_PORT"] = host_port or ("443" if scheme == "https" else "80")
        if port and port.isdigit():
            name = environ.get("SERVER_NAME", "")
            hostname = _split_host(environ.get("HTTP_HOST", name))[0] or name
            shown = f"[{hostname}]" if ":" in hostname else hostname
            default = port == ("443" if scheme == "https" else "80")
            environ["HTTP_HOST"] = shown if default else f"{shown}:{port}"
            environ["SERVER_PORT"] = port
        prefix = _last(environ.get("HTTP_X_FORWARDED_PREFIX"))
        if prefix and prefix.startswith("/"):
            environ["SCRIPT_NAME"] = prefix.rstrip("/") + environ.get("SCRIPT_NAME", "")


def _values(header: str | None) -> list[str]:
    return [part.strip() for part in (header or "").split(",") if part.strip()]


def _last(header: str | None) -> str | None:
    values = _values(header)
    return values[-1] if values else None


def _split_host(host: str) -> tuple[str, str, str]:
    """``name:port`` or ``[v6]:port`` -> (name, ':', port); the port may be empty."""
    host = host.strip()
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        return name, ":" if rest.startswith(":") else "", rest[1:] if rest.startswith(":") else ""
    if host.count(":") == 1:
        return host.partition(":")
    return host, "", ""


# -- several apps: mounts and virtual hosts ------------------------------------------


def not_found(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    body = b"Not Found"
    start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


class Mounts:
    """--mount: each app under its path prefix, the longest matching prefix first,
    split on path-segment boundaries (/app does not take /application): the
    prefix is added to SCRIPT_NAME and taken off PATH_INFO. A path under no
    prefix goes to the app at ``/`` (the default), or gets a 404."""

    def __init__(self, apps: dict[str, Callable[..., Iterable[bytes]]]) -> None:
        self.default = apps.get("")
        self.mounts = sorted(((prefix, app) for prefix, app in apps.items() if prefix), key=lambda m: -len(m[0]))

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        for prefix, app in self.mounts:
            if path == prefix or path.startswith(prefix + "/"):
                environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + prefix
                environ["PATH_INFO"] = path[len(prefix) :]
                return app(environ, start_response)
        return (self.default or not_found)(environ, start_response)


class VirtualHosts:
    """--vhost: the app for the request's host (the Host header without its port,
    case-insensitive; ``*.example.com`` matches any name under example.com), or
    the default app, or a 404."""

    def __init__(
        self, hosts: dict[str, Callable[..., Iterable[bytes]]], default: Callable[..., Iterable[bytes]] | None
    ) -> None:
        self.exact = {name.lower().rstrip("."): app for name, app in hosts.items() if not name.startswith("*.")}
        wildcards = [(name[1:].lower().rstrip("."), app) for name, app in hosts.items() if name.startswith("*.")]
        self.wildcards = sorted(wildcards, key=lambda w: -len(w[0]))
        self.default = default

    def app_for(self, host: str) -> Callable[..., Iterable[bytes]] | None:
        name = _split_host(host)[0].lower().rstrip(".")
        app = self.exact.get(name)
        if app is None:
            app = next((app for suffix, app in self.wildcards if name.endswith(suffix)), None)
        return app if app is not None else self.default

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        app = self.app_for(environ.get("HTTP_HOST") or environ.get("SERVER_NAME", ""))
        return (app or not_found)(environ, start_response)


# -- the profiler --------------------------------------------------------------------


class Profiler:
    """-P/--profile DIR: each request runs under cProfile and leaves one file in
    DIR, named after its time, method, path and duration (read it with pstats or
    snakeviz). Profiled requests run one at a time (a profiler is per process
    from Python 3.12) and their body is gathered before it is sent."""

    def __init__(self, app: Callable[..., Iterable[bytes]], directory: str) -> None:
        self.app = app
        self.directory = directory
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        with self._lock:
            profile = cProfile.Profile()
            started = time.time()
            clock = time.perf_counter()
            profile.enable()
            try:
                result = self.app(environ, start_response)
                try:
                    body = list(result)
                finally:
                    if hasattr(result, "close"):
                        result.close()
            finally:
                profile.disable()
                elapsed = time.perf_counter() - clock
                profile.dump_stats(os.path.join(self.directory, profile_file_name(environ, started, elapsed)))
        return body


def profile_file_name(environ: dict[str, Any], started: float, elapsed: float) -> str:
    """``20261123T091500.123456-GET-hello.world-3.2ms.prof`` for GET /hello/world."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.localtime(started)) + f".{int(started % 1 * 1_000_000):06d}"
    path = (environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")).strip("/")
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", path.replace("/", "."))[:80] or "root"
    method = re.sub(r"[^A-Z]", "", environ.get("REQUEST_METHOD", "").upper()) or "UNKNOWN"
    return f"{stamp}-{method}-{slug}-{elapsed * 1000:.1f}ms.prof"


# -- request size limits ------------------------------------------------------------------


class MaxSizeExceeded(Exception):
    """Raised by ``wsgi.input`` when a body goes over --max-body-size.

    The name and arguments are those of cheroot's own exception: CherryPy's request
    body recognises it by name and answers 413, as it does under cheroot."""


#: What a request over a limit gets, whatever the server: cheroot's own answer.
TOO_LARGE_STATUS = "413 Request Entity Too Large"
HEAD_TOO_LARGE = "The headers sent with the request exceed the maximum allowed bytes."
BODY_TOO_LARGE = "The entity sent with the request exceeds the maximum allowed bytes."


def body_over_limit(content_length: str | None, limit: int) -> bool:
    """Whether a request's Content-Length is over *limit* (0: no limit)."""
    try:
        return bool(limit) and int(content_length or 0) > limit
    except ValueError:
        return False  # the server refuses a malformed Content-Length itself


def too_large_response() -> bytes:
    """The 413 a server that reads whole bodies before the app runs sends itself
    for a Content-Length over --max-body-size, as :class:`RequestLimits` would."""
    body = BODY_TOO_LARGE.encode()
    head = f"HTTP/1.1 {TOO_LARGE_STATUS}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"Connection: close\r\n\r\n" + body


def head_size(environ: dict[str, Any]) -> int:
    """The size of the request's head as the client sent it, rebuilt from the
    environ the same way whatever the server: the request line and each header
    field with its CRLF, and the blank line that ends them."""
    size = len(request_line_of(environ)) + 2 + 2
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            name = key[5:]
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            if not value:
                continue
            name = key
        else:
            continue
        size += len(name) + 2 + len(str(value)) + 2
    return size


class _LimitedInput:
    """``wsgi.input`` that raises :class:`MaxSizeExceeded` once more than *limit*
    bytes were read (a chunked body, whose size is known only as it comes)."""

    def __init__(self, stream: Any, limit: int) -> None:
        self.stream = stream
        self.limit = limit
        self.count = 0

    def _counted(self, data: bytes) -> bytes:
        self.count += len(data)
        if self.count > self.limit:
            raise MaxSizeExceeded("Request body too large", self.limit)
        return data

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            # To the end, but no further than one byte past the limit: enough to know it is over.
            parts = []
            while chunk := self._counted(self.stream.read(self.limit - self.count + 1)):
                parts.append(chunk)
            return b"".join(parts)
        return self._counted(self.stream.read(min(size, self.limit - self.count + 1)))

    def readline(self, size: int | None = -1) -> bytes:
        allowed = self.limit - self.count + 1
        if size is not None and size >= 0:
            allowed = min(size, allowed)
        return self._counted(self.stream.readline(allowed))

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        return list(self)

    def __iter__(self) -> Iterator[bytes]:
        while True:
            line = self.readline()
            if not line:
                return
            yield line

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


class RequestLimits:
    """--max-header-size and --max-body-size, the same on every server: a head
    over the limit, or a Content-Length over it, gets 413 before the app runs
    (and the connection closed, as the body is left unread); a body without a
    Content-Length (chunked) makes ``wsgi.input`` raise :class:`MaxSizeExceeded`
    once over the limit, and the app that lets it through answers 413."""

    def __init__(
        self, app: Callable[..., Iterable[bytes]], max_header_size: int, max_body_size: int, *, may_close: bool = True
    ) -> None:
        self.app = app
        self.max_header_size = max_header_size
        self.max_body_size = max_body_size
        #: Whether the app may send ``Connection: close`` (a server for which the
        #: app may not closes every connection after its response itself).
        self.may_close = may_close

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if self.max_header_size and head_size(environ) > self.max_header_size:
            return self.too_large(start_response, HEAD_TOO_LARGE)
        limit = self.max_body_size
        if limit:
            if body_over_limit(environ.get("CONTENT_LENGTH"), limit):
                return self.too_large(start_response, BODY_TOO_LARGE)
            if not environ.get("CONTENT_LENGTH"):
                environ["wsgi.input"] = _LimitedInput(environ["wsgi.input"], limit)
        try:
            return self.app(environ, start_response)
        except MaxSizeExceeded:
            return self.too_large(start_response, BODY_TOO_LARGE, sys.exc_info())

    def too_large(self, start_response: Callable[..., Any], text: str, exc_info: Any = None) -> list[bytes]:
        body = text.encode()
        headers = [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
        if self.may_close:
            headers.append(("Connection", "close"))
        if exc_info is None:
            start_response(TOO_LARGE_STATUS, headers)
        else:  # the app may have started a response already
            start_response(TOO_LARGE_STATUS, headers, exc_info)
        return [body]
