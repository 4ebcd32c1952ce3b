"""eventlet: ``eventlet.wsgi.server``, a green thread per connection.

eventlet is in maintenance mode upstream: its maintainers advise new projects
to choose something else. anyserve supports it for the apps that already run on
it. As with gevent, the standard library is monkey-patched first thing in the
process (``-o patch=false`` to opt out). On shutdown eventlet's own server stops
accepting, closes idle connections and waits for the busy ones; anyserve bounds
that wait by --graceful-timeout.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

from anyserve.config import Config, to_bool, to_positive_int, to_seconds
from anyserve.lifecycle import Lifecycle
from anyserve.sockets import Listener

from .base import (
    FIRST_REQUEST_GRACE,
    Adapter,
    Capabilities,
    Option,
    WSGIApp,
    monkey_patch_first,
    warn_requests_left,
)

DEFAULT_POOL = 1024  # eventlet's own default


class EventletAdapter(Adapter):
    name = "eventlet"
    requires = ("eventlet",)
    module = "eventlet"
    capabilities = Capabilities(
        concurrency=f"green thread per connection (at most -o pool_size, default {DEFAULT_POOL}), stdlib patched",
        unix=True,
        tls=True,
        tls_mixed=True,
        background=False,  # serves from the main thread of a process anyserve owns
    )
    options = {
        "pool_size": Option(to_positive_int, f"most connections served at once (default {DEFAULT_POOL})"),
        "patch": Option(to_bool, "monkey-patch the standard library before loading the app (default true)"),
        "keepalive": Option(to_seconds, "seconds to wait for the next request on a connection (default: no limit)"),
        "socket_timeout": Option(to_seconds, "timeout of client socket operations (default: none)"),
    }
    note = "maintenance mode upstream: supported for existing apps, not advised for new ones"

    @classmethod
    def prepare_process(cls, config: Config) -> None:
        if cls.check(config).get("patch", True):
            monkey_patch_first("eventlet", "eventlet", "monkey_patch")

    def __init__(self) -> None:
        self._wakeup_fd: int | None = None
        self._stop_requested = False

    def serve(self, app: WSGIApp, listeners: list[Listener], config: Config, lifecycle: Lifecycle) -> None:
        import ssl

        import eventlet
        import eventlet.wsgi
        from eventlet.green.ssl import GreenSSLContext
        from eventlet.greenio import GreenSocket
        from eventlet.hubs import trampoline

        settings = self.check(config)
        # shutdown() may come from a signal handler or another thread: it only
        # writes to this pipe, and a green thread here does the rest.
        read_fd, self._wakeup_fd = os.pipe()
        if self._stop_requested:
            os.close(read_fd)
            return

        stopping = False

        class Socket(GreenSocket):  # type: ignore[misc]
            """The listener's class, and so its accepted connections' (eventlet's
            accept() returns ``type(self)(client)``)."""

            fresh = True  # accepted, its first request line not read yet

            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                self._shutdown_now = self.shutdown  # eventlet sets it on each instance
                self.shutdown = self._shutdown

            def _shutdown(self, how: int) -> None:
                # When it stops, eventlet shuts down every connection between two
                # requests, a fresh one too, whose request may be on its way: it
                # was accepted (by a worker about to stop, say) and the client
                # would see it closed unanswered. Give that one a moment.
                if self.fresh and stopping:
                    eventlet.spawn_after(FIRST_REQUEST_GRACE, self._late_shutdown, how)
                    return
                self._shutdown_now(how)

            def _late_shutdown(self, how: int) -> None:
                if self.fresh:
                    with contextlib.suppress(OSError):
                        self._shutdown_now(how)

        class Protocol(eventlet.wsgi.HttpProtocol):
            def _read_request_line(self) -> Any:
                line = super()._read_request_line()
                self.connection.fresh = False
                return line

            # Without it, an unparsable request line is answered HTTP/0.9 style:
            # an error page with no status line.
            default_request_version = "HTTP/1.0"

            def _read_request_line(self) -> Any:
                try:
                    return super()._read_request_line()
                except ssl.SSLError as exc:  # a failed handshake: one line, not a green thread's traceback
                    peer = self.client_address[0] if isinstance(self.client_address, tuple) else "a peer"
                    logging.getLogger("anyserve.eventlet").warning(
                        "TLS handshake with %s failed: %s", peer, exc.reason or exc
                    )
                    self.close_connection = True
                    return ""

            def get_environ(self, _base: Any = eventlet.wsgi.HttpProtocol.get_environ) -> dict[str, object]:
                environ = _base(self)
                # eventlet always says HTTP/1.0, which makes apps (CherryPy's
                # among them) answer a 1.1 client as a 1.0 one.
                environ["SERVER_PROTOCOL"] = self.request_version
                # Its wsgi.input ends where the body ends, chunked or not; say so,
                # or an app cannot read a chunked upload (no CONTENT_LENGTH).
                environ["wsgi.input_terminated"] = True
                return environ

        pool = eventlet.GreenPool(settings.get("pool_size", DEFAULT_POOL))
        access_log = logging.getLogger("eventlet.wsgi")
        lifecycle.started()

        def green(listener: Listener) -> Any:
            sock = Socket(listener.socket.fd if isinstance(listener.socket, GreenSocket) else listener.socket)
            if listener.tls is None:
                return sock
            # Each accepted connection does its handshake in its own green thread, on first read.
            return listener.tls.context(GreenSSLContext).wrap_socket(sock, server_side=True)

        servers = [
            eventlet.spawn(
                eventlet.wsgi.server,
                green(listener),
                app,
                log=access_log,
                # eventlet formats each access line before logging it: skip the
                # work when the line would be dropped anyway.
                # With --access-log, anyserve's access log has the line.
                log_output=access_log.isEnabledFor(logging.INFO) and config.access_log is None,
                custom_pool=pool,
                protocol=Protocol,
                # eventlet holds back chunks under 4 KiB by default; PEP 3333 asks
                # that each block the app yields be sent without delay.
                minimum_chunk_size=0,
                keepalive=settings.get("keepalive", True),
                socket_timeout=settings.get("socket_timeout"),
                debug=False,  # no tracebacks to clients
                environ={"wsgi.multiprocess": config.workers > 1},
            )
            for listener in listeners
        ]
        ticker = eventlet.spawn(self._tick, lifecycle, config.main_interval) if lifecycle.wants_ticks else None
        try:
            trampoline(read_fd, read=True)  # until shutdown()
            stopping = True
            for server in servers:
                server.kill(SystemExit)  # eventlet's server then closes idle connections and waits for the rest
            try:
                with eventlet.Timeout(config.graceful_timeout):
                    for server in servers:
                        server.wait()
            except eventlet.Timeout:
                warn_requests_left(config.graceful_timeout, pool.running())
                for green in list(pool.coroutines_running):
                    green.kill()
        finally:
            if ticker is not None:
                ticker.kill()
            os.close(read_fd)
            os.close(self._wakeup_fd)
            lifecycle.stopping()

    @staticmethod
    def _tick(lifecycle: Lifecycle, interval: float) -> None:
        import eventlet

        while True:
            eventlet.sleep(interval)
            lifecycle.tick()

    def shutdown(self) -> None:
        self._stop_requested = True
        if self._wakeup_fd is not None:
            from eventlet.patcher import original

            try:
                # The unpatched write: a green one would switch inside a signal handler.
                original("os").write(self._wakeup_fd, b"x")
            except OSError:
                pass  # already closed: the server has stopped
