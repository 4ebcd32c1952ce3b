"""wsgiref: the standard library's reference server, always installed.

HTTP/1.0 only: one request per connection and no chunked request bodies. anyserve
runs it with a thread per connection, at most --threads at once (default 10);
with --threads 1, each connection is served in the accepting thread, as
``wsgiref.simple_server.make_server`` does.
"""

from __future__ import annotations

import logging
import platform
import threading
from typing import Any

from anyserve.config import Config
from anyserve.sockets import Listener

from .base import Capabilities, Deviations, WSGIApp, drop_made_up_content_headers, join_repeated_headers
from .draining import ENFORCED_BY_ANYSERVE
from .threaded import DrainingHandlerMixIn, DrainingServerMixIn, SocketServerAdapter

DEFAULT_THREADS = 10


class WsgirefAdapter(SocketServerAdapter):
    name = "wsgiref"
    module = "wsgiref"
    capabilities = Capabilities(
        default_threads=DEFAULT_THREADS,
        concurrency=f"thread per connection, at most N (--threads, default {DEFAULT_THREADS}; 1: none)",
        threads=True,
        unix=True,
    )
    deviations = Deviations(no_keep_alive=True, no_chunked_request=True)
    note = "standard library reference server: HTTP/1.0, for development and tests"
    keep_alive_timeout_by = ENFORCED_BY_ANYSERVE
    loggers = ("wsgiref",)  # anyserve's name for what http.server writes to stderr
    app_may_close = False  # wsgiref refuses hop-by-hop headers; it closes after every response

    @classmethod
    def is_installed(cls) -> bool:
        return True

    @classmethod
    def version(cls) -> str | None:
        return f"python {platform.python_version()}"

    @classmethod
    def environ_flags(cls, config: Config) -> dict[str, Any]:
        flags = super().environ_flags(config)
        if (config.threads or DEFAULT_THREADS) > 1:
            flags["wsgi.multithread"] = True  # wsgiref.simple_server always says False
        return flags

    def make_servers(self, app: WSGIApp, listeners: list[Listener]) -> list[Any]:
        from wsgiref.simple_server import ServerHandler, WSGIRequestHandler, WSGIServer

        threads = self.config.threads or DEFAULT_THREADS

        class Server(DrainingServerMixIn, WSGIServer):
            pass

        class Bodiless(ServerHandler):  # type: ignore[misc]
            def finish_content(self) -> None:
                # wsgiref gives a response that sent no body "Content-Length: 0":
                # wrong for a 204 or 304 (RFC 9110 section 8.6) and for a HEAD,
                # whose body anyserve dropped.
                if not self.headers_sent and (
                    self.status[:3] in ("204", "304") or self.environ.get("REQUEST_METHOD") == "HEAD"
                ):
                    self.send_headers()
                    return
                super().finish_content()

        class OneRequest(WSGIRequestHandler):
            def handle(self) -> None:
                # WSGIRequestHandler.handle, with Bodiless for its ServerHandler.
                self.raw_requestline = self.rfile.readline(65537)
                if len(self.raw_requestline) > 65536:
                    self.requestline = self.request_version = self.command = ""
                    self.send_error(414)
                    return
                if not self.parse_request():
                    return
                handler = Bodiless(self.rfile, self.wfile, self.get_stderr(), self.get_environ(), multithread=False)
                handler.request_handler = self
                handler.run(self.server.get_app())

        class Handler(DrainingHandlerMixIn, OneRequest):
            def get_environ(self) -> dict[str, Any]:
                environ = super().get_environ()
                join_repeated_headers(environ, self.headers.items())
                drop_made_up_content_headers(environ, self.headers)
                environ["REQUEST_URI"] = self.path  # the target as sent (anyserve.middleware.RequestTarget)
                return environ

            def address_string(self) -> str:
                return self.client_address[0] or "unix"

            def log_request(self, code: Any = "-", size: Any = "-") -> None:
                pass  # no line per request of its own (Adapter.loggers)

            def log_message(self, format: str, *args: Any) -> None:
                # Through logging (http.server writes to stderr), so --log-level applies.
                access.info("%s - - [%s] %s", self.address_string(), self.log_date_time_string(), format % args)

        access = logging.getLogger("wsgiref")
        slots = threading.BoundedSemaphore(threads)
        servers = []
        for listener in listeners:
            server = Server(listener.address, Handler, bind_and_activate=False)
            server.socket.close()  # the one socketserver made; ours is already bound
            server.socket = listener.socket
            server.server_address = listener.address
            if listener.is_unix:
                server.server_name, server.server_port = "localhost", 80
            else:
                server.server_name, server.server_port = listener.address
            server.setup_environ()
            server.set_app(app)
            server.init_draining(slots, inline=threads == 1, timeout=self.config.timeout_keep_alive)
            servers.append(server)
        return servers
