"""Serve one app: choose the adapter, load the app, bind, serve, stop gracefully."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from .apps import load_site, wrap
from .cherrypy_bridge import bridge_for
from .config import Config
from .errors import AnyserveError, ConfigError
from .lifecycle import Lifecycle
from .loader import add_app_dir, load_callable
from .logs import configure_logging, reopen_log_files_soon
from .registry import choose_adapter
from .sockets import Listener, bind_listeners

if TYPE_CHECKING:
    from anyserve.adapters.base import Adapter

log = logging.getLogger("anyserve")

#: Set in the serving process to "NAME VERSION" so an app can tell what serves it.
SERVING_ENV = "ANYSERVE_SERVING"


class Server:
    """One app on one server in this process: bind, serve, stop.

    ``serve()`` blocks; ``start()`` serves from a background thread and returns
    once the server takes requests; ``stop()`` shuts down gracefully."""

    def __init__(self, config: Config, app: Any = None, *, owns_process: bool = False) -> None:
        self.config = config
        add_app_dir(config.app_dir)
        self.adapter_class: type[Adapter] = choose_adapter(config)
        if owns_process:
            self.adapter_class.prepare_process(config)
        site = load_site(config, app if app is not None else config.app)
        self.bridge = bridge_for(site.main_app(), config, native=self.adapter_class.runs_cherrypy_engine)
        if self.bridge is not None:
            self.bridge.prepare()
            address = self.bridge.bind_address()
            if address and not any(config.is_set(name) for name in ("bind", "host", "port")):
                self.config = config = config.replace(host=address[0], port=address[1])
        self.app = wrap(site.app, config, head_without_body=self.adapter_class.capabilities.head_without_body)
        self.lifecycle = self._make_lifecycle(config)
        self.adapter: Adapter = self.adapter_class()
        self.listeners: list[Listener] = []
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def _make_lifecycle(self, config: Config) -> Lifecycle:
        lifecycle = Lifecycle(config.main_interval)
        # Subscribed first, the engine starts before the user's start hooks and
        # exits after their stop hooks.
        if self.bridge is not None:
            self.bridge.subscribe(lifecycle)
        for hook in config.on_start:
            lifecycle.subscribe("started", load_callable(hook, "--on-start hook"))
        for hook in config.on_stop:
            lifecycle.subscribe("stopping", load_callable(hook, "--on-stop hook"))
        return lifecycle

    @property
    def name(self) -> str:
        return self.adapter_class.name

    @property
    def urls(self) -> list[str]:
        """Where the server listens, with the real port when 0 was asked for."""
        return [listener.url() for listener in self.listeners]

    @property
    def url(self) -> str:
        return self.urls[0]

    def bind(self) -> None:
        if not self.listeners:
            config = self.config
            self.listeners = bind_listeners(config.listen, backlog=config.backlog, uds_mode=config.uds_mode)
            self.adapter_class.check(self.config, self.listeners)

    def serve(self) -> None:
        """Serve until :meth:`stop`; then close the listeners."""
        self.bind()
        self.announce()
        try:
            self.adapter.serve(self.app, self.listeners, self.config, self.lifecycle)
        finally:
            self.close()

    def announce(self) -> None:
        """Say where it listens, as the last start hook: once printed, requests are answered."""
        version = self.adapter_class.version()
        described = f"{self.name} {version}" if version else self.name
        os.environ[SERVING_ENV] = described
        workers = self.config.workers

        def announce() -> None:
            for url in self.urls:
                log.info("Listening on %s (%s, %d worker%s)", url, described, workers, "" if workers == 1 else "s")

        self.lifecycle.subscribe("started", announce)

    def start(self, timeout: float = 30.0) -> Server:
        """Serve from a background thread; return once requests are taken."""
        if not self.adapter_class.capabilities.background:
            raise AnyserveError(f"{self.name} cannot serve from a background thread")
        self.bind()

        def run() -> None:
            try:
                self.serve()
            except BaseException as exc:  # reported by start() or stop()
                self._error = exc
                self.lifecycle.ready.set()

        self._thread = threading.Thread(target=run, name=f"anyserve-{self.name}", daemon=True)
        self._thread.start()
        if not self.lifecycle.ready.wait(timeout):
            raise AnyserveError(f"{self.name} did not start within {timeout} s")
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        """Stop accepting, let in-flight requests finish, and wait for the end."""
        self.adapter.shutdown()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def close(self) -> None:
        for listener in self.listeners:
            listener.close()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def serve_until_signalled(server: Server) -> None:
    """Serve in this (main) thread; TERM and INT stop gracefully, a second INT at once,
    USR1 reopens the log files (after logrotate moved them)."""
    stopping = threading.Event()

    def handle(signum: int, frame: object) -> None:
        if stopping.is_set():
            if signum == signal.SIGINT:
                log.warning("Second interrupt: exiting without waiting for requests")
                os._exit(1)
            return
        stopping.set()
        log.info(
            "Received %s: stopping gracefully (in-flight requests have %ss)",
            signal.Signals(signum).name,
            server.config.graceful_timeout,
        )
        server.adapter.shutdown()  # returns at once; serve() returns once drained

    def hang_up(signum: int, frame: object) -> None:
        log.warning("Received SIGHUP: a single serving process has nothing to restart gracefully; ignored")

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, hang_up)
    previous[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, lambda signum, frame: reopen_log_files_soon())
    try:
        server.serve()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("Stopped")


def run(app: Any = None, **options: Any) -> None:
    """Serve *app* (a WSGI callable or an APP string) until TERM/INT; blocks.

    *options* are the options of ``anyserve --help`` by their Python names
    (``server="cheroot"``, ``bind=["127.0.0.1:8000"]``, ``threads=8``...)."""
    config = Config.load(kwargs=_with_app(app, options))
    refuse_process_options(config, "anyserve.run()")
    configure_logging(
        config.log_level, error_log=config.error_log, access_log=config.access_log, log_config=config.log_config
    )
    in_main_thread = threading.current_thread() is threading.main_thread()
    server = Server(config, owns_process=in_main_thread)
    if in_main_thread:
        serve_until_signalled(server)
    else:
        server.serve()


@contextmanager
def serving(app: Any = None, **options: Any) -> Iterator[Server]:
    """Serve *app* from a background thread for the duration of a ``with`` block.

    ``with anyserve.serving(app, server="cheroot", bind="127.0.0.1:0") as srv:``
    then ``srv.url`` is where it listens."""
    options.setdefault("bind", ["127.0.0.1:0"])
    config = Config.load(kwargs=_with_app(app, options))
    refuse_process_options(config, "anyserve.serving()")
    server = Server(config)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class Embedded:
    """A server started inside a loop the caller runs; see :func:`embed`."""

    def __init__(self, server: Server, handle: Any) -> None:
        self.server = server
        self._handle = handle

    @property
    def urls(self) -> list[str]:
        return self.server.urls

    @property
    def url(self) -> str:
        return self.server.url

    def stop(self) -> Any:
        """Begin the graceful stop: stop accepting, let requests in flight finish,
        run the ``stopping`` hooks (CherryPy's engine exits). Returns what the
        host loop waits on: an asyncio future (tornado), a Deferred (twisted);
        under gevent it blocks the calling greenlet and returns None."""
        result = self._handle.stop()
        for attribute in ("add_done_callback", "addBoth"):  # asyncio future, Deferred
            if hasattr(result, attribute):
                getattr(result, attribute)(lambda outcome: self._closed(outcome))
                return result
        self.server.close()
        return result

    def _closed(self, outcome: Any) -> Any:
        self.server.close()
        return outcome


def embed(app: Any = None, **options: Any) -> Embedded:
    """Serve *app* from inside a loop the caller already runs, and return at once.

    Call it from that loop: a running asyncio loop or Tornado IOLoop
    (``server="tornado"``), a running Twisted reactor (``server="twisted"``), a
    gevent hub (``server="gevent"``). The Lifecycle, and so CherryPy's engine,
    is driven from that loop; ``stop()`` ends the serving and leaves the loop
    running. For a background thread instead, see :func:`serving`."""
    options.setdefault("bind", ["127.0.0.1:0"])
    config = Config.load(kwargs=_with_app(app, options))
    refuse_process_options(config, "anyserve.embed()")
    server = Server(config)
    if not server.adapter_class.capabilities.embed:
        server.adapter.embed(server.app, [], config, server.lifecycle)  # raises the refusal
    server.bind()
    server.announce()
    handle = server.adapter.embed(server.app, server.listeners, config, server.lifecycle)
    return Embedded(server, handle)


#: Options of the ``anyserve`` command's own process, which the Python API leaves to its caller.
PROCESS_OPTIONS = ("daemon", "pid", "user", "group", "umask", "require_non_root")


def refuse_process_options(config: Config, api: str) -> None:
    given = [name for name in PROCESS_OPTIONS if config.is_set(name)]
    if given:
        raise ConfigError(
            f"{api} serves in the calling program and leaves its process alone: {', '.join(given)} "
            "belong to the anyserve command (anyserve --daemon --pid FILE --user USER ...)"
        )


def _with_app(app: Any, options: dict[str, Any]) -> dict[str, Any]:
    if isinstance(options.get("bind"), str):
        options["bind"] = [options["bind"]]
    return {**options, "app": app} if app is not None else options
