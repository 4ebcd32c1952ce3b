"""werkzeug: Werkzeug's development server (``werkzeug.serving``).

HTTP/1.1 with chunked request and response bodies, one thread per connection.
Werkzeug closes the connection after every response (no keep-alive: Python's
http.server cannot drain a request it did not read) and cannot cap its threads,
so --threads 1 (one request at a time) is the only thread count it honours.
For development; its own docs say not to deploy it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_to_bytes, urlsplit

from anyserve.config import Config
from anyserve.errors import ServerError, Unsupported
from anyserve.sockets import Listener

from .base import Capabilities, Deviations, WSGIApp, join_repeated_headers
from .draining import ENFORCED_BY_ANYSERVE
from .threaded import DrainingHandlerMixIn, DrainingServerMixIn, SocketServerAdapter


class WerkzeugAdapter(SocketServerAdapter):
    name = "werkzeug"
    requires = ("werkzeug",)
    module = "werkzeug"
    capabilities = Capabilities(
        concurrency="thread per connection, unbounded (--threads 1: one request at a time)",
        threads=True,
        unix=True,
        tls=True,
        tls_mixed=True,
    )
    # werkzeug cannot read a chunk with an extension (the app's read fails: 500), and
    # http.server ends a connection whose request timed out without a word.
    deviations = Deviations(no_keep_alive=True, no_chunk_extensions_or_trailers=True, silent_request_timeout=True)
    note = "development server"
    keep_alive_timeout_by = ENFORCED_BY_ANYSERVE
    loggers = ("werkzeug",)

    @classmethod
    def refuse(cls, config: Config) -> None:
        if config.threads is not None and config.threads > 1:
            given = config.given_as("threads")
            if given != "--threads":  # the app's own config: the servers that honour it are named
                message = f"werkzeug cannot cap its threads, so it cannot honour {given}; remove the key"
                raise Unsupported(message, "threads")
            raise ServerError(
                f"werkzeug cannot cap its threads, so it cannot honour --threads {config.threads}; "
                "drop --threads (a thread per connection) or use --threads 1"
            )
        super().refuse(config)

    def make_servers(self, app: WSGIApp, listeners: list[Listener]) -> list[Any]:
        from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler

        threaded = self.config.threads != 1

        class Server(DrainingServerMixIn, BaseWSGIServer):
            multithread = threaded

        class Handler(DrainingHandlerMixIn, WSGIRequestHandler):
            protocol_version = "HTTP/1.1" if threaded else "HTTP/1.0"

            def handle_expect_100(self) -> bool:
                return True  # werkzeug sends its own 100 Continue: http.server's would be a second

            def send_header(self, keyword: str, value: str) -> None:
                # http.server writes its own Server and Date first: the app's, sent
                # after, replace them rather than make a second of each.
                if keyword.lower() in ("server", "date"):
                    prefix = keyword.lower().encode("latin-1") + b":"
                    buffered = getattr(self, "_headers_buffer", [])
                    self._headers_buffer = [line for line in buffered if not line.lower().startswith(prefix)]
                super().send_header(keyword, value)

            def make_environ(self) -> dict[str, Any]:
                environ = super().make_environ()
                join_repeated_headers(environ, self.headers.items())
                # werkzeug decodes the path as UTF-8 and replaces bytes that are
                # not; PEP 3333's PATH_INFO holds the path's bytes, as latin-1.
                url = urlsplit(self.path)
                path = f"/{url.netloc}{url.path}" if not url.scheme and url.netloc else url.path
                environ["PATH_INFO"] = unquote_to_bytes(path).decode("latin-1")
                return environ

            def log_request(self, code: Any = "-", size: Any = "-") -> None:
                pass  # no line per request of its own (Adapter.loggers)

        servers = []
        for listener in listeners:
            host = f"unix://{listener.address}" if listener.is_unix else listener.address[0]
            port = 0 if listener.is_unix else listener.address[1]
            server = Server(host, port, app, handler=Handler, fd=listener.socket.fileno())
            if listener.tls is not None:
                # Not ssl_context=: werkzeug would do each handshake in the accepting
                # thread, where one silent client holds up every other.
                server.ssl_context = listener.tls.context()
                server.socket = server.ssl_context.wrap_socket(
                    server.socket, server_side=True, do_handshake_on_connect=False
                )
            server.init_draining(None, inline=not threaded, timeout=self.config.timeout_keep_alive)
            servers.append(server)
        return servers
