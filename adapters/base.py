"""The Adapter contract, its Capabilities, and pieces shared by several adapters.

An adapter declares; it does not decide. It never parses argv, never binds a
socket and never imports a server at module level: the server is imported inside
``serve()``, so a missing server costs nothing until it is chosen.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import logging
import socket
import socketserver
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from anyserve.config import Config
from anyserve.errors import ServerError
from anyserve.lifecycle import Lifecycle
from anyserve.sockets import Listener

WSGIApp = Callable[..., Any]


@dataclass(frozen=True)
class Capabilities:
    """What a server can do, known without starting or importing it."""

    #: How requests run, in the user's words ("thread pool of N (default 10)").
    concurrency: str
    concurrent: bool = True  # serves several requests at once, even when the app blocks
    threads: bool = False  # honours --threads
    workers: bool = False  # has its own worker processes (--workers)
    unix: bool = False  # serves on unix sockets
    fd: bool = True  # serves on inherited descriptors (fd://N, systemd)
    tls: bool = False  # serves HTTPS (--certfile, --ssl-adhoc)
    tls_mixed: bool = False  # serves HTTP and HTTPS listeners at once (--tls-bind)
    embed: bool = False  # can run inside a loop it does not own
    background: bool = True  # can serve from a background thread (anyserve.serving)
    keep_alive: bool = True  # keeps HTTP/1.1 connections open between requests
    chunked_request: bool = True  # decodes Transfer-Encoding: chunked request bodies
    repeated_headers: bool = True  # joins a repeated request header's values with commas
    head_without_body: bool = False  # drops the app's body from a HEAD response itself
    checks_http_version: bool = True  # answers a request line naming no HTTP/1.x version with a 4xx
    http2: bool = False

    def flags(self) -> list[str]:
        """Names of the boolean capabilities that are true, for `anyserve list`."""
        return [f.name for f in fields(self) if f.type in ("bool", bool) and getattr(self, f.name)]


@dataclass(frozen=True)
class Option:
    """A server-specific setting given with ``-o KEY=VALUE``."""

    convert: Callable[[Any], Any]
    help: str


class Adapter(ABC):
    """One server. Subclasses set the class attributes and implement serve/shutdown."""

    #: The name users pass to ``-s``.
    name: ClassVar[str]
    #: Distributions the server needs; the first one gives the version shown.
    requires: ClassVar[tuple[str, ...]] = ()
    #: The top-level module that must be importable for the server to be installed.
    module: ClassVar[str]
    #: The extra that installs it: ``pip install anyserve[EXTRA]``.
    extra: ClassVar[str | None] = None
    capabilities: ClassVar[Capabilities]
    #: Settings accepted with ``-o KEY=VALUE``.
    options: ClassVar[Mapping[str, Option]] = {}
    #: A note shown by ``anyserve list`` (e.g. "development server").
    note: ClassVar[str] = ""
    #: True for the adapter whose server is run by the CherryPy engine itself (-s cherrypy).
    runs_cherrypy_engine: ClassVar[bool] = False

    # -- what it is, known without importing the server -------------------------

    @classmethod
    def is_installed(cls) -> bool:
        return importlib.util.find_spec(cls.module) is not None

    @classmethod
    def version(cls) -> str | None:
        if not cls.requires:
            return None
        try:
            return importlib.metadata.version(cls.requires[0])
        except importlib.metadata.PackageNotFoundError:
            return None

    @classmethod
    def environ_flags(cls, config: Config) -> dict[str, Any]:
        """WSGI environ values anyserve sets on every request where the server's own
        would be wrong: ``wsgi.multiprocess`` when several processes serve the app
        (anyserve's supervisor forks workers the server knows nothing of)."""
        return {"wsgi.multiprocess": True} if config.workers > 1 else {}

    @classmethod
    def install_hint(cls) -> str:
        return f"pip install 'anyserve[{cls.extra or cls.name}]'"

    @classmethod
    def check(cls, config: Config, listeners: list[Listener] | None = None) -> dict[str, Any]:
        """Refuse what this server cannot honour; return its converted ``-o`` settings.

        Runs before anything starts. *listeners*, when given, are checked too."""
        caps = cls.capabilities
        if config.threads is not None and not caps.threads:
            raise ServerError(f"{cls.name} cannot honour --threads: {caps.concurrency}; drop --threads")
        kinds = [spec for spec in config.listen]
        if listeners is not None:
            kinds = [listener.spec if not listener.is_unix else "unix:" for listener in listeners]
        if not caps.unix and any(spec.startswith("unix:") for spec in kinds):
            raise ServerError(f"{cls.name} cannot serve on a unix socket; use {_servers_with('unix', cls.name)}")
        if not caps.fd and any(spec.startswith(("fd://", "systemd:")) for spec in kinds):
            raise ServerError(
                f"{cls.name} cannot serve on an inherited descriptor; use {_servers_with('fd', cls.name)}"
            )
        if config.tls:
            cls.check_tls(config, listeners)
        return cls.parse_options(config.options)

    @classmethod
    def check_tls(cls, config: Config, listeners: list[Listener] | None = None) -> None:
        """Refuse TLS, or TLS on some listeners only, when the server cannot serve it."""
        caps = cls.capabilities
        if not caps.tls:
            raise ServerError(f"{cls.name} cannot serve TLS; use {_servers_with('tls', cls.name)}")
        if listeners is not None:
            mixed = len({listener.tls is None for listener in listeners}) > 1
        else:
            mixed = config.tls_mixed
        if mixed and not caps.tls_mixed:
            raise ServerError(
                f"{cls.name} serves TLS on all its listeners or on none, so it cannot mix HTTP and HTTPS "
                f"listeners (--tls-bind); run one anyserve per scheme, or use {_servers_with('tls_mixed', cls.name)}"
            )

    @classmethod
    def prepare_process(cls, config: Config) -> None:
        """Called first thing in a process that anyserve owns and serves from,
        before the app is imported (gevent's monkey-patching goes here); not
        called when serving from a background thread of someone else's program."""
        return None

    @classmethod
    def parse_options(cls, raw: Mapping[str, Any]) -> dict[str, Any]:
        settings: dict[str, Any] = {}
        for key, value in raw.items():
            name = key.replace("-", "_")
            spec = cls.options.get(name)
            if spec is None:
                known = ", ".join(sorted(cls.options)) or "none"
                raise ServerError(f"unknown option -o {key} for server {cls.name}; it accepts: {known}")
            try:
                settings[name] = spec.convert(value)
            except ValueError as exc:
                raise ServerError(f"invalid value for -o {key}={value} (server {cls.name}): {exc}") from None
        return settings

    # -- serving -----------------------------------------------------------------

    @abstractmethod
    def serve(self, app: WSGIApp, listeners: list[Listener], config: Config, lifecycle: Lifecycle) -> None:
        """Serve *app* on the bound *listeners* until :meth:`shutdown`; block until then.

        Calls ``lifecycle.started()`` once ready to take requests, drives ``tick``
        and calls ``lifecycle.stopping()`` when shutdown begins."""

    def embed(self, app: WSGIApp, listeners: list[Listener], config: Config, lifecycle: Lifecycle) -> Any:
        """Serve from the loop the caller runs (capability ``embed``) and return at once.

        Returns an object whose ``stop()`` begins the graceful stop and returns what
        that loop waits on (an asyncio future, a Deferred), or blocks the calling
        greenlet until done."""
        raise ServerError(f"{self.name} cannot be embedded in a loop you run; use {_servers_with('embed', self.name)}")

    @abstractmethod
    def shutdown(self) -> None:
        """Begin a graceful stop and return at once: stop accepting, let in-flight
        requests finish (up to the graceful timeout), then make :meth:`serve` return.
        Safe to call from any thread or a signal handler, and more than once."""

    def reopen_logs(self) -> None:
        """On SIGUSR1, in anyserve's process: have the server's own worker processes
        reopen their log files too (anyserve's process reopens its own)."""
        return None

    def restart(self) -> bool:
        """On SIGHUP: begin replacing the server's worker processes gracefully and
        return at once; False when it has none that anyserve's signal reaches."""
        return False


#: Modules whose blocking calls a green-thread server's monkey-patching must
#: catch; imported before patching, code holding references to them still blocks.
PATCH_SENSITIVE = ("ssl", "urllib3", "requests", "httpx", "psycopg2", "pymysql", "redis", "grpc", "concurrent.futures")


def monkey_patch_first(server: str, module: str, function: str) -> None:
    """Patch the standard library for a green-thread server (``module.function()``),
    and warn about the modules imported before, which may still block the whole
    process. Those the server's own package imports are not counted."""
    early = [name for name in PATCH_SENSITIVE if name in sys.modules]
    getattr(importlib.import_module(module), function)()
    if early:
        logging.getLogger(f"anyserve.{server}").warning(
            "modules imported before %s's monkey-patching may still block: %s "
            "(import them after anyserve starts, e.g. inside the app module)",
            server,
            ", ".join(early),
        )


#: How long past the graceful timeout a server may take to let go of the requests
#: it cut short (closing their connections) before anyserve stops waiting for it.
STOP_MARGIN = 1.0


_requests_cut = threading.Event()


def requests_were_cut() -> bool:
    """Whether a graceful stop in this process ended with requests still running."""
    return _requests_cut.is_set()


def warn_requests_left(graceful_timeout: float, left: int | None) -> None:
    """Log, once the graceful timeout is over, how many requests it cut short
    (*left* None: some, the server does not say how many)."""
    if left != 0:
        _requests_cut.set()
    if left is None:
        logging.getLogger("anyserve").warning(
            "graceful timeout (%ss) reached with requests still running; they are cut short", graceful_timeout
        )
    elif left:
        logging.getLogger("anyserve").warning(
            "graceful timeout (%ss) reached with %d request(s) still running", graceful_timeout, left
        )


def stop_within(stop: Callable[[], int], deadline: float, name: str) -> int | None:
    """Run *stop* (it returns how many requests it left running) in a thread named
    *name*; return its result, or None if it still runs at *deadline* +
    STOP_MARGIN. Some servers wait for every request however long it runs
    (cheroot joins its workers; socketserver waits for the request it serves in
    its accepting thread): past the graceful timeout, anyserve stops waiting."""
    left: list[int] = []
    stopper = threading.Thread(target=lambda: left.append(stop()), name=name, daemon=True)
    stopper.start()
    stopper.join(max(0.0, deadline + STOP_MARGIN - time.monotonic()))
    return left[0] if left else None


def wait_for(event: threading.Event) -> None:
    """Wait for *event* so that signal handlers still run. The kernel may hand a
    signal to any thread; its Python handler then runs only once the main thread
    runs Python code, which a wait without a timeout never does."""
    while not event.wait(0.2):
        pass


def _servers_with(capability: str, besides: str) -> str:
    from anyserve.registry import servers_with  # late: the registry imports adapters

    names = [name for name in servers_with(capability) if name != besides]
    return ", ".join(f"-s {name}" for name in names) if names else "another server"


# -- socketserver-based servers (wsgiref, werkzeug) -------------------------------


#: On a graceful stop, how long a connection accepted just before it may take to
#: send its first request. Its client has done nothing wrong: with several
#: workers on one listener, the one about to stop may be the one that accepted.
FIRST_REQUEST_GRACE = 2.0


class ConnectionTracker:
    """Which connections wait for their first request (fresh), wait for another
    (idle) or serve one (busy).

    A drain closes the idle ones at once, so a keep-alive client does not hold
    up shutdown, gives the fresh ones FIRST_REQUEST_GRACE seconds for their
    request to come, and leaves the busy ones to finish their request."""

    def __init__(self) -> None:
        self._conns: dict[Any, str] = {}  # connection -> fresh, idle or busy
        self._lock = threading.Lock()
        self.draining = False

    def accepted(self, conn: Any) -> None:
        with self._lock:
            self._conns[conn] = "fresh"

    def is_fresh(self, conn: Any) -> bool:
        return self._conns.get(conn, "fresh") == "fresh"

    def waiting(self, conn: Any) -> None:
        """The connection waits for a request: its first, or another (idle)."""
        if not self.is_fresh(conn):
            self.mark(conn, busy=False)

    def mark(self, conn: Any, busy: bool) -> None:
        with self._lock:
            self._conns[conn] = "busy" if busy else "idle"
            if self.draining and not busy:
                _close_connection(conn)

    def forget(self, conn: Any) -> None:
        with self._lock:
            self._conns.pop(conn, None)

    def close(self, conn: Any) -> None:
        """Shut a connection down, waking whoever reads it."""
        _close_connection(conn)

    def drain(self) -> None:
        """From now on no connection waits for another request."""
        with self._lock:
            self.draining = True
            fresh = []
            for conn, state in self._conns.items():
                if state == "idle":
                    _close_connection(conn)
                elif state == "fresh":
                    fresh.append(conn)
        if fresh:
            timer = threading.Timer(FIRST_REQUEST_GRACE, self._close_if_fresh, [fresh])
            timer.daemon = True
            timer.start()

    def _close_if_fresh(self, conns: list[Any]) -> None:
        with self._lock:
            for conn in conns:
                if self._conns.get(conn) == "fresh":
                    _close_connection(conn)


def _close_connection(conn: Any) -> None:
    try:
        conn.shutdown(socket.SHUT_RDWR)  # wakes the reader blocked on it
    except OSError:
        pass


class DrainingServerMixIn(socketserver.ThreadingMixIn):
    """Thread per connection, at most *max_threads* at once, with a graceful drain;
    or, *inline*, one connection at a time in the accepting thread.

    socketserver either abandons its threads at exit (daemon threads) or joins them
    with no bound, and an idle keep-alive connection blocks that join forever. Here
    a ConnectionTracker knows the idle connections; a drain closes them at once and
    gives the busy ones until a deadline."""

    daemon_threads = True  # joined by drain() with a deadline instead
    block_on_close = False

    def init_draining(self, slots: threading.BoundedSemaphore | None, *, inline: bool = False) -> None:
        self._slots = slots
        self._inline = inline
        self.connections = ConnectionTracker()
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

    def drain(self, deadline: float) -> int:
        """Close idle connections, wait for busy ones until *deadline* (monotonic);
        return how many were still running."""
        self.connections.drain()
        while True:
            with self._workers_lock:
                workers = list(self._workers)
            if not workers:
                return 0
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return len(workers)
            workers[0].join(min(remaining, 0.1))


class DrainingHandlerMixIn:
    """For BaseHTTPRequestHandler subclasses served by a DrainingServerMixIn."""

    server: Any
    connection: socket.socket
    close_connection: bool
    # http.server answers a request line it cannot parse as HTTP/0.9 would: an
    # error page with no status line, which no client today reads as a 400.
    default_request_version = "HTTP/1.0"

    def setup(self) -> None:
        super().setup()  # type: ignore[misc]
        self.server.connections.accepted(self.connection)

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
        return super().parse_request()  # type: ignore[misc]

    def finish(self) -> None:
        try:
            super().finish()  # type: ignore[misc]
        finally:
            self.server.connections.forget(self.connection)


class ThreadedAdapter(Adapter):
    """Base for servers whose serving loop is a blocking call: each server object
    runs in a thread of its own while the calling thread waits for shutdown, then
    runs the ``stopping`` moment. Subclasses make the server objects and say how
    to run and stop them."""

    def __init__(self) -> None:
        self._servers: list[Any] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._shutting_down = False
        self._graceful_timeout = 30.0
        self._join_by: float | None = None  # when to stop waiting for the serving threads

    @abstractmethod
    def make_servers(self, app: WSGIApp, listeners: list[Listener], config: Config) -> list[Any]:
        """Server objects ready to serve on the listeners' sockets."""

    @abstractmethod
    def run_server(self, server: Any) -> None:
        """Serve until stopped; called in a thread of its own."""

    @abstractmethod
    def stop_servers(self, servers: list[Any], deadline: float) -> int:
        """Stop accepting and let in-flight requests finish until *deadline*
        (time.monotonic); return how many requests were still running."""

    def close_server(self, server: Any) -> None:
        """Release what the server holds once its loop has returned."""

    def serve(self, app: WSGIApp, listeners: list[Listener], config: Config, lifecycle: Lifecycle) -> None:
        self._graceful_timeout = config.graceful_timeout
        servers = self.make_servers(app, listeners, config)
        with self._lock:
            if self._shutting_down:
                return
            self._servers = servers
        lifecycle.started()
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
            join_by = self._join_by or time.monotonic() + self._graceful_timeout + STOP_MARGIN
            for thread in threads:
                thread.join(max(0.0, join_by - time.monotonic()))
            for server in servers:
                self.close_server(server)

    def shutdown(self) -> None:
        with self._lock:
            if self._shutting_down:
                return
            self._shutting_down = True
        # Draining blocks; shutdown() must not (it may run in a signal handler).
        threading.Thread(target=self._drain, name=f"anyserve-{self.name}-drain", daemon=True).start()

    def _drain(self) -> None:
        with self._lock:
            servers = self._servers
        deadline = time.monotonic() + self._graceful_timeout
        self._join_by = deadline + STOP_MARGIN
        if servers:
            left = stop_within(lambda: self.stop_servers(servers, deadline), deadline, f"anyserve-{self.name}-stop")
            warn_requests_left(self._graceful_timeout, left)
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

    def stop_servers(self, servers: list[Any], deadline: float) -> int:
        for server in servers:
            server.shutdown()  # returns once serve_forever has stopped accepting
        return sum(server.drain(deadline) for server in servers)

    def close_server(self, server: Any) -> None:
        server.server_close()
