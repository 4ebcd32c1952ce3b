"""Server: one app on one server in this process, built from a Plan."""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING, Any

from .apps import Site, build_site
from .config import CHERRYPY_CONFIG, Config
from .errors import AnyserveError
from .lifecycle import Lifecycle
from .loader import DeferredApp, load_callable
from .logs import route_server_loggers
from .notify import notify
from .plan import Plan, bind, prepare
from .sockets import Listener
from .summary import log_summary
from .tls import check_tls

if TYPE_CHECKING:
    from anyserve.adapters.base import Adapter

log = logging.getLogger("anyserve")

#: Set in the serving process to "NAME VERSION" so an app can tell what serves it.
SERVING_ENV = "ANYSERVE_SERVING"


class Server:
    """One app on one server in this process: bind, serve, stop.

    ``serve()`` blocks; ``start()`` serves from a background thread and returns
    once the server takes requests; ``stop()`` shuts down gracefully.
    ``Server(config, app)`` prepares the plan itself; anyserve's own process
    and its workers build theirs with :meth:`from_plan`."""

    def __init__(self, config: Config, app: Any = None) -> None:
        self._begin(prepare(config, app))

    @classmethod
    def from_plan(cls, plan: Plan, listeners: list[Listener] | None = None, *, owns_process: bool = False) -> Server:
        """A Server for *plan*, on *listeners* already bound (else it binds them itself).

        *owns_process*: this process is anyserve's own; it tells the service
        manager when it is ready."""
        server = cls.__new__(cls)
        server._begin(plan, listeners, owns_process=owns_process)
        return server

    @classmethod
    def in_worker(cls, plan: Plan, listeners: list[Listener]) -> Server:
        """In a worker process anyserve's supervisor forked: what the plan left
        to each worker (the server's process set-up, the TLS check, the app's
        import, unless --preload did them) is done here, before it serves."""
        if plan.site is None:
            plan.adapter.prepare_process(plan.config, plan.settings)
            if plan.tls is not None:
                check_tls(plan.tls)  # now that gevent or eventlet patched ssl
        server = cls.from_plan(plan, listeners, owns_process=True)
        server.load()
        return server

    def _begin(self, plan: Plan, listeners: list[Listener] | None = None, *, owns_process: bool = False) -> None:
        self.plan = plan
        self.config = plan.config
        self.adapter_class: type[Adapter] = plan.adapter
        self.adapter: Adapter = plan.adapter(plan.config, plan.settings)
        self.lifecycle = Lifecycle(plan.config.main_interval)
        self.listeners: list[Listener] = list(listeners or [])
        self.owns_process = owns_process
        if owns_process:  # anyserve configured this process's logging: the server's loggers join it
            route_server_loggers(plan.adapter.loggers, plan.config.log_level)
        self._served: Any = None
        self._deferred: DeferredApp | None = None
        self._site: Site | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._closed = False
        #: Set once the server has stopped and closed its listeners.
        self.closed = threading.Event()
        #: Set by anyserve.embed(): the server then stops only from the loop that runs it.
        self.embedded = False
        self._urls: list[str] = []

    # -- the app --------------------------------------------------------------------

    @property
    def app(self) -> Any:
        """What the server calls: the app with its middleware, or, while it is not
        imported yet, a :class:`DeferredApp` that a pre-fork server's workers
        load after the fork."""
        if self._served is None and self.plan.site is not None:
            self.load()  # imported already: its hooks join this process's Lifecycle now
        if self._served is not None:
            return self._served
        if self._deferred is None:
            self._deferred = DeferredApp(self.load, str(self.plan.target))
        return self._deferred

    def load(self) -> Any:
        """Import the app unless the plan did, subscribe the CherryPy engine and the
        hooks to this process's Lifecycle (once); return what the server calls."""
        if self._served is not None:
            return self._served
        config = self.config
        site = self.plan.site
        if site is None:
            site = build_site(config, self.plan.target, self.adapter_class)
            self._check_address(site)
        # Subscribed first, the engine starts before the user's start hooks and
        # exits after their stop hooks.
        self._site = site
        if site.bridge is not None:
            site.bridge.subscribe(self.lifecycle, self)
        for hook in config.on_start:
            self.lifecycle.subscribe("started", load_callable(hook, "--on-start hook"))
        for hook in config.on_stop:
            self.lifecycle.subscribe("stopping", load_callable(hook, "--on-stop hook"))
        self._served = site.served
        return self._served

    def _check_address(self, site: Site) -> None:
        """The app imported after the listeners were bound (in each worker) may ask,
        in its CherryPy config, for an address or settings the plan could not know."""
        if site.bridge is None:
            return
        late = []
        for option, (value, key) in site.bridge.server_options().options.items():
            given = ("bind", "host", "port") if option == "bind" else (option,)
            if any(
                self.config.is_set(name) and CHERRYPY_CONFIG not in (self.config.source(name) or "") for name in given
            ):
                continue
            if (value if option != "bind" else value[0]) != (
                getattr(self.config, option) if option != "bind" else self.config.listen[0]
            ):
                late.append(f"server.{key}")
        late += [server.name for server in site.bridge.extra_servers]
        if late:
            log.warning(
                "The app's CherryPy config asks for %s, but the listeners were bound before the app was "
                "imported (in each worker); not applied. Give them as options (or with --cherrypy-config), "
                "or use --preload",
                ", ".join(late),
            )

    # -- what it is -----------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.adapter_class.name

    @property
    def described(self) -> str:
        """The server's name and version, e.g. "cheroot 11.1.2"."""
        return self.adapter_class.described()

    @property
    def urls(self) -> list[str]:
        """Where the server listens, with the real port when 0 was asked for (once
        stopped: where it listened)."""
        if self._urls:
            return list(self._urls)
        return [listener.url() for listener in self.listeners]

    @property
    def url(self) -> str:
        return self.urls[0]

    # -- serving --------------------------------------------------------------------

    def bind(self) -> None:
        if self._closed:
            # Its listeners are closed and its server object has shut down for good.
            raise AnyserveError("this Server has stopped; make a new one to serve again")
        if not self.listeners:
            self.listeners = bind(self.plan)
        # Read while the sockets are open: the handle still tells them once stopped.
        self._urls = [listener.url() for listener in self.listeners]

    def serve(self, *, announce: bool = True) -> None:
        """Serve until :meth:`stop`; then close the listeners.

        *announce*: log the start-up summary once requests are taken (a
        supervised worker leaves that to its supervisor)."""
        self.bind()
        self.announce(log_urls=announce)
        try:
            self.adapter.serve(self.app, self.listeners, self.lifecycle)
        finally:
            self.close()

    def announce(self, *, log_urls: bool = True) -> None:
        """Log the start-up summary (what serves, where) once requests are answered,
        from this process: as the last start hook, or, for a server whose own
        workers serve (gunicorn, uWSGI), when the adapter says they serve."""
        os.environ[SERVING_ENV] = self.described
        if not log_urls:
            return
        if self.adapter_class.capabilities.workers:
            # Its workers run the Lifecycle: said once, from this process, when
            # they serve (the server tells the service manager itself).
            self.adapter.when_serving(lambda: log_summary(self.plan, self.listeners, owns_process=self.owns_process))
            return

        def listening() -> None:
            log_summary(self.plan, self.listeners, owns_process=self.owns_process)
            if self.owns_process:
                notify("READY=1")

        # Last, whatever is subscribed later: a deferred app subscribes its
        # hooks (the CherryPy engine's start) only when a worker loads it.
        self.lifecycle.subscribe("started", listening, last=True)

    def start(self, timeout: float = 30.0) -> Server:
        """Serve from a background thread; return once requests are taken."""
        refuse_workers_in_thread(self)
        if not self.adapter_class.capabilities.background:
            raise AnyserveError(f"{self.name} cannot serve from a background thread")
        if self._thread is not None and not self._closed:
            raise AnyserveError(f"this Server serves already, on {', '.join(self.urls)}")
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

    def shutdown(self) -> bool:
        """Begin the graceful stop, from any thread, and return at once; False for an
        embedded server, which stops from the loop that runs it (``Embedded.stop()``)."""
        if self.embedded:
            return False
        self.adapter.shutdown()
        return True

    def stop(self) -> None:
        """Stop accepting, let in-flight requests finish, and wait for the end."""
        self.adapter.shutdown()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._restore_cherrypy()

    def close(self) -> None:
        self._closed = True
        for listener in self.listeners:
            listener.close()
        self._restore_cherrypy()
        self.closed.set()

    def _restore_cherrypy(self) -> None:
        """What the bridge could not put back from the serving thread (CherryPy's
        signal handler, which only the main thread sets), from the thread that
        closes or stops the server."""
        if self._site is not None and self._site.bridge is not None:
            self._site.bridge.restore()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def refuse_workers_in_thread(server: Server) -> None:
    if server.config.workers > 1 and not server.adapter_class.capabilities.workers:
        raise AnyserveError(
            f"--workers {server.config.workers} needs processes of its own, so it cannot be served from a thread "
            "or a loop of this program; use the anyserve command or anyserve.run() from the main thread"
        )
