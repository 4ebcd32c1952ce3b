"""tornado: Tornado's HTTPServer with the WSGI app on a thread pool.

Tornado's own ``WSGIContainer(app)`` runs the app on the IOLoop thread, one
request at a time, buffers each response whole and leaves the client waiting
when the app raises. anyserve runs the app on a thread pool of --threads,
streams the response as the app yields it (with flow control), answers 500 when
the app fails, and counts requests in flight so shutdown can wait for them. The
IOLoop drives the Lifecycle (a PeriodicCallback for ``tick``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import Any

from anyserve.config import to_bool, to_int, to_seconds
from anyserve.lifecycle import Lifecycle
from anyserve.middleware import body_over_limit, header_environ, path_info, too_large_response
from anyserve.sockets import Listener

from .base import Capabilities, Deviations, Option, WSGIApp
from .draining import REQUEST_TIMEOUT, Drain
from .eventloop import AsyncioLoop, EventLoopAdapter, LoopServing

DEFAULT_THREADS = 10
log = logging.getLogger("anyserve.tornado")


class TornadoAdapter(AsyncioLoop, EventLoopAdapter):
    name = "tornado"
    requires = ("tornado",)
    module = "tornado"
    capabilities = Capabilities(
        default_threads=DEFAULT_THREADS,
        head_without_body=True,
        concurrency=f"IOLoop for I/O + thread pool of N running the app (--threads, default {DEFAULT_THREADS})",
        threads=True,
        unix=True,
        tls=True,
        tls_mixed=True,
        embed=True,
    )
    # Tornado parses the request itself: a chunk extension or a trailer field is a 400, and so is
    # a request it cannot parse, with no body saying why.
    deviations = Deviations(no_chunk_extensions_or_trailers=True, bare_bad_request=True)
    keep_alive_timeout_by = "anyserve, a timer on the IOLoop (idle, and the whole request head)"
    loggers = ("tornado",)
    options = {
        "xheaders": Option(to_bool, "trust X-Real-Ip/X-Forwarded-For and X-Scheme/X-Forwarded-Proto"),
        "max_body_size": Option(to_int, "largest request body in bytes (default 100 MB)"),
        "max_buffer_size": Option(to_int, "largest request held in memory in bytes (default 100 MB)"),
        "idle_connection_timeout": Option(
            to_seconds, "seconds an idle keep-alive connection stays open (default: --timeout-keep-alive)"
        ),
        "body_timeout": Option(to_seconds, "seconds to wait for a request body"),
        "decompress_request": Option(to_bool, "decode gzip request bodies"),
        "no_keep_alive": Option(to_bool, "close the connection after each response"),
    }

    def make_serving(self, app: WSGIApp, listeners: list[Listener], lifecycle: Lifecycle) -> LoopServing:
        return TornadoServing(self, app, listeners, lifecycle)


class TornadoServing(LoopServing):
    """The app served on Tornado in the running IOLoop, which someone else may own.

    Each connection is fresh until its first request begins, busy while a
    request is under way, idle between requests."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        from concurrent.futures import ThreadPoolExecutor

        self.executor = ThreadPoolExecutor(
            self.config.threads or DEFAULT_THREADS, thread_name_prefix="anyserve-tornado"
        )
        self.in_flight = 0
        self.streams: dict[Any, str] = {}  # IOStream -> fresh, busy or idle
        self._servers = self._make_servers()

    def _make_servers(self) -> list[tuple[Any, list[Any]]]:
        from tornado.httpserver import HTTPServer
        from tornado.httputil import HTTPServerConnectionDelegate
        from tornado.ioloop import IOLoop

        streams = self.streams
        serving = self
        timeout = self.adapter.settings.get("idle_connection_timeout", self.config.timeout_keep_alive)

        class Server(HTTPServer):  # type: ignore[misc]
            def handle_stream(self, stream: Any, address: Any) -> None:
                streams[stream] = "fresh"
                super().handle_stream(stream, address)

        class Gateway(HTTPServerConnectionDelegate):  # type: ignore[misc]
            def start_request(self, server_conn: Any, request_conn: Any) -> Any:
                # Called as soon as the previous response is sent, before the next
                # request comes: the connection is busy once that one's head has.
                stream = request_conn.stream
                waiting = IOLoop.current().call_later(timeout, serving._waited_too_long, stream)

                def arrived() -> None:
                    IOLoop.current().remove_timeout(waiting)
                    streams[stream] = "busy"

                return _Request(serving, request_conn, arrived)

        # One HTTPServer for the plain listeners, one per TLS context.
        servers = []
        for tls in dict.fromkeys(listener.tls for listener in self.listeners):
            server = Server(
                Gateway(),
                ssl_options=tls.context() if tls else None,
                # Tornado's own deadline for a request head closes the connection
                # silently: anyserve's (_waited_too_long) comes first; this one backs it.
                **{**self.adapter.settings, "idle_connection_timeout": timeout + 1.0},
            )
            servers.append((server, [listener.socket for listener in self.listeners if listener.tls == tls]))
        return servers

    def _waited_too_long(self, stream: Any) -> None:
        """--timeout-keep-alive passed with no request head come whole: close the
        connection, with a 408 if it never had a request (as cheroot does)."""
        if stream.closed() or self.streams.get(stream) == "busy":
            return
        if self.streams.get(stream) != "fresh":
            stream.close()
            return

        def written(future: Any) -> None:
            if not future.cancelled():
                future.exception()  # a client gone already: nothing to report
            stream.close()

        stream.write(REQUEST_TIMEOUT).add_done_callback(written)

    def listen(self) -> None:
        for server, sockets in self._servers:
            for sock in sockets:
                sock.setblocking(False)  # Tornado accepts until EAGAIN
            server.add_sockets(sockets)

    def stop_accepting(self, drain: Drain) -> None:
        for server, _ in self._servers:
            server.stop()

    def pending(self, drain: Drain) -> int:
        waited = 0
        for stream, state in list(self.streams.items()):
            if stream.closed():
                del self.streams[stream]
            elif state == "busy" or stream.writing() or (state == "fresh" and drain.awaits_fresh()):
                waited += 1
            else:
                stream.close()
                del self.streams[stream]
        # And the requests still in the gateway, whose client may have gone already.
        return waited + self.in_flight

    def running(self) -> int:
        return self.in_flight

    def abort(self) -> None:
        for stream in list(self.streams):
            stream.close()
        self.streams.clear()
        self.executor.shutdown(wait=False)

    # -- the WSGI gateway --------------------------------------------------------

    def handle(self, request: _Request) -> None:
        """A request has come whole: respond from a task on the IOLoop."""
        from tornado.ioloop import IOLoop

        self.in_flight += 1
        IOLoop.current().spawn_callback(self._respond, request)

    async def _respond(self, request: _Request) -> None:
        loop = asyncio.get_running_loop()
        response = _Response(request)
        try:
            await loop.run_in_executor(self.executor, _run_app, self.app, request.environ, response, loop)
        except Exception:
            log.exception("error in the WSGI app for %s %s", request.method, request.uri)
            response.fail()
        finally:
            self.in_flight -= 1
            stream = getattr(request.connection, "stream", None)
            if self.streams.get(stream) == "busy":
                self.streams[stream] = "idle"


class _Request:
    """Tornado's delegate for one request: it gathers the body, then hands the
    request to the gateway with its WSGI environ.

    Not Tornado's own adapter for a callable: that one makes an HTTPServerRequest,
    which answers 400 to a Host header that is no host name (it is the app's to
    judge) and parses a form or multipart body itself, answering 400 to one it
    cannot parse, before the app sees it. Nor Tornado's WSGIContainer.environ,
    which decodes %2F into a slash, joins a repeated header's values with "," and
    gives no REQUEST_URI."""

    def __init__(self, serving: TornadoServing, connection: Any, arrived: Callable[[], object]) -> None:
        self.serving = serving
        self.connection = connection
        self.arrived = arrived
        self.method = ""
        self.uri = ""
        self.environ: dict[str, Any] = {}
        self._head: tuple[Any, Any] | None = None
        self._chunks: list[bytes] = []

    def headers_received(self, start_line: Any, headers: Any) -> None:
        self.arrived()
        self.method, self.uri = start_line.method, start_line.path
        if body_over_limit(headers.get("Content-Length"), self.serving.config.max_body_size):
            # Tornado reads a whole body before the app runs: a Content-Length over
            # --max-body-size is answered 413 here, at once, and the connection closed.
            stream = self.connection.stream
            stream.write(too_large_response()).add_done_callback(lambda _: stream.close())
            return
        self._head = (start_line, headers)

    def data_received(self, chunk: bytes) -> None:
        self._chunks.append(chunk)

    def finish(self) -> None:
        if self._head is None:  # refused at its head
            return
        self.environ = self._make_environ(*self._head)
        self.serving.handle(self)

    def on_connection_close(self) -> None:
        self._chunks.clear()

    def _make_environ(self, start_line: Any, headers: Any) -> dict[str, Any]:
        import sys
        from io import BytesIO

        context = self.connection.context  # its remote_ip and protocol are X-Real-Ip's with -o xheaders
        protocol = getattr(context, "protocol", "http")
        path, _, query = start_line.path.partition("?")
        host = headers.get("Host", "")
        name, _, port = host.rpartition(":") if host.count(":") == 1 else (host, "", "")
        environ = {
            "REQUEST_METHOD": start_line.method,
            "SCRIPT_NAME": "",
            "PATH_INFO": path_info(path),
            "QUERY_STRING": query,
            "REQUEST_URI": start_line.path,
            "REMOTE_ADDR": getattr(context, "remote_ip", None) or "",
            "SERVER_NAME": name or "127.0.0.1",
            "SERVER_PORT": port or ("443" if protocol == "https" else "80"),
            "SERVER_PROTOCOL": start_line.version,
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": protocol,
            "wsgi.input": BytesIO(b"".join(self._chunks)),
            "wsgi.input_terminated": True,  # Tornado has read the whole body
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,  # anyserve's EnvironFlags says so when several processes serve
            "wsgi.run_once": False,
        }
        self._chunks.clear()
        environ.update(header_environ(headers.get_all()))
        return environ


def _run_app(app: WSGIApp, environ: dict[str, Any], response: _Response, loop: asyncio.AbstractEventLoop) -> None:
    """In a pool thread: the app's whole part of a request, its call, each chunk
    of its body and its close(), on this one thread, as a threaded server runs
    it: an app may keep the request in thread-locals from its call to its close()
    (CherryPy's cherrypy.serving, whose on_end_request hooks run in close()).
    The loop writes each chunk before the app is asked for the next one."""

    def on_loop(write: Any) -> None:
        asyncio.run_coroutine_threadsafe(write, loop).result()

    result = app(environ, response.start_response)
    try:
        if isinstance(result, (list, tuple)):
            response.pending.extend(result)  # the whole body is known: sent with a Content-Length
        else:
            for chunk in result:
                on_loop(response.write(chunk))
        on_loop(response.finish())
    finally:
        if hasattr(result, "close"):
            try:
                result.close()
            except Exception:
                log.exception("error closing the WSGI app's response")


class _Response:
    """start_response for the app, and writing to Tornado's connection."""

    def __init__(self, request: _Request) -> None:
        self.request = request
        self.status = 0
        self.headers: list[tuple[str, str]] | None = None
        self.headers_sent = False
        self.pending: list[bytes] = []  # from the app's legacy write() callable

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], None]:
        if exc_info is not None and self.headers_sent:
            raise exc_info[1].with_traceback(exc_info[2])
        self.status = int(status.split(" ", 1)[0])
        self.reason = status.split(" ", 1)[1] if " " in status else ""
        self.headers = headers
        return self.pending.append

    async def write(self, chunk: bytes) -> None:
        data = b"".join([*self.pending, chunk]) if self.pending else chunk
        self.pending.clear()
        if not self.headers_sent:
            if data:  # a non-empty chunk commits the headers
                await self._send_headers(data)
            return
        if data and self.request.method != "HEAD":
            await self.request.connection.write(data)

    async def finish(self) -> None:
        if self.headers_sent:
            await self.write(b"")
        else:
            await self._send_headers(b"".join(self.pending), final=True)
        self.request.connection.finish()

    async def _send_headers(self, first: bytes, final: bool = False) -> None:
        """The status line and headers, with the body's *first* bytes (all of it when *final*)."""
        from tornado import httputil, version

        if self.headers is None:
            raise RuntimeError("the WSGI app did not call start_response")
        headers = _as_spelled()()
        for key, value in self.headers:
            headers.add(key, value)
        if final and "Content-Length" not in headers and self.status not in (204, 304):
            headers["Content-Length"] = str(len(first))  # the whole body is known
        if "Server" not in headers:
            headers["Server"] = f"TornadoServer/{version}"
        self.headers_sent = True
        self.pending.clear()
        start_line = httputil.ResponseStartLine("HTTP/1.1", self.status, self.reason)
        body = first if first and self.request.method != "HEAD" else None
        await self.request.connection.write_headers(start_line, headers, chunk=body)

    def fail(self) -> None:
        """The app raised: a 500 if nothing was sent yet, else cut the connection."""
        from tornado import httputil

        connection = self.request.connection
        if self.headers_sent:
            connection.stream.close()  # the client sees a cut response, not a wrong one
            return
        self.status = 500
        body = b"Internal Server Error"
        headers = httputil.HTTPHeaders({"Content-Type": "text/plain", "Content-Length": str(len(body))})
        connection.write_headers(
            httputil.ResponseStartLine("HTTP/1.1", 500, "Internal Server Error"), headers, chunk=body
        )
        connection.finish()


@functools.cache
def _as_spelled() -> type:
    """Response headers that Tornado writes with their names as the app spelled
    them: HTTPHeaders would write "Www-Authenticate" for "WWW-Authenticate"."""
    from tornado.httputil import HTTPHeaders

    class AsSpelled(HTTPHeaders):  # type: ignore[misc]
        def __init__(self) -> None:
            self.spelled: dict[str, str] = {}
            super().__init__()

        def add(self, name: str, value: str) -> None:
            self.spelled.setdefault(name.lower(), name)
            super().add(name, value)

        def get_all(self) -> Any:
            for name, value in super().get_all():
                yield self.spelled.get(name.lower(), name), value

    return AsSpelled
