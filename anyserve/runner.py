"""Serve one app: choose the adapter, load the app, bind, serve, stop gracefully."""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from .apps import load_site, wrap
from .cherrypy_bridge import CherryPyBridge, bridge_for
from .config import Config
from .errors import AnyserveError, ConfigError
from .lifecycle import Lifecycle
from .loader import DeferredApp, add_app_dir, load_callable
from .logs import configure_logging, reopen_log_files_soon
from .notify import notify
from .registry import choose_adapter
from .sockets import Listener, bind_listeners
from .tls import load_tls, mark_tls

if TYPE_CHECKING:
    from anyserve.adapters.base import Adapter

log = logging.getLogger("anyserve")

#: Set in the serving process to "NAME VERSION" so an app can tell what serves it.
SERVING_ENV = "ANYSERVE_SERVING"


class Server:
    """One app on one server in this process: bind, serve, stop.

    ``serve()`` blocks; ``start()`` serves from a background thread and returns
    once the server takes requests; ``stop()`` shuts down gracefully.

    With ``load=False`` the app is not imported yet: :attr:`app` is a
    :class:`DeferredApp` that a pre-fork server's workers load after the fork."""

    def __init__(self, config: Config, app: Any = None, *, owns_process: bool = False, load: bool = True) -> None:
        self.config = config
        add_app_dir(config.app_dir)
        self.adapter_class: type[Adapter] = choose_adapter(config)
        self._owns_process = owns_process
        self._pid = os.getpid()
        if owns_process:
            self.adapter_class.prepare_process(config)
        # After prepare_process: gevent and eventlet patch ssl before it is imported.
        self.tls = load_tls(config)
        self._target = app if app is not None else config.app
        if self._target is None and not (config.mount or config.vhost):
            raise AnyserveError("no APP given: name the application as module:attr, e.g. myapp:application")
        self.lifecycle = Lifecycle(config.main_interval)
        self.bridge: CherryPyBridge | None = None
        self.app: Any = DeferredApp(self.load, str(self._target))
        self.adapter: Adapter = self.adapter_class()
        self.listeners: list[Listener] = []
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._loaded: Any = None
        if load:
            self.app = self.load()

    def load(self) -> Any:
        """Import the app(s), prepare the CherryPy bridge and subscribe the hooks (once)."""
        if self._loaded is not None:
            return self._loaded
        config = self.config
        site = load_site(config, self._target)
        self.bridge = bridge_for(site.main_app(), config, native=self.adapter_class.runs_cherrypy_engine)
        if self.bridge is not None:
            self.bridge.prepare()
            address = self.bridge.bind_address()
            if address and not any(config.is_set(name) for name in ("bind", "host", "port")):
                if self.listeners:
                    log.warning(
                        "The CherryPy config asks for %s:%s, but the listeners were bound before the app was "
                        "imported (in each worker); serving on %s. Give the address with -b, or use --preload",
                        *address,
                        ", ".join(self.urls),
                    )
                else:
                    self.config = config = config.replace(host=address[0], port=address[1])
        self._loaded = wrap(
            site.app,
            config,
            head_without_body=self.adapter_class.capabilities.head_without_body,
            environ_flags=self.adapter_class.environ_flags(config),
        )
        # Subscribed first, the engine starts before the user's start hooks and
        # exits after their stop hooks.
        if self.bridge is not None:
            self.bridge.subscribe(self.lifecycle)
        for hook in config.on_start:
            self.lifecycle.subscribe("started", load_callable(hook, "--on-start hook"))
        for hook in config.on_stop:
            self.lifecycle.subscribe("stopping", load_callable(hook, "--on-stop hook"))
        return self._loaded

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
            listeners = bind_listeners(config.listen, backlog=config.backlog, uds_mode=config.uds_mode)
            try:
                mark_tls(listeners, config, self.tls)
                self.adapter_class.check(config, listeners)
            except BaseException:
                for listener in listeners:
                    listener.close()
                raise
            self.listeners = listeners

    def serve(self, *, announce: bool = True) -> None:
        """Serve until :meth:`stop`; then close the listeners.

        *announce*: log the "Listening on" lines once requests are taken (a
        supervised worker leaves that to its supervisor)."""
        self.bind()
        self.announce(log_urls=announce)
        try:
            self.adapter.serve(self.app, self.listeners, self.config, self.lifecycle)
        finally:
            self.close()

    @property
    def described(self) -> str:
        """The server's name and version, e.g. "cheroot 11.1.2"."""
        version = self.adapter_class.version()
        return f"{self.name} {version}" if version else self.name

    def announce(self, *, log_urls: bool = True) -> None:
        """Say where it listens, as the last start hook: once printed, requests are answered."""
        os.environ[SERVING_ENV] = self.described
        if not log_urls:
            return

        def listening() -> None:
            log_listening(self.urls, self.described, self.config.workers)
            # Once, from the process the service manager started (not from forked workers).
            if self._owns_process and os.getpid() == self._pid:
                notify("READY=1")

        # Last, whatever is subscribed later: a deferred app subscribes its
        # hooks (the CherryPy engine's start) only when a worker loads it.
        self.lifecycle.subscribe("started", listening, last=True)

    def start(self, timeout: float = 30.0) -> Server:
        """Serve from a background thread; return once requests are taken."""
        refuse_workers_in_thread(self)
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


def log_listening(urls: list[str], described: str, workers: int) -> None:
    for url in urls:
        log.info("Listening on %s (%s, %d worker%s)", url, described, workers, "" if workers == 1 else "s")


def refuse_workers_in_thread(server: Server) -> None:
    if server.config.workers > 1 and not server.adapter_class.capabilities.workers:
        raise AnyserveError(
            f"--workers {server.config.workers} needs processes of its own, so it cannot be served from a thread "
            "or a loop of this program; use the anyserve command or anyserve.run() from the main thread"
        )


def serve_until_signalled(server: Server, *, worker: bool = False) -> None:
    """Serve in this (main) thread; TERM and INT stop gracefully, a second INT at once,
    USR1 reopens the log files (after logrotate moved them).

    *worker*: a supervised worker process; its supervisor announces, and
    handles SIGHUP (a worker ignores it)."""
    stopping = threading.Event()

    def handle(signum: int, frame: object) -> None:
        if stopping.is_set():
            if signum == signal.SIGINT:
                log.warning("Second interrupt: exiting without waiting for requests")
                os._exit(1)
            return
        stopping.set()
        if not worker:
            notify("STOPPING=1")
        (log.debug if worker else log.info)(
            "Received %s: stopping gracefully (in-flight requests have %ss)",
            signal.Signals(signum).name,
            server.config.graceful_timeout,
        )
        server.adapter.shutdown()  # returns at once; serve() returns once drained

    def hang_up(signum: int, frame: object) -> None:
        if server.adapter.restart():
            log.info("Received SIGHUP: restarting the workers gracefully")
        elif not worker:
            log.warning("Received SIGHUP: a single serving process has nothing to restart gracefully; ignored")

    def resize(signum: int, frame: object) -> None:
        # Their default action would suspend the process.
        log.warning(
            "Received %s: %s has no workers anyserve can add or remove; ignored",
            signal.Signals(signum).name,
            server.name,
        )

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, hang_up)
    for sig in (signal.SIGTTIN, signal.SIGTTOU):
        previous[sig] = signal.signal(sig, resize if not worker else signal.SIG_IGN)

    def reopen(signum: int, frame: object) -> None:
        reopen_log_files_soon()
        server.adapter.reopen_logs()

    previous[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, reopen)
    try:
        server.serve(announce=not worker)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not worker:
        log.info("Stopped")


def leave_cut_requests(code: int) -> None:
    """End a process anyserve owns, once it stopped serving, without waiting for
    the requests the graceful timeout cut short.

    A thread still in the app (a server's worker thread, a thread pool's) would
    hold up the interpreter's exit for as long as the app runs: when the graceful
    timeout cut requests short, the exit handlers run and the process exits
    with *code* at once."""
    from anyserve.adapters.base import requests_were_cut

    if not requests_were_cut():
        return
    atexit._run_exitfuncs()  # logging's flush among them
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


def serve_in_process(
    config: Config,
    app: Any = None,
    *,
    bound: Callable[[], object] | None = None,
    prepare: Callable[[Server], object] | None = None,
) -> None:
    """Serve until TERM/INT in this process, which anyserve owns: the ``anyserve``
    command and ``anyserve.run()`` from the main thread. ``--workers`` above 1
    runs the server's own workers, or anyserve's supervisor for the others.

    *bound* runs once the listeners are bound, in this process (a pid file, the
    umask); *prepare* gets each Server before it serves, in the process that
    serves (a worker, under the supervisor), to subscribe to its Lifecycle."""
    add_app_dir(config.app_dir)  # where a -s module:Class may come from, too
    adapter_class = choose_adapter(config)
    if config.cherrypy_config and config.cherrypy is not False and not config.preload:
        # Workers import the app after the fork, once the listeners are bound:
        # the address a CherryPy config file gives is read here.
        from .cherrypy_bridge import address_in_config_file

        address = address_in_config_file(config.cherrypy_config)
        if address and not any(config.is_set(name) for name in ("bind", "host", "port")):
            config = config.replace(host=address[0], port=address[1])
    if config.workers > 1 and not adapter_class.capabilities.workers:
        from .supervisor import Supervisor

        Supervisor(config, app, bound=bound, prepare=prepare).run()
        return
    # A pre-fork server's workers import the app after the fork, unless --preload
    # or --user/--group: its workers take on the user before they would import
    # it, and the app's files need not be readable by that user.
    load = config.preload or not adapter_class.capabilities.workers or bool(config.user or config.group)
    server = Server(config, app, owns_process=True, load=load)
    server.bind()
    if bound is not None:
        bound()
    if prepare is not None:
        prepare(server)
    serve_until_signalled(server)


def run(app: Any = None, **options: Any) -> None:
    """Serve *app* (a WSGI callable or an APP string) until TERM/INT; blocks.

    *options* are the options of ``anyserve --help`` by their Python names
    (``server="cheroot"``, ``bind=["127.0.0.1:8000"]``, ``threads=8``...)."""
    config = Config.load(kwargs=_with_app(app, options))
    refuse_process_options(config, "anyserve.run()")
    configure_logging(
        config.log_level, error_log=config.error_log, access_log=config.access_log, log_config=config.log_config
    )
    if threading.current_thread() is threading.main_thread():
        serve_in_process(config)
        return
    server = Server(config)
    refuse_workers_in_thread(server)
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
    refuse_workers_in_thread(server)
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
