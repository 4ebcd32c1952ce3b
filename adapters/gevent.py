"""gevent: ``gevent.pywsgi.WSGIServer``, a greenlet per connection.

The listeners anyserve bound already carry TCP_NODELAY (without it a keep-alive
client waits ~40 ms a request). Requests run in a pool of greenlets (unbounded,
or ``-o pool_size=N``). When anyserve owns the process it monkey-patches the
standard library first thing, before the app is imported (as gunicorn's
gevent worker does), and warns about modules that were imported before it;
``-o patch=false`` leaves the standard library alone, and then a blocking call
in the app blocks every request.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from anyserve.config import to_positive_int
from anyserve.lifecycle import Lifecycle
from anyserve.sockets import Listener
from anyserve.tls import handshake_failure

from .base import Capabilities, Deviations, Option, WSGIApp, header_lines_lost, join_repeated_headers
from .draining import ENFORCED_BY_ANYSERVE, REQUEST_TIMEOUT, ConnectionTracker, Drain
from .eventloop import Cancel, EventLoopAdapter, LoopServing
from .patching import PATCH_OPTION, MonkeyPatching

log = logging.getLogger("anyserve.gevent")


class GeventAdapter(MonkeyPatching, EventLoopAdapter):
    name = "gevent"
    patching = ("gevent.monkey", "patch_all")
    requires = ("gevent",)
    module = "gevent"
    capabilities = Capabilities(
        concurrency="greenlet per connection (unbounded, or -o pool_size=N), standard library monkey-patched",
        unix=True,
        tls=True,
        tls_mixed=True,
        embed=True,
    )
    # gevent answers a request it cannot parse with a bare 400.
    deviations = Deviations(bare_bad_request=True)
    keep_alive_timeout_by = ENFORCED_BY_ANYSERVE
    loggers = ("gevent",)
    options = {
        "pool_size": Option(to_positive_int, "most connections served at once (default: no limit)"),
        "patch": PATCH_OPTION,
    }

    def make_serving(self, app: WSGIApp, listeners: list[Listener], lifecycle: Lifecycle) -> LoopServing:
        return GeventServing(self, app, listeners, lifecycle)

    def run_loop(self, main: Callable[[], None]) -> None:
        import gevent
        from gevent.event import Event

        self._done = Event()
        self._calls: deque[Callable[[], object]] = deque()
        # The thread-safe way into the hub: an async watcher, sent from anywhere.
        self._wakeup = gevent.get_hub().loop.async_()
        self._wakeup.start(self._run_calls)
        # Python runs a signal handler only once the main thread runs Python code,
        # and libev's loop retries an interrupted wait inside C: a TERM could wait
        # for the next request. libev's own signal watchers call the handlers
        # anyserve installed, from the hub, at once.
        handlers = {
            signum: handler
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1)
            if callable(handler := signal.getsignal(signum)) and threading.current_thread() is threading.main_thread()
        }
        watchers = [gevent.signal_handler(signum, handler, signum, None) for signum, handler in handlers.items()]
        try:
            main()
            self._done.wait()
        finally:
            for watcher in watchers:
                watcher.cancel()
            # libev leaves a signal it stops watching at its default action, which
            # for TERM ends the process: a second TERM (its supervisor's, after the
            # one the whole group got) would cut the stop short.
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
            self._wakeup.close()

    def _run_calls(self) -> None:
        import gevent

        while self._calls:
            gevent.spawn(self._calls.popleft())  # a watcher's callback must not block the hub

    def stop_loop(self) -> None:
        self._done.set()

    def call_threadsafe(self, function: Callable[[], object]) -> None:
        self._calls.append(function)
        self._wakeup.send()

    def call_later(self, delay: float, function: Callable[[], object]) -> Cancel:
        import gevent

        greenlet = gevent.spawn_later(delay, function)
        return lambda: greenlet.kill(block=False)

    def stop_embedded(self, serving: LoopServing) -> None:
        from gevent.event import Event

        done = Event()
        serving.stop(done.set)
        done.wait()  # this greenlet, while the hub runs the stop


class GeventServing(LoopServing):
    """The app served in the current gevent hub, which someone else may run."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        # pywsgi has no timeout of its own: a silent client would hold its greenlet for ever.
        self.connections = ConnectionTracker(timeout=self.config.timeout_keep_alive)
        self._servers = self._make_servers()

    def _make_servers(self) -> list[Any]:
        from gevent.pool import Pool
        from gevent.pywsgi import LoggingLogAdapter, WSGIHandler, WSGIServer
        from gevent.ssl import SSLContext

        connections = self.connections

        class Handler(WSGIHandler):
            """Knows when its connection waits for a request, so a drain can close it."""

            def read_requestline(self) -> str:
                connections.waiting(self.socket)
                try:
                    line = super().read_requestline()
                except TimeoutError:
                    if connections.is_fresh(self.socket):  # its first request never came
                        self.socket.sendall(REQUEST_TIMEOUT)
                    raise  # pywsgi ends the connection, quietly
                connections.mark(self.socket, True)
                return line

            def handle_one_request(self) -> Any:
                if connections.draining and not connections.is_fresh(self.socket):
                    connections.close(self.socket)  # end the keep-alive loop, and the connection
                    return None
                return super().handle_one_request()

            def read_request(self, raw_requestline: str) -> bool:
                # False: gevent answers 400 and closes.
                return bool(super().read_request(raw_requestline)) and not header_lines_lost(self.headers)

            def get_environ(self) -> Any:
                environ = super().get_environ()
                environ["REQUEST_URI"] = self.path  # the target as sent (anyserve.middleware.RequestTarget)
                join_repeated_headers(environ, self.headers.items())
                return environ

            def _handle_client_error(self, ex: Exception) -> Any:
                # pywsgi's hook for a request it could not read: a head that stopped
                # arriving for --timeout-keep-alive gets a 408, not a traceback and a 400.
                if isinstance(ex, TimeoutError):
                    return ("408", REQUEST_TIMEOUT)
                return super()._handle_client_error(ex)

            def start_response(self, status: str, headers: Any, exc_info: Any = None) -> Any:
                write = super().start_response(status, headers, exc_info)
                # HTTP/1.1 (RFC 9112 section 9.6): the response to a request that
                # asked for the close says so; gevent closes without a word.
                if self.close_connection and self.request_version == "HTTP/1.1":
                    if not any(name.lower() == b"connection" for name, _ in self.response_headers):
                        self.response_headers.append((b"Connection", b"close"))
                return write

            def handle(self) -> None:
                sock = self.socket
                connections.accepted(sock)
                try:
                    super().handle()
                finally:
                    connections.forget(sock)

        class Server(WSGIServer):
            def wrap_socket_and_handle(self, client_socket: Any, address: Any) -> Any:
                # A failed handshake is one line in the log, not a greenlet's traceback;
                # a client silent through it is cut at --timeout-keep-alive.
                client_socket.settimeout(connections.timeout)
                try:
                    tls_socket = self.wrap_socket(client_socket, **self.ssl_args)
                except OSError as exc:
                    log.warning("%s", handshake_failure(address, exc))
                    return None
                try:
                    return self.handle(tls_socket, address)
                finally:
                    tls_socket.close()

        servers = []
        for listener in self.listeners:
            listener.socket.setblocking(False)
            # gevent's context class: its sockets yield to the hub, patched or not.
            tls = {} if listener.tls is None else {"ssl_context": listener.tls.context(SSLContext)}
            server = Server(
                listener.socket,
                self.app,
                spawn=Pool(self.adapter.settings.get("pool_size")),  # a pool, so the stop can count the handlers
                handler_class=Handler,
                log=None,  # no line per request of its own (Adapter.loggers)
                error_log=LoggingLogAdapter(logging.getLogger("gevent.error"), logging.ERROR),
                **tls,
            )
            servers.append(server)
        return servers

    def listen(self) -> None:
        for server in self._servers:
            server.start()

    def stop_accepting(self, drain: Drain) -> None:
        for server in self._servers:
            server.close()
        self.connections.drain(drain)

    def pending(self, drain: Drain) -> int:
        # A handler greenlet per connection: the tracker closes each once it is
        # idle (or still fresh at drain.fresh_until), and its greenlet ends.
        return sum(len(server.pool) for server in self._servers)

    def running(self) -> int:
        return self.connections.count("busy")

    def abort(self) -> None:
        for server in self._servers:
            server.stop(timeout=0)  # kills the handlers still running
