"""eventlet: ``eventlet.wsgi.server``, a green thread per connection.

eventlet is in maintenance mode upstream: its maintainers advise new projects
to choose something else. anyserve supports it for the apps that already run on
it. As with gevent, the standard library is monkey-patched first thing in the
process (``-o patch=false`` to opt out). On a stop eventlet's own server stops
accepting, closes the connections between two requests and has each busy one
close after its request; anyserve bounds that wait by --graceful-timeout.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from collections import deque
from collections.abc import Callable
from typing import Any

from anyserve.config import to_positive_int, to_seconds
from anyserve.lifecycle import Lifecycle
from anyserve.sockets import Listener
from anyserve.tls import handshake_failure

from .base import (
    BAD_HEADER_LINE,
    Capabilities,
    Deviations,
    Option,
    WSGIApp,
    drop_made_up_content_headers,
    header_lines_lost,
    join_repeated_headers,
)
from .draining import Drain
from .eventloop import Cancel, EventLoopAdapter, LoopServing
from .patching import PATCH_OPTION, MonkeyPatching

DEFAULT_POOL = 1024  # eventlet's own default

# eventlet warns on stderr, when first imported, that it is deprecated (with a
# stray line of importlib's source); this adapter's note in `anyserve list`
# says it where a user chooses a server.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated", category=Warning)


class _ServerLog:
    """What eventlet's server logs through: its logger, with the traceback of an
    app that raised (which eventlet logs at INFO) as an error, and without its
    line per request (formatted as ACCESS_LINE)."""

    ACCESS_LINE = "(a request)"

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger

    def info(self, msg: str, *args: Any, **kwargs: Any) -> None:
        if msg == self.ACCESS_LINE:
            return
        error = msg.startswith("Traceback (most recent call last)")
        self.logger.log(logging.ERROR if error else logging.INFO, "%s", msg.rstrip("\n"))

    def debug(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self.logger.debug("%s", msg)

    def error(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self.logger.error("%s", msg)


class EventletAdapter(MonkeyPatching, EventLoopAdapter):
    name = "eventlet"
    patching = ("eventlet", "monkey_patch")
    requires = ("eventlet",)
    module = "eventlet"
    capabilities = Capabilities(
        concurrency=f"green thread per connection (at most -o pool_size, default {DEFAULT_POOL}), stdlib patched",
        unix=True,
        tls=True,
        tls_mixed=True,
        background=False,  # serves from the main thread of a process anyserve owns
    )
    # Its server ends a connection whose read timed out without a word.
    deviations = Deviations(silent_request_timeout=True)
    loggers = ("eventlet",)
    options = {
        "pool_size": Option(to_positive_int, f"most connections served at once (default {DEFAULT_POOL})"),
        "patch": PATCH_OPTION,
        "keepalive": Option(
            to_seconds, "seconds to wait for the next request on a connection (default: --timeout-keep-alive)"
        ),
        "socket_timeout": Option(to_seconds, "timeout of client socket operations (default: --timeout-keep-alive)"),
    }
    keep_alive_timeout_by = "eventlet's keepalive and socket_timeout (idle, and each read of a request)"
    note = "maintenance mode upstream: supported for existing apps, not advised for new ones"

    def make_serving(self, app: WSGIApp, listeners: list[Listener], lifecycle: Lifecycle) -> LoopServing:
        return EventletServing(self, app, listeners, lifecycle)

    def run_loop(self, main: Callable[[], None]) -> None:
        import eventlet
        from eventlet.event import Event
        from eventlet.hubs import trampoline

        self._done = Event()
        self._calls: deque[Callable[[], object]] = deque()
        # call_threadsafe() may come from a signal handler or another thread: it
        # only writes to this pipe, and a green thread here does the rest.
        read_fd, self._wakeup_fd = os.pipe()

        def run_calls() -> None:
            while True:
                trampoline(read_fd, read=True)
                os.read(read_fd, 4096)
                while self._calls:
                    eventlet.spawn(self._calls.popleft())

        waker = eventlet.spawn(run_calls)
        try:
            main()
            self._done.wait()
        finally:
            waker.kill()
            os.close(read_fd)
            os.close(self._wakeup_fd)

    def stop_loop(self) -> None:
        if not self._done.ready():
            self._done.send()

    def call_threadsafe(self, function: Callable[[], object]) -> None:
        from eventlet.patcher import original

        self._calls.append(function)
        with contextlib.suppress(OSError):  # already closed: the loop is over
            # The unpatched write: a green one would switch inside a signal handler.
            original("os").write(self._wakeup_fd, b"x")

    def call_later(self, delay: float, function: Callable[[], object]) -> Cancel:
        import eventlet

        return eventlet.spawn_after(delay, function).cancel


class EventletServing(LoopServing):
    """The app served by eventlet's server, one green thread per listener."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        import eventlet

        self.pool = eventlet.GreenPool(self.adapter.settings.get("pool_size", DEFAULT_POOL))
        self._servers: list[Any] = []
        self.fresh_until: float | None = None  # set when the stop begins
        self._serve = self._make_servers()

    def _make_servers(self) -> list[tuple[Any, WSGIApp, dict[str, Any]]]:
        """What eventlet.wsgi.server takes, for each listener: its socket, the app, the settings."""
        import ssl

        import eventlet
        import eventlet.wsgi
        from eventlet.green.ssl import GreenSSLContext
        from eventlet.greenio import GreenSocket

        serving = self

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
                if self.fresh and serving.fresh_until is not None:
                    eventlet.spawn_after(max(0.0, serving.fresh_until - time.monotonic()), self._late_shutdown, how)
                    return
                self._shutdown_now(how)

            def _late_shutdown(self, how: int) -> None:
                if self.fresh:
                    with contextlib.suppress(OSError):
                        self._shutdown_now(how)

        class Protocol(eventlet.wsgi.HttpProtocol):
            # Without it, an unparsable request line is answered HTTP/0.9 style:
            # an error page with no status line.
            default_request_version = "HTTP/1.0"

            def log_message(self, format: str, *args: Any) -> None:
                # http.server writes a bad request's line to stderr itself.
                logging.getLogger("eventlet.wsgi").info("%s - %s", self.address_string(), format % args)

            def _read_request_line(self) -> Any:
                try:
                    line = super()._read_request_line()
                except ssl.SSLError as exc:  # a failed handshake: one line, not a green thread's traceback
                    logging.getLogger("anyserve.eventlet").warning("%s", handshake_failure(self.client_address, exc))
                    self.close_connection = True
                    return ""
                self.connection.fresh = False
                return line

            def parse_request(self) -> bool:
                if not super().parse_request():
                    return False
                if header_lines_lost(self.headers):
                    self.close_connection = True
                    self.send_error(400, BAD_HEADER_LINE)
                    return False
                return True

            def get_environ(self, _base: Any = eventlet.wsgi.HttpProtocol.get_environ) -> dict[str, object]:
                environ = _base(self)
                # eventlet always says HTTP/1.0, which makes apps (CherryPy's
                # among them) answer a 1.1 client as a 1.0 one.
                environ["SERVER_PROTOCOL"] = self.request_version
                # Its wsgi.input ends where the body ends, chunked or not; say so,
                # or an app cannot read a chunked upload (no CONTENT_LENGTH).
                environ["wsgi.input_terminated"] = True
                join_repeated_headers(environ, self.headers.items())
                drop_made_up_content_headers(environ, self.headers)
                return environ

        def green(listener: Listener) -> Any:
            # A duplicate: eventlet closes it when it stops, and TLS takes over the
            # socket it wraps; anyserve's listener stays whole until it closes it.
            sock = Socket(listener.socket.dup())
            if listener.tls is None:
                return sock
            # Each accepted connection does its handshake in its own green thread, on first read.
            return listener.tls.context(GreenSSLContext).wrap_socket(sock, server_side=True)

        settings = {
            "log": _ServerLog(logging.getLogger("eventlet.wsgi")),
            # Without log_output eventlet logs nothing at all, not even an app's
            # traceback: on, with its line per request dropped (Adapter.loggers).
            "log_output": True,
            "log_format": _ServerLog.ACCESS_LINE,
            "custom_pool": self.pool,
            "protocol": Protocol,
            # eventlet holds back chunks under 4 KiB by default; PEP 3333 asks
            # that each block the app yields be sent without delay.
            "minimum_chunk_size": 0,
            "keepalive": self.adapter.settings.get("keepalive", self.config.timeout_keep_alive),
            "socket_timeout": self.adapter.settings.get("socket_timeout", self.config.timeout_keep_alive),
            "debug": False,  # no tracebacks to clients
            # Header names go out as the app wrote them (eventlet would send Www-Authenticate).
            "capitalize_response_headers": False,
        }
        return [(green(listener), self.app, settings) for listener in self.listeners]

    def listen(self) -> None:
        import eventlet
        import eventlet.wsgi

        self._servers = [
            eventlet.spawn(eventlet.wsgi.server, sock, app, **settings) for sock, app, settings in self._serve
        ]

    def stop_accepting(self, drain: Drain) -> None:
        self.fresh_until = drain.fresh_until
        for server in self._servers:
            server.kill(SystemExit)  # eventlet's server then closes the idle connections

    def pending(self, drain: Drain) -> int:
        return self.pool.running()  # a green thread per connection, ending as it closes

    def running(self) -> int:
        return self.pool.running()

    def abort(self) -> None:
        for green in list(self.pool.coroutines_running):
            green.kill()
