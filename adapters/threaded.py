"""Servers whose serving loop is a blocking call: cheroot, waitress, wsgiref, werkzeug.

:class:`ThreadedAdapter` runs each server object in a thread of its own while
the calling thread waits for the stop, drives the Lifecycle (``tick`` from a
thread) and bounds the stop by the graceful timeout. A subclass makes the
server objects and says how to run and stop them. :class:`SocketServerAdapter`
does that for the standard library's socketserver, with a thread per
connection from a shared cap and a graceful drain.
"""

from __future__ import annotations

import contextlib
import socketserver
import threading
import time
from abc import abstractmethod
from typing import Any

from anyserve.lifecycle import Lifecycle
from anyserve.sockets import Listener

from .base import BAD_HEADER_LINE, Adapter, WSGIApp, header_lines_lost
from .draining import REQUEST_TIMEOUT, STOP_MARGIN, ConnectionTracker, Drain, StopRace, stop_within, wait_for


class ThreadedAdapter(Adapter):
    """Base for servers whose serving loop is a blocking call."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._race = StopRace()
        self._stopped = threading.Event()
        self._lifecycle: Lifecycle | None = None
        self._join_by: float | None = None  # when to stop waiting for the serving threads

    @abstractmethod
    def make_servers(self, app: WSGIApp, listeners: list[Listener]) -> list[Any]:
        """Server objects ready to serve on the listeners' sockets."""

    @abstractmethod
    def run_server(self, server: Any) -> None:
        """Serve until stopped; called in a thread of its own."""

    @abstractmethod
    def stop_servers(self, servers: list[Any], drain: Drain) -> int:
        """Stop accepting and let in-flight requests finish until ``drain.deadline``;
        return how many requests were still running."""

    def close_server(self, server: Any) -> None:
        """Release what the server holds once its loop has returned."""

    def discard_servers(self, servers: list[Any]) -> None:
        """Release servers whose loop never ran (a ``started`` hook failed)."""
        self.stop_servers(servers, Drain(0))
        for server in servers:
            self.close_server(server)

    def serve(self, app: WSGIApp, listeners: list[Listener], lifecycle: Lifecycle) -> None:
        self._lifecycle = lifecycle
        servers = self.make_servers(app, listeners)
        if not self._race.ready(servers):
            return
        try:
            lifecycle.started()
        except BaseException:
            # A start hook failed (a CherryPy start listener, say): nothing was
            # served, and the servers' own threads must not keep the process alive.
            self.discard_servers(servers)
            raise
        stop_ticks = lifecycle.start_tick_thread()
        threads = [
            threading.Thread(target=self.run_server, args=(server,), name=f"anyserve-{self.name}-{i}", daemon=True)
            for i, server in enumerate(servers)
        ]
        for thread in threads:
            thread.start()
        try:
            wait_for(self._stopped)
        finally:
            stop_ticks()
            lifecycle.stopping()
            # A serving thread may still be in a request cut short by the graceful
            # timeout (a server that serves in its accepting thread): not waited for.
            join_by = self._join_by or time.monotonic() + self.config.graceful_timeout + STOP_MARGIN
            for thread in threads:
                thread.join(max(0.0, join_by - time.monotonic()))
            for server in servers:
                self.close_server(server)

    def shutdown(self) -> None:
        first, servers = self._race.request()
        if first and servers is not None:
            # Draining blocks; shutdown() must not (it may run in a signal handler).
            threading.Thread(
                target=self._drain, args=(servers,), name=f"anyserve-{self.name}-drain", daemon=True
            ).start()

    def _drain(self, servers: list[Any]) -> None:
        drain = Drain(self.config.graceful_timeout)
        self._join_by = drain.deadline + STOP_MARGIN
        if servers and self._lifecycle is not None:
            name = f"anyserve-{self.name}-stop"
            drain.end(self._lifecycle, stop_within(lambda: self.stop_servers(servers, drain), drain.deadline, name))
        self._stopped.set()


class SocketServerAdapter(ThreadedAdapter):
    """Base for servers built on the standard library's socketserver: one server
    per listener, a thread per connection from a shared cap, a graceful drain."""

    def run_server(self, server: Any) -> None:
        # Non-blocking: when worker processes share the listener, the one that
        # loses the race for a connection must go back to waiting, not block
        # in accept() (socketserver ignores the BlockingIOError).
        server.socket.setblocking(False)
        server.serve_forever(poll_interval=0.5)

    def stop_servers(self, servers: list[Any], drain: Drain) -> int:
        for server in servers:
            server.shutdown()  # returns once serve_forever has stopped accepting
        return sum(server.drain(drain) for server in servers)

    def close_server(self, server: Any) -> None:
        server.server_close()

    def discard_servers(self, servers: list[Any]) -> None:
        # shutdown() would wait for a serve_forever() that never ran.
        for server in servers:
            self.close_server(server)


class DrainingServerMixIn(socketserver.ThreadingMixIn):
    """Thread per connection, at most *max_threads* at once, with a graceful drain;
    or, *inline*, one connection at a time in the accepting thread.

    socketserver either abandons its threads at exit (daemon threads) or joins them
    with no bound, and an idle keep-alive connection blocks that join forever. Here
    a ConnectionTracker knows the idle connections; a drain closes them at once and
    gives the busy ones until a deadline."""

    daemon_threads = True  # joined by drain() with a deadline instead
    block_on_close = False

    def init_draining(
        self, slots: threading.BoundedSemaphore | None, *, inline: bool = False, timeout: float | None = None
    ) -> None:
        """*timeout*: --timeout-keep-alive, as each connection's socket timeout
        (socketserver's servers have no idle timeout of their own)."""
        self._slots = slots
        self._inline = inline
        self.connections = ConnectionTracker(timeout=timeout)
        self._workers: set[threading.Thread] = set()
        self._workers_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        if not isinstance(client_address, tuple):  # unix socket peers have no address
            client_address = ("", 0)
        if self._inline:
            # As socketserver's servers without ThreadingMixIn: no thread to start
            # per connection; shutdown() returns once this request is answered.
            socketserver.BaseServer.process_request(self, request, client_address)  # type: ignore[arg-type]
            return
        if self._slots is not None:
            self._slots.acquire()
        thread = threading.Thread(target=self._run_request, args=(request, client_address), daemon=True)
        with self._workers_lock:
            self._workers.add(thread)
        thread.start()

    def _run_request(self, request: Any, client_address: Any) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            with self._workers_lock:
                self._workers.discard(threading.current_thread())
            if self._slots is not None:
                self._slots.release()

    def drain(self, drain: Drain) -> int:
        """Close idle connections, wait for busy ones until the deadline; return
        how many were still running."""
        self.connections.drain(drain)
        while True:
            with self._workers_lock:
                workers = list(self._workers)
            if not workers:
                return 0
            if drain.expired():
                return len(workers)
            workers[0].join(min(drain.remaining(), 0.1))


class DrainingHandlerMixIn:
    """For BaseHTTPRequestHandler subclasses served by a DrainingServerMixIn."""

    server: Any
    connection: Any
    close_connection: bool
    # http.server answers a request line it cannot parse as HTTP/0.9 would: an
    # error page with no status line, which no client today reads as a 400.
    default_request_version = "HTTP/1.0"

    def setup(self) -> None:
        super().setup()  # type: ignore[misc]
        self.server.connections.accepted(self.connection)

    def handle(self) -> None:
        try:
            super().handle()  # type: ignore[misc]
        except TimeoutError:
            # The client sent nothing (or stopped in the middle of its request) for
            # --timeout-keep-alive: the connection closes, with a 408 unless it was
            # idle between two requests.
            self.close_connection = True
            if not self.server.connections.is_idle(self.connection):
                with contextlib.suppress(OSError):
                    self.connection.sendall(REQUEST_TIMEOUT)

    def handle_one_request(self) -> None:
        connections = self.server.connections
        if connections.draining and not connections.is_fresh(self.connection):
            self.close_connection = True
            return
        connections.waiting(self.connection)
        super().handle_one_request()  # type: ignore[misc]

    def parse_request(self) -> bool:
        # Called right after the request line is read: the connection is busy now.
        self.server.connections.mark(self.connection, True)
        if not super().parse_request():  # type: ignore[misc]
            return False
        if header_lines_lost(self.headers):  # type: ignore[attr-defined]
            self.close_connection = True
            self.send_error(400, BAD_HEADER_LINE)  # type: ignore[attr-defined]
            return False
        return True

    def finish(self) -> None:
        try:
            super().finish()  # type: ignore[misc]
        finally:
            self.server.connections.forget(self.connection)
