"""waitress: Pylons' pure-Python server, an asyncore loop plus a thread pool.

waitress has no graceful shutdown of its own; anyserve closes its listeners from
inside its loop, waits until no channel has a request in progress or output left
to send, then ends the loop.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from anyserve.config import to_bool, to_int, to_str
from anyserve.middleware import BODY_TOO_LARGE, TOO_LARGE_STATUS
from anyserve.sockets import Listener

from .base import Capabilities, Deviations, Option, WSGIApp
from .draining import POLL, Drain
from .threaded import ThreadedAdapter

DEFAULT_THREADS = 4


class WaitressAdapter(ThreadedAdapter):
    name = "waitress"
    requires = ("waitress",)
    module = "waitress"
    capabilities = Capabilities(
        default_threads=DEFAULT_THREADS,
        concurrency=f"event loop for I/O + thread pool of N for the app (--threads, default {DEFAULT_THREADS})",
        threads=True,
        unix=True,
    )
    app_may_close = False  # waitress refuses hop-by-hop headers from the app
    # waitress writes each response header name capitalized its own way (Www-Authenticate),
    # waits for a CRLF when a request's lines end in a bare LF, and its idle check
    # closes a channel without a word, whatever it received.
    deviations = Deviations(respelled_header_names=True, waits_on_bare_lf=True, silent_request_timeout=True)
    keep_alive_timeout_by = "waitress's channel_timeout (idle, and each read of a request)"
    loggers = ("waitress",)
    options = {
        "connection_limit": Option(to_int, "most simultaneous connections (default 100)"),
        "channel_timeout": Option(to_int, "seconds an idle connection stays open (default: --timeout-keep-alive)"),
        "cleanup_interval": Option(
            to_int, "seconds between checks for idle connections (default: --timeout-keep-alive / 4, at most 1)"
        ),
        "max_request_header_size": Option(to_int, "largest request head in bytes"),
        "max_request_body_size": Option(to_int, "largest request body in bytes"),
        "expose_tracebacks": Option(to_bool, "show tracebacks of app errors to the client"),
        "ident": Option(to_str, "the Server response header"),
        "url_scheme": Option(to_str, "wsgi.url_scheme (default http)"),
        "asyncore_use_poll": Option(to_bool, "use poll() instead of select()"),
        "outbuf_overflow": Option(to_int, "bytes of response buffered in memory before spilling to a file"),
        "inbuf_overflow": Option(to_int, "bytes of request buffered in memory before spilling to a file"),
    }

    def make_servers(self, app: WSGIApp, listeners: list[Listener]) -> list[Any]:
        from waitress.channel import HTTPChannel
        from waitress.server import BaseWSGIServer, create_server
        from waitress.task import ErrorTask
        from waitress.utilities import RequestEntityTooLarge

        class TooLarge(ErrorTask):  # type: ignore[misc]
            """waitress's own 413 for a body over --max-body-size, with anyserve's text."""

            def execute(self) -> None:
                if not isinstance(self.request.error, RequestEntityTooLarge):
                    return super().execute()
                body = BODY_TOO_LARGE.encode()
                self.status = TOO_LARGE_STATUS
                self.response_headers.append(("Content-Type", "text/plain"))
                self.set_close_on_finish()
                self.content_length = len(body)
                self.write(body)

        class Channel(HTTPChannel):  # type: ignore[misc]
            """Knows whether its client sent anything yet, so a graceful stop can
            wait for the request of a connection accepted just before it."""

            fresh = True
            error_task_class = TooLarge

            def received(self, data: bytes) -> bool:
                self.fresh = False
                return super().received(data)

        # waitress takes TCP or unix sockets, not both: one server per kind,
        # sharing one loop (the map) and one thread pool.
        self._map: dict[int, Any] = {}
        servers = []
        task_dispatcher = None
        for family in (False, True):
            sockets = [listener.socket for listener in listeners if listener.is_unix == family]
            if not sockets:
                continue
            server = create_server(
                app,
                map=self._map,
                _dispatcher=task_dispatcher,
                sockets=sockets,
                threads=self.config.threads or DEFAULT_THREADS,
                backlog=self.config.backlog,
                # waitress drops X-Forwarded-* and Forwarded from peers it does not
                # trust; with --proxy-headers anyserve decides which peers it trusts.
                **({"clear_untrusted_proxy_headers": False} if self.config.proxy_headers else {}),
                # waitress reads a whole body before the app runs: its own check
                # answers a body over --max-body-size with 413 as anyserve's would.
                # (waitress refuses a body of its limit or more; anyserve, one over it).
                **({"max_request_body_size": self.config.max_body_size + 1} if self.config.max_body_size else {}),
                **self.settings,
            )
            task_dispatcher = server.task_dispatcher
            self._close_idle_channels(server.adj)
            servers.append(server)
        for obj in self._map.values():
            if isinstance(obj, BaseWSGIServer):
                obj.channel_class = Channel
        return servers[:1]  # its loop serves the whole map, every listener of both kinds

    def _close_idle_channels(self, adj: Any) -> None:
        """--timeout-keep-alive as waitress's channel_timeout: a channel with no
        request under way and no byte read or written for that long closes. Its
        loop looks for them every cleanup_interval (30 s by default, and whole
        seconds only through its options): a quarter of the timeout here, so
        that one closes within a quarter of the timeout of its due time."""
        timeout = self.config.timeout_keep_alive
        check = min(timeout / 4, 1.0)
        if "channel_timeout" not in self.settings:
            adj.channel_timeout = timeout
        if "cleanup_interval" not in self.settings:
            adj.cleanup_interval = min(adj.cleanup_interval, check)
        adj.asyncore_loop_timeout = min(adj.asyncore_loop_timeout, check)  # how long its loop waits at most

    def run_server(self, server: Any) -> None:
        server.run()

    def stop_servers(self, servers: list[Any], drain: Drain) -> int:
        from waitress.channel import HTTPChannel
        from waitress.server import BaseWSGIServer
        from waitress.wasyncore import close_all, dispatcher

        listening = [obj for obj in tuple(self._map.values()) if isinstance(obj, BaseWSGIServer)]
        trigger = listening[0].trigger

        stopped_accepting = threading.Event()

        def stop_accepting() -> None:
            for server in listening:
                dispatcher.close(server)  # not BaseWSGIServer.close: that closes the trigger too
            stopped_accepting.set()

        trigger.pull_trigger(stop_accepting)
        # In the loop's thread: until then a connection it accepts is not counted below.
        stopped_accepting.wait(drain.remaining())
        task_dispatcher = listening[0].task_dispatcher

        def busy() -> int:
            channels = [obj for obj in tuple(self._map.values()) if isinstance(obj, HTTPChannel)]
            running = sum(1 for ch in channels if ch.requests or ch.request is not None or ch.total_outbufs_len)
            if drain.awaits_fresh():
                running += sum(1 for ch in channels if getattr(ch, "fresh", False))
            # A task a thread still services (its response written, the loop not
            # yet woken to send it) counts too: closing under it breaks its wake-up.
            return running + len(task_dispatcher.queue) + task_dispatcher.active_count

        while (left := busy()) and not drain.expired():
            time.sleep(POLL)
        try:
            trigger.pull_trigger(lambda: close_all(self._map))
        except OSError:  # waitress closed its trigger (a listener's error handler closes it too)
            close_all(self._map)
        task_dispatcher.shutdown(cancel_pending=True, timeout=drain.remaining())
        return left
