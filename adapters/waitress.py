"""waitress: Pylons' pure-Python server, an asyncore loop plus a thread pool.

waitress has no graceful shutdown of its own; anyserve closes its listeners from
inside its loop, waits until no channel has a request in progress or output left
to send, then ends the loop.

Where waitress departs from what the app asked for or HTTP/1.1 expects, its own
hooks (the channel's task and parser classes) put it right: response header
names go out as the app wrote them (waitress would send ``Www-Authenticate``); a
response of unknown length (chunked) or without a body (204, 304, HEAD) keeps
the connection open, and a HEAD of unknown length has nothing after its head
(waitress would send the end of a chunked body); ``Expect: 100-continue`` on a
request without a body is answered (waitress would wait for a body that never
comes); a request head ended by bare LFs gets a 400 (waitress would wait for a
CRLF until its channel timeout); and X-Forwarded-* headers reach the app as on
every server (--proxy-headers is anyserve's way to trust them).
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
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
    # Its idle check closes a channel without a word, whatever it received.
    deviations = Deviations(silent_request_timeout=True)
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

        class Channel(channel_class()):  # type: ignore[misc]
            error_task_class = TooLarge

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
                # waitress would drop X-Forwarded-* and Forwarded, which every other
                # server hands to the app; with --proxy-headers anyserve applies
                # them from the peers it trusts.
                clear_untrusted_proxy_headers=False,
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


def channel_class() -> type:
    """waitress's channel, with its task and parser put right (see the module's doc)."""
    from waitress.channel import HTTPChannel
    from waitress.parser import HTTPRequestParser
    from waitress.task import WSGITask
    from waitress.utilities import BadRequest

    class Task(WSGITask):  # type: ignore[misc]
        def build_response_header(self) -> bytes:
            # waitress writes each name as "-".join(part.capitalize()), then sorts
            # by it (stably): the names the app wrote replace them in that order.
            written: dict[str, deque[str]] = defaultdict(deque)
            for name, _ in self.response_headers:
                written["-".join(part.capitalize() for part in name.split("-"))].append(name)
            closing = self.close_on_finish
            head = super().build_response_header()
            # HTTP/1.1 frames a chunked body, and no body at all (204, 304, HEAD),
            # without closing the connection: waitress closes it after them where
            # the client did not ask for it, and after a HEAD of unknown length
            # it sends the end of a chunked body, read as the next response.
            head_only = self.request.command == "HEAD"
            unframed_head = head_only and self.chunked_response
            if unframed_head:
                self.chunked_response = False
            reopen = (
                self.close_on_finish
                and not closing
                and self.version == "1.1"
                and self.request.headers.get("CONNECTION", "").lower() != "close"
                and (self.chunked_response or not self.has_body or head_only)
            )
            status, *fields = head.decode("latin-1").removesuffix("\r\n\r\n").split("\r\n")
            kept = []
            for field in fields:
                name, _, value = field.partition(":")
                if reopen and name == "Connection":
                    continue  # the "close" waitress added
                if unframed_head and name == "Transfer-Encoding":
                    continue  # no body follows: nothing to frame
                kept.append(written[name].popleft() + ":" + value if written.get(name) else field)
            if reopen:
                self.close_on_finish = False
            return ("\r\n".join([status, *kept]) + "\r\n\r\n").encode("latin-1")

    class Parser(HTTPRequestParser):  # type: ignore[misc]
        def received(self, data: bytes) -> int:
            if self.body_rcv is None and not self.completed:
                head = self.header_plus + data
                bare, crlf = head.find(b"\n\n"), head.find(b"\r\n\r\n")
                if bare >= 0 and (crlf < 0 or bare < crlf):
                    self.parse_header(b"GET / HTTP/1.0\r\n")  # as waitress does for a head too large
                    self.error = BadRequest("HTTP requires CRLF terminators")
                    self.completed = True
                    return len(data)
            return super().received(data)

    class Channel(HTTPChannel):  # type: ignore[misc]
        """Knows whether its client sent anything yet, so a graceful stop can
        wait for the request of a connection accepted just before it."""

        task_class = Task
        parser_class = Parser
        fresh = True

        def received(self, data: bytes) -> bool:
            self.fresh = False
            return super().received(data)

        def send_continue(self) -> None:
            if self.request.completed:  # no body to come: waitress would wait for one
                self.request.expect_continue = False
                return
            super().send_continue()

    return Channel
