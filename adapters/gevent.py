"""gevent: ``gevent.pywsgi.WSGIServer``, a greenlet per connection.

The listeners anyserve bound already carry TCP_NODELAY (without it a keep-alive
client waits ~40 ms a request). Requests run in a pool of greenlets (unbounded,
or ``-o pool_size=N``); the Lifecycle ticks from a greenlet. When anyserve owns
the process it monkey-patches the standard library first thing, before the app
is imported (as gunicorn's gevent worker does), and warns about modules that
were imported before it; ``-o patch=false`` leaves the standard library alone,
and then a blocking call in the app blocks every request.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

from anyserve.config import Config, to_bool, to_positive_int
from anyserve.lifecycle import Lifecycle
from anyserve.sockets import Listener

from .base import Adapter, Capabilities, ConnectionTracker, Option, WSGIApp, monkey_patch_first, warn_requests_left

log = logging.getLogger("anyserve.gevent")


class GeventAdapter(Adapter):
    name = "gevent"
    requires = ("gevent",)
    module = "gevent"
    capabilities = Capabilities(
        concurrency="greenlet per connection (unbounded, or -o pool_size=N), standard library monkey-patched",
        unix=True,
        tls=True,
        tls_mixed=True,
        embed=True,
    )
    options = {
        "pool_size": Option(to_positive_int, "most connections served at once (default: no limit)"),
        "patch": Option(to_bool, "monkey-patch the standard library before loading the app (default true)"),
    }

    @classmethod
    def prepare_process(cls, config: Config) -> None:
        if cls.check(config).get("patch", True):
            monkey_patch_first("gevent", "gevent.monkey", "patch_all")

    def __init__(self) -> None:
        self._wakeup: Any = None
        self._stop_requested = False

    def serve(self, app: WSGIApp, listeners: list[Listener], config: Config, lifecycle: Lifecycle) -> None:
        import gevent
        from gevent.event import Event

        stop = Event()
        # shutdown() may come from another thread: an async watcher is the
        # thread-safe way to wake the hub.
        self._wakeup = gevent.get_hub().loop.async_()
        self._wakeup.start(stop.set)
        if self._stop_requested:
            return
        serving = GeventServing(app, listeners, config, lifecycle)
        serving.start()
        # Python runs a signal handler only once the main thread runs Python code,
        # and libev's loop retries an interrupted wait inside C: a TERM could wait
        # for the next request. libev's own signal watchers call the handlers
        # anyserve installed, from the hub, at once.
        watchers = [
            gevent.signal_handler(signum, handler, signum, None)
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1)
            if callable(handler := signal.getsignal(signum)) and threading.current_thread() is threading.main_thread()
        ]
        try:
            stop.wait()
        finally:
            for watcher in watchers:
                watcher.cancel()
            serving.stop()
            self._wakeup.close()

    def shutdown(self) -> None:
        self._stop_requested = True
        if self._wakeup is not None:
            self._wakeup.send()

    def embed(self, app: WSGIApp, listeners: list[Listener], config: Config, lifecycle: Lifecycle) -> Any:
        serving = GeventServing(app, listeners, config, lifecycle)
        serving.start()  # stop() blocks the calling greenlet until done
        return serving


class GeventServing:
    """The app served in the current gevent hub, which someone else may run.

    ``start()`` starts the servers and returns; ``stop()`` (from a greenlet)
    stops accepting, closes idle connections, waits for the requests in flight
    (up to the graceful timeout) and runs the ``stopping`` moment."""

    def __init__(self, app: WSGIApp, listeners: list[Listener], config: Config, lifecycle: Lifecycle) -> None:
        self.app = app
        self.listeners = listeners
        self.config = config
        self.lifecycle = lifecycle
        self.connections = ConnectionTracker()
        self._servers: list[Any] = []
        self._ticker: Any = None

    def start(self) -> None:
        import gevent
        from gevent.pool import Pool
        from gevent.pywsgi import LoggingLogAdapter, WSGIHandler, WSGIServer
        from gevent.ssl import SSLContext

        connections = self.connections
        pool_size = GeventAdapter.check(self.config).get("pool_size")

        class Handler(WSGIHandler):
            """Knows when its connection waits for a request, so a drain can close it."""

            def read_requestline(self) -> str:
                connections.waiting(self.socket)
                line = super().read_requestline()
                connections.mark(self.socket, True)
                return line

            def handle_one_request(self) -> Any:
                if connections.draining and not connections.is_fresh(self.socket):
                    connections.close(self.socket)  # end the keep-alive loop, and the connection
                    return None
                return super().handle_one_request()

            def handle(self) -> None:
                sock = self.socket
                connections.accepted(sock)
                try:
                    super().handle()
                finally:
                    connections.forget(sock)

        class Server(WSGIServer):
            def wrap_socket_and_handle(self, client_socket: Any, address: Any) -> Any:
                # A failed handshake is one line in the log, not a greenlet's traceback.
                try:
                    tls_socket = self.wrap_socket(client_socket, **self.ssl_args)
                except OSError as exc:
                    log.warning("TLS handshake with %s failed: %s", _peer(address), _reason(exc))
                    return None
                try:
                    return self.handle(tls_socket, address)
                finally:
                    tls_socket.close()

        access_log = logging.getLogger("gevent.access")
        self.lifecycle.started()
        for listener in self.listeners:
            listener.socket.setblocking(False)
            # gevent's context class: its sockets yield to the hub, patched or not.
            tls = {} if listener.tls is None else {"ssl_context": listener.tls.context(SSLContext)}
            server = Server(
                listener.socket,
                self.app,
                spawn=Pool(pool_size),  # a pool, so stop() can wait for the handlers
                handler_class=Handler,
                # pywsgi formats each access line before writing it: no log at all
                # when the line would be dropped anyway.
                # With --access-log, anyserve's access log has the line.
                log=LoggingLogAdapter(access_log)
                if access_log.isEnabledFor(logging.INFO) and self.config.access_log is None
                else None,
                error_log=LoggingLogAdapter(logging.getLogger("gevent.error"), logging.ERROR),
                **tls,
            )
            if self.config.workers > 1:
                server.environ = {**server.get_environ(), "wsgi.multiprocess": True}
            server.start()
            self._servers.append(server)
        if self.lifecycle.wants_ticks:
            self._ticker = gevent.spawn(self._tick)

    def _tick(self) -> None:
        import gevent

        while True:
            gevent.sleep(self.config.main_interval)
            self.lifecycle.tick()

    def stop(self) -> None:
        import time

        deadline = time.monotonic() + self.config.graceful_timeout
        for server in self._servers:
            server.close()  # stop accepting everywhere first
        self.connections.drain()
        left = 0
        for server in self._servers:
            server.pool.join(timeout=max(0.0, deadline - time.monotonic()))
            left += len(server.pool)  # handlers still running: stop() kills them
            server.stop(timeout=0)
        warn_requests_left(self.config.graceful_timeout, left)
        if self._ticker is not None:
            self._ticker.kill()
        self.lifecycle.stopping()


def _peer(address: Any) -> str:
    return address[0] if isinstance(address, tuple) and address else "a unix socket peer"


def _reason(exc: OSError) -> str:
    return getattr(exc, "reason", None) or exc.strerror or str(exc)
