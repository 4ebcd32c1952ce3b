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
import logging
from collections.abc import Callable
from typing import Any

from anyserve.config import to_bool, to_int, to_seconds
from anyserve.lifecycle import Lifecycle
from anyserve.sockets import Listener

from .base import Capabilities, Deviations, Option, WSGIApp
from .draining import Drain
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
    deviations = Deviations(respelled_header_names=True, repeated_header_joined_without_space=True)
    loggers = ("tornado",)
    options = {
        "xheaders": Option(to_bool, "trust X-Real-Ip/X-Forwarded-For and X-Scheme/X-Forwarded-Proto"),
        "max_body_size": Option(to_int, "largest request body in bytes (default 100 MB)"),
        "max_buffer_size": Option(to_int, "largest request held in memory in bytes (default 100 MB)"),
        "idle_connection_timeout": Option(
            to_seconds, "seconds an idle keep-alive connection stays open (default 3600)"
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

        from tornado.wsgi import WSGIContainer

        self.executor = ThreadPoolExecutor(
            self.config.threads or DEFAULT_THREADS, thread_name_prefix="anyserve-tornado"
        )
        # Tornado's container is used for its environ() only; the app runs through _respond.
        self._container = WSGIContainer(self.app, executor=self.executor)
        self.in_flight = 0
        self.streams: dict[Any, str] = {}  # IOStream -> fresh, busy or idle
        self._servers = self._make_servers()

    def _make_servers(self) -> list[tuple[Any, list[Any]]]:
        from tornado.httpserver import HTTPServer

        streams = self.streams

        class Server(HTTPServer):  # type: ignore[misc]
            def handle_stream(self, stream: Any, address: Any) -> None:
                streams[stream] = "fresh"
                super().handle_stream(stream, address)

            def start_request(self, server_conn: Any, request_conn: Any) -> Any:
                # Called as soon as the previous response is sent, before the next
                # request comes: the connection is busy once that one's head has.
                delegate = super().start_request(server_conn, request_conn)
                return _Arriving(delegate, lambda: streams.__setitem__(request_conn.stream, "busy"))

        # One HTTPServer for the plain listeners, one per TLS context.
        servers = []
        for tls in dict.fromkeys(listener.tls for listener in self.listeners):
            server = Server(self.handle, ssl_options=tls.context() if tls else None, **self.adapter.settings)
            servers.append((server, [listener.socket for listener in self.listeners if listener.tls == tls]))
        return servers

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

    def handle(self, request: Any) -> None:
        """HTTPServer's request callback: respond from a task on the IOLoop."""
        from tornado.ioloop import IOLoop

        self.in_flight += 1
        IOLoop.current().spawn_callback(self._respond, request)

    async def _respond(self, request: Any) -> None:
        loop = asyncio.get_running_loop()
        response = _Response(request)
        result: Any = None
        try:
            environ = self._container.environ(request)
            # Tornado's container says True; anyserve's EnvironFlags says so when several processes serve.
            environ["wsgi.multiprocess"] = False
            environ["wsgi.input_terminated"] = True  # Tornado has read the whole body
            result, chunk = await loop.run_in_executor(self.executor, _call_app, self.app, environ, response)
            if isinstance(result, (list, tuple)):
                response.pending.extend(result)  # the whole body is known: sent with a Content-Length
            else:
                while chunk is not _DONE:
                    await response.write(chunk)
                    chunk = await loop.run_in_executor(self.executor, next, response.iterator, _DONE)
            await response.finish()
        except Exception:
            log.exception("error in the WSGI app for %s %s", request.method, request.uri)
            response.fail()
        finally:
            if hasattr(result, "close"):
                try:
                    await loop.run_in_executor(self.executor, result.close)
                except Exception:
                    log.exception("error closing the WSGI app's response")
            self.in_flight -= 1
            stream = getattr(request.connection, "stream", None)
            if self.streams.get(stream) == "busy":
                self.streams[stream] = "idle"


class _Arriving:
    """A request's delegate that calls *arrived* once the request's head has come."""

    def __init__(self, delegate: Any, arrived: Callable[[], object]) -> None:
        self.delegate = delegate
        self.arrived = arrived

    def headers_received(self, start_line: Any, headers: Any) -> Any:
        self.arrived()
        return self.delegate.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Any:
        return self.delegate.data_received(chunk)

    def finish(self) -> None:
        self.delegate.finish()

    def on_connection_close(self) -> None:
        self.delegate.on_connection_close()


_DONE: Any = object()


def _call_app(app: WSGIApp, environ: dict[str, Any], response: _Response) -> tuple[Any, Any]:
    """In a pool thread: call the app and, unless it returned a list, take its first chunk."""
    result = app(environ, response.start_response)
    if isinstance(result, (list, tuple)):
        return result, _DONE
    response.iterator = iter(result)
    return result, next(response.iterator, _DONE)


class _Response:
    """start_response for the app, and writing to Tornado's connection."""

    def __init__(self, request: Any) -> None:
        self.request = request
        self.status = 0
        self.headers: list[tuple[str, str]] | None = None
        self.headers_sent = False
        self.pending: list[bytes] = []  # from the app's legacy write() callable
        self.iterator: Any = None

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
        if not self.headers_sent:
            if not chunk and not self.pending:
                return  # wait for a non-empty chunk before committing the headers
            await self._send_headers()
        data = b"".join([*self.pending, chunk]) if self.pending else chunk
        self.pending.clear()
        if data and self.request.method != "HEAD":
            await self.request.connection.write(data)

    async def finish(self) -> None:
        if not self.headers_sent:
            await self._send_headers(final=b"".join(self.pending))
        elif self.pending and self.request.method != "HEAD":
            await self.request.connection.write(b"".join(self.pending))
        self.request.connection.finish()

    async def _send_headers(self, final: bytes | None = None) -> None:
        from tornado import httputil, version

        if self.headers is None:
            raise RuntimeError("the WSGI app did not call start_response")
        headers = httputil.HTTPHeaders()
        for key, value in self.headers:
            headers.add(key, value)
        if final is not None and "Content-Length" not in headers and self.status not in (204, 304):
            headers["Content-Length"] = str(len(final))  # the whole body is known
        if "Server" not in headers:
            headers["Server"] = f"TornadoServer/{version}"
        self.headers_sent = True
        start_line = httputil.ResponseStartLine("HTTP/1.1", self.status, self.reason)
        body = final if final and self.request.method != "HEAD" else None
        await self.request.connection.write_headers(start_line, headers, chunk=body)
        self.pending.clear()

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
