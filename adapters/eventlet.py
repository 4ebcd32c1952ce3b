"""eventlet: ``eventlet.wsgi.server``, a green thread per connection.

eventlet is in maintenance mode upstream: its maintainers advise new projects
to choose something else. anyserve supports it for the apps that already run on
it. As with gevent, the standard library is monkey-patched first thing in the
process (``-o patch=false`` to opt out). On shutdown eventlet's own server stops
accepting, closes idle connections and waits for the busy ones; anyserve bounds
that wait by --graceful-timeout.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from anyserve.config import Config, to_bool, to_positive_int, to_seconds
from anyserve.lifecycle import Lifecycle
from anyserve.sockets import Listener

from .base import Adapter, Capabilities, Option, WSGIApp, monkey_patch_first, warn_requests_left

DEFAULT_POOL = 1024  # eventlet's own default


class EventletAdapter(Adapter):
    name = "eventlet"
    requires = ("eventlet",)
    module = "eventlet"
    capabilities = Capabilities(
        concurrency=f"green thread per connection (at most -o pool_size, default {DEFAULT_POOL}), stdlib patched",
        unix=True,
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
            import eventlet

            monkey_patch_first("eventlet", eventlet.monkey_patch)

    def __init__(self) -> None:
        self._wakeup_fd: int | None = None
        self._stop_requested = False

    def serve(self, app: WSGIApp, listeners: list[Listener], config: Config, lifecycle: Lifecycle) -> None:
        import eventlet
        import eventlet.wsgi
        from eventlet.greenio import GreenSocket
        from eventlet.hubs import trampoline

        settings = self.check(config)
        # shutdown() may come from a signal handler or another thread: it only
        # writes to this pipe, and a green thread here does the rest.
        read_fd, self._wakeup_fd = os.pipe()
        if self._stop_requested:
            os.close(read_fd)
            return

        class Protocol(eventlet.wsgi.HttpProtocol):
            # Without it, an unparsable request line is answered HTTP/0.9 style:
            # an error page with no status line.
            default_request_version = "HTTP/1.0"

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
        servers = [
            eventlet.spawn(
                eventlet.wsgi.server,
                listener.socket if isinstance(listener.socket, GreenSocket) else GreenSocket(listener.socket),
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
