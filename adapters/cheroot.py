"""cheroot: CherryPy's HTTP server (``cheroot.wsgi.Server``), a thread pool per listener."""

from __future__ import annotations

import logging
from typing import Any

from anyserve.config import to_bool, to_int, to_seconds, to_str
from anyserve.sockets import Listener
from anyserve.tls import handshake_failure

from .base import Capabilities, Deviations, Option, WSGIApp
from .draining import Drain
from .threaded import ThreadedAdapter

DEFAULT_THREADS = 10


def adopt_listener(base: type) -> Any:
    """A subclass of a cheroot server class that serves on ``self.listener``, a
    socket anyserve has bound, where cheroot would bind its own in ``prepare()``."""

    class Adopting(base):  # type: ignore[misc, valid-type]
        listener: Listener

        def bind(self, family: int, type: int, proto: int = 0) -> Any:
            self.socket = self.listener.socket
            self.bind_addr = self.listener.address
            return self.socket

        def bind_unix_socket(self, bind_addr: Any) -> Any:
            self.socket = self.listener.socket
            return self.socket

    return Adopting


def use_tls(server: Any, listener: Listener) -> None:
    """Serve TLS on a cheroot server with anyserve's context, each handshake done by the
    worker thread that serves the connection.

    cheroot's builtin adapter does the handshake in the thread that accepts, where
    one client that connects and stays silent holds up every new connection for
    the idle timeout (10 s)."""
    import socket
    import ssl

    from cheroot.server import HTTPConnection
    from cheroot.ssl.builtin import BuiltinSSLAdapter

    tls = listener.tls
    assert tls is not None

    class DeferredHandshake(BuiltinSSLAdapter):  # type: ignore[misc]
        def wrap(self, sock: Any) -> tuple[Any, dict[str, str]]:
            wrapped = self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            return wrapped, {"wsgi.url_scheme": "https", "HTTPS": "on"}  # the rest once handshaken

    class Connection(HTTPConnection):  # type: ignore[misc]
        handshaken = False

        def communicate(self) -> bool:
            if not self.handshaken:
                try:
                    self.socket.do_handshake()
                except OSError as exc:
                    if isinstance(exc, ssl.SSLError) and "http request" in str(exc):
                        self._answer_plain_http()
                    self.server.error_log(handshake_failure(self.remote_addr, exc), level=30)
                    return False
                self.handshaken = True
                self.ssl_env = self.server.ssl_adapter.get_environ(self.socket)
            return bool(super().communicate())

        def _answer_plain_http(self) -> None:
            """As cheroot does: a plain-text 400, written past the TLS layer."""
            body = b"The client sent a plain HTTP request, but this server only speaks HTTPS on this port."
            head = f"{self.server.protocol} 400 Bad Request\r\nContent-Length: {len(body)}\r\n"
            try:
                socket.socket.sendall(self.socket, head.encode() + b"Content-Type: text/plain\r\n\r\n" + body)
            except OSError:
                pass

    adapter = DeferredHandshake(
        tls.certfile, tls.keyfile or tls.certfile, tls.ca_certs, private_key_password=tls.password
    )
    adapter.context = tls.context()
    server.ssl_adapter = adapter
    server.ConnectionClass = Connection


def read_targets_as_cherrypy(server: Any) -> None:
    """Have *server* read request targets as it does under CherryPy (proxy mode):
    an absolute-form target is served, its path as PATH_INFO, and CONNECT
    host:port reaches the app; without it cheroot refuses both itself."""
    from cheroot.server import HTTPRequest

    class Request(HTTPRequest):  # type: ignore[misc]
        def __init__(self, server: Any, conn: Any) -> None:
            super().__init__(server, conn, proxy_mode=True)

    server.ConnectionClass = type("Connection", (server.ConnectionClass,), {"RequestHandlerClass": Request})


class CherootAdapter(ThreadedAdapter):
    name = "cheroot"
    requires = ("cheroot",)
    module = "cheroot"
    capabilities = Capabilities(
        default_threads=DEFAULT_THREADS,
        concurrency=f"thread pool of N per listener (--threads, default {DEFAULT_THREADS})",
        threads=True,
        unix=True,
        tls=True,
        tls_mixed=True,
    )
    # cheroot joins only the headers it knows to be lists (Accept, ...); of
    # any other repeated header the app sees the last value.
    deviations = Deviations(last_repeated_header=True)
    keep_alive_timeout_by = "cheroot's timeout (idle, and each read of a request)"
    loggers = ("cheroot",)
    options = {
        "max_threads": Option(to_int, "grow the pool up to this many threads under load (-1: no limit)"),
        "timeout": Option(to_seconds, "seconds a connection may stay idle (default: --timeout-keep-alive)"),
        "accepted_queue_size": Option(to_int, "connections waiting for a thread before new ones are refused"),
        "accepted_queue_timeout": Option(to_int, "seconds to wait for room in that queue"),
        "server_name": Option(to_str, "the SERVER_NAME given to the app"),
        "max_request_header_size": Option(to_int, "largest request head in bytes (0: no limit)"),
        "max_request_body_size": Option(to_int, "largest request body in bytes (0: no limit)"),
        "peercreds": Option(to_bool, "put the unix socket peer's pid/uid/gid in the environ"),
    }

    def make_servers(self, app: WSGIApp, listeners: list[Listener]) -> list[Any]:
        from cheroot import wsgi

        config, settings = self.config, self.settings

        class Server(adopt_listener(wsgi.Server)):  # type: ignore[misc]
            def error_log(self, msg: str = "", level: int = logging.INFO, traceback: bool = False) -> None:
                # cheroot writes these to stderr itself: through its logger instead.
                logging.getLogger("cheroot").log(level, "%s", msg, exc_info=traceback)

        server_class = Server
        servers = []
        for listener in listeners:
            server = server_class(
                listener.address,
                wsgi_app=app,
                numthreads=config.threads or DEFAULT_THREADS,
                max=settings.get("max_threads", -1),
                request_queue_size=config.backlog,
                timeout=settings.get("timeout", config.timeout_keep_alive),
                shutdown_timeout=config.graceful_timeout,
                accepted_queue_size=settings.get("accepted_queue_size", -1),
                accepted_queue_timeout=settings.get("accepted_queue_timeout", 10),
                server_name=settings.get("server_name"),
                peercreds_enabled=settings.get("peercreds", False),
            )
            for key in ("max_request_header_size", "max_request_body_size"):
                if key in settings:
                    setattr(server, key, settings[key])
            server.listener = listener
            if listener.tls is not None:
                use_tls(server, listener)
            read_targets_as_cherrypy(server)
            server.prepare()
            servers.append(server)
        return servers

    def run_server(self, server: Any) -> None:
        server.serve()

    def stop_servers(self, servers: list[Any], drain: Drain) -> int:
        for server in servers:
            # stop() closes idle connections at once and joins the pool for up to
            # shutdown_timeout, so in-flight requests finish; at the deadline cheroot
            # shuts down the connections still running itself.
            server.shutdown_timeout = drain.remaining()
            server.stop()
        return 0
