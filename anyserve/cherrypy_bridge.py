"""The CherryPy bridge: the CherryPy engine, driven by anyserve's Lifecycle.

CherryPy's deployment docs ask everyone who serves a CherryPy app on another
server to wire the engine by hand. The bridge does it once, for every adapter:

- prepare (once, before serving, starting no thread): the ``embedded``
  environment unless the user's CherryPy config chose one (the user's own keys
  win), autoreload off and unsubscribed, CherryPy's own HTTP server
  unsubscribed, its signal handlers left alone (anyserve owns signals) and its
  log kept out of the host server's handlers;
- ``started`` -> ``cherrypy.server`` describes anyserve's server (below), then
  ``engine.start()``, in each serving process, after any fork;
- ``tick`` -> ``engine.publish('main')``, from the host's loop;
- ``stopping`` -> the engine's ``stop`` and ``exit`` channels, so its listeners
  run, then CherryPy is put back as it was before ``prepare``.

``engine.block()`` is never called. CherryPy is imported only when the bridge
is active, and only here and in the cherrypy adapter.

While anyserve serves, in each serving process:

- ``cherrypy.server`` tells the truth: ``running`` is True, ``bind_addr`` is
  the address anyserve's first listener was asked for and ``bound_addr`` the
  one it really has (a port 0 resolved); ``httpserver`` is an
  :class:`AnyserveHTTPServer` with the attributes CherryPy code reads
  (``bind_addr``, ``socket``, ``timeout``, ``max_request_header_size``,
  ``max_request_body_size``, ``server_name``, ``protocol``, ``version``,
  ``ready``...). ``cherrypy.server.start()`` says it already serves there.
- ``engine.stop()``, ``engine.exit()`` or ``engine.restart()`` called by the
  app or by other code, and ``cherrypy.server.stop()``, stop anyserve
  gracefully, as TERM would: it stops accepting and lets requests in flight
  finish. Called from a thread that is not handling a request (nor anyserve's
  own), the call returns once anyserve has stopped and CherryPy is put back,
  as CherryPy's own server does once it has stopped; from a request, at once.
  ``engine.stop()`` leaves the engine stopped (but for the ``exit`` listeners
  the ``anyserve`` command runs as its process ends); ``exit()`` and
  ``restart()`` run the ``exit`` listeners too (CherryPy's re-exec after ``restart()`` is
  done by ``engine.block()``, which anyserve never calls). Under
  ``anyserve.embed()`` anyserve stops only with ``Embedded.stop()``, from the
  loop that runs it: the engine stops alone.
- ``engine.graceful()`` publishes ``graceful`` (the app's listeners reload);
  anyserve keeps serving, as CherryPy's own server does.
- ``engine.exit()`` never ends the process with ``os._exit(70)`` as CherryPy's
  bus does when a ``stop`` or ``exit`` listener raises or the engine is still
  starting: each failing listener is logged with its traceback, as CherryPy
  logs it, and the program goes on (the ``anyserve`` command's exit code is
  not changed by it).

When anyserve stops (the command, ``run()``, ``serving()``'s end,
``Server.stop()``, ``Embedded.stop()``) the bridge puts back what it changed:
``cherrypy.server`` (subscribed again if it was, its address, ``httpserver``
and ``running``), autoreload and the signal handler (subscribed again if they
were), the ``environment`` and the keys it set in ``cherrypy.config``, the
``cherrypy`` logger's ``propagate``, the handler it added and CherryPy's screen
log. A program can then serve with CherryPy's own server: ``engine.start()``
starts ``cherrypy.server`` as it would have.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from .config import CHERRYPY_CONFIG, Config, to_port, to_positive_int, to_seconds, to_size
from .errors import BindError, ConfigError
from .lifecycle import Lifecycle
from .logs import DATE_FORMAT, LOG_FORMAT, has_anyserve_handler, server_level, stderr_handler
from .sockets import Listener, parse_bind
from .tls import TLS

log = logging.getLogger("anyserve.cherrypy")

#: Attributes WSGI middleware commonly keeps the app it wraps in.
_WRAPPED_ATTRIBUTES = ("app", "application", "wsgi_app", "wrap_app", "nextapp", "__wrapped__")


def is_cherrypy_app(app: Any) -> bool:
    """A cherrypy.Application, cherrypy.tree, or a WSGI stack around one.

    Without CherryPy imported, nothing can be a CherryPy app: no import happens."""
    cherrypy = sys.modules.get("cherrypy")
    if cherrypy is None:
        return False
    kinds = (cherrypy.Application, type(cherrypy.tree))
    seen: set[int] = set()
    for _ in range(16):
        if isinstance(app, kinds):
            return True
        if id(app) in seen:
            return False
        seen.add(id(app))
        inner = next((getattr(app, attr) for attr in _WRAPPED_ATTRIBUTES if _has_attr(app, attr)), None)
        if inner is None:
            return False
        app = inner
    return False


def _has_attr(obj: Any, name: str) -> bool:
    try:
        return getattr(obj, name, None) is not None and getattr(obj, name) is not obj
    except Exception:  # a property that raises tells us nothing
        return False


def unwrap_cherrypy_app(app: Any) -> Any:
    """The cherrypy.Application or cherrypy.tree inside a WSGI stack (or *app*)."""
    import cherrypy

    kinds = (cherrypy.Application, type(cherrypy.tree))
    for _ in range(16):
        if isinstance(app, kinds):
            return app
        inner = next((getattr(app, attr) for attr in _WRAPPED_ATTRIBUTES if _has_attr(app, attr)), None)
        if inner is None:
            break
        app = inner
    return app


#: The time CherryPy writes at the start of each message of its own.
_CHERRYPY_TIME = re.compile(r"\[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d\] ")


class _ScreenFormatter(logging.Formatter):
    """anyserve's format, without the time CherryPy writes into each message."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        message = record.message
        record.message = _CHERRYPY_TIME.sub("", message, count=1)
        try:
            return super().formatMessage(record)
        finally:
            record.message = message


def restyle_screen_log(manager: Any, level: str) -> list[Callable[[], None]]:
    """CherryPy's screen log (``log.screen``: on under ``-s cherrypy``, as under
    quickstart): its ENGINE lines in anyserve's format, at the level of a
    server's own messages, and no line per request (``--access-log`` is the
    one access log). Its log files, when configured, stay as CherryPy writes them.

    Returns what undoes each change."""
    undo: list[Callable[[], None]] = []
    for handler in manager.error_log.handlers:
        if getattr(handler, "_cpbuiltin", None) == "screen":
            undo.append(lambda h=handler, f=handler.formatter, lv=handler.level: (h.setFormatter(f), h.setLevel(lv)))
            handler.setFormatter(_ScreenFormatter(LOG_FORMAT, DATE_FORMAT))
            handler.setLevel(server_level(level))
    for handler in list(manager.access_log.handlers):
        if getattr(handler, "_cpbuiltin", None) == "screen":
            manager.access_log.removeHandler(handler)
            undo.append(lambda h=handler: manager.access_log.addHandler(h))
    return undo


class Serving(Protocol):
    """What the bridge needs of the server that serves (an :class:`anyserve.Server`)."""

    config: Config
    listeners: list[Listener]
    #: Set once the server has stopped and closed its listeners.
    closed: threading.Event
    #: Whether this process is anyserve's own (the command, a worker): it ends when serving does.
    owns_process: bool

    @property
    def described(self) -> str: ...

    def shutdown(self) -> bool:
        """Begin the graceful stop from any thread and return at once; False when
        the server cannot be stopped that way (an embedded one)."""
        ...


class AnyserveHTTPServer:
    """``cherrypy.server.httpserver`` while anyserve serves: what CherryPy code
    reads of an HTTP server, describing anyserve's. ``stop()`` stops anyserve
    gracefully (see the module's docstring)."""

    ready = True
    interrupt = None

    def __init__(self, bridge: CherryPyBridge, serving: Serving, listener: Listener, bind_addr: Any) -> None:
        import cherrypy

        settings = cherrypy.server
        self._bridge = bridge
        self.bind_addr = bind_addr
        #: The listening socket (``cherrypy.server.bound_addr`` reads its port).
        self.socket = listener.socket
        # What anyserve applies (the app's server.* keys unless an option said otherwise); 0: no limit.
        config = serving.config
        timeout = config.timeout_keep_alive
        self.timeout = int(timeout) if float(timeout).is_integer() else timeout  # 1, as CherryPy keeps it
        self.max_request_header_size = config.max_header_size or 0
        self.max_request_body_size = config.max_body_size or 0
        # As CherryPy names its own server (cheroot: the host name when it has none).
        self.server_name = settings.socket_host or settings.socket_file or socket.gethostname()
        self.protocol = settings.protocol_version
        self.version = f"anyserve ({serving.described})"
        #: Set for HTTPS (CherryPy's server description reads it for the scheme).
        self.ssl_adapter = listener.tls
        self.nodelay = True  # anyserve sets TCP_NODELAY on every TCP listener
        self.urls = [each.url() for each in serving.listeners]

    def start(self) -> None:
        """anyserve serves already; ``cherrypy.server.start()`` does not call this while it does."""
        raise RuntimeError(f"{self} serves already; it is started and stopped by anyserve")

    def stop(self) -> None:
        self._bridge.stop_serving("cherrypy.server.stop() was called")

    def __str__(self) -> str:
        return f"{self.version} on {', '.join(self.urls)}"


class CherryPyBridge:
    """Prepares CherryPy for a host server and subscribes its engine to a Lifecycle."""

    def __init__(self, app: Any, config: Config, *, native: bool = False) -> None:
        self.app = app
        self.config = config
        #: True under ``-s cherrypy``: CherryPy's own server, as quickstart runs it.
        self.native = native
        #: The other ``cherrypy._cpserver.Server`` objects the app subscribed to the
        #: engine, as listeners (found, and unsubscribed, by :meth:`prepare`).
        self.extra_servers: list[ExtraServer] = []
        #: Whether ``cherrypy.server`` was subscribed when the bridge came (see :meth:`prepare`).
        self.main_server = True
        #: How to put CherryPy back as it was before :meth:`prepare`.
        self._saved: _Saved | None = None
        self._serving: Serving | None = None
        #: Threads from which a stop must not wait for the server's end: they serve it.
        self._serving_threads: set[int] = set()
        self._stop_requested = False
        #: Whether the code that stopped the engine waits for anyserve's end (so anyserve must not wait for it).
        self._caller_waits = False

    def prepare(self) -> None:
        """Configure CherryPy once, before serving. Starts no thread (safe before a fork)."""
        import cherrypy
        from cherrypy._cpconfig import environments

        if self.config.cherrypy_config:
            self._apply_config_file(self.config.cherrypy_config)
        saved = self._saved = _Saved.take()
        before = dict(cherrypy.config)
        if not self.native and "environment" not in before:
            cherrypy.config.update({"environment": "embedded"})
            # Setting an environment overwrites its keys: put back the user's own.
            mine = {key: before[key] for key in environments["embedded"] if key in before}
            if mine:
                cherrypy.config.update(mine)
        if cherrypy.config.get("engine.autoreload.on"):
            log.warning("CherryPy's autoreload re-executes the process under the server; it stays off (use --reload)")
        cherrypy.config.update({"engine.autoreload.on": False})
        cherrypy.engine.autoreload.unsubscribe()
        # CherryPy subscribes cherrypy.server at import; an app that serves only
        # servers of its own (the HTTP + HTTPS recipe) unsubscribed it.
        self.main_server = any(
            getattr(listener, "__self__", None) is cherrypy.server
            for listener in cherrypy.engine.listeners.get("start", ())
        )
        cherrypy.server.unsubscribe()  # its own HTTP server would bind 8080
        # The app's other servers (CherryPy's HTTP + HTTPS recipe) become listeners.
        others = subscribed_servers()
        self.extra_servers = [extra_server(server) for server in others]
        for server in others:
            server.unsubscribe()
        saved.other_servers = others
        if saved.signal_handler:
            cherrypy.engine.signal_handler.unsubscribe()  # anyserve owns TERM, INT and HUP
        # CherryPy logs through its own handlers (log.screen, log.error_file,
        # log.access_file) as its docs say; not a second time through the host's.
        logging.getLogger("cherrypy").propagate = False
        error_log = logging.getLogger("cherrypy.error")
        if not (cherrypy.log.screen or cherrypy.log.error_file) and not has_anyserve_handler(error_log):
            # Nothing of CherryPy's own would show a failing handler's traceback
            # (the embedded environment turns the screen off): keep errors visible.
            saved.added_handler = stderr_handler(logging.ERROR)
            error_log.addHandler(saved.added_handler)
        saved.screen = restyle_screen_log(cherrypy.log, self.config.log_level)
        saved.config_keys = {key for key, value in cherrypy.config.items() if before.get(key, _NONE) is not value}
        saved.config_keys |= {key for key in before if key not in cherrypy.config}
        saved.config_keys |= {"environment", "engine.autoreload.on"} & set(cherrypy.config)

    def _apply_config_file(self, path: str) -> None:
        import cherrypy

        parsed = read_config_file(path)
        global_section = parsed.pop("global", {})
        server_options(global_section)  # a value CherryPy itself would refuse: one line, before applying
        if global_section:
            cherrypy.config.update(global_section)
        sections = {key: value for key, value in parsed.items() if key.startswith("/")}
        if not sections:
            return
        target = self._config_target()
        target.merge(sections)

    def _config_target(self) -> Any:
        """The application that the file's path sections configure."""
        import cherrypy

        app = unwrap_cherrypy_app(self.app)
        if isinstance(app, cherrypy.Application):
            return app
        apps = cherrypy.tree.apps
        if "" in apps:
            return apps[""]
        if len(apps) == 1:
            return next(iter(apps.values()))
        raise ConfigError(
            "--cherrypy-config has path sections, but cherrypy.tree holds several apps "
            f"({', '.join(sorted(apps))}) and none at '/'; pass each app's config to cherrypy.tree.mount"
        )

    def server_options(self) -> ServerOptions:
        """The anyserve options the ``server.*`` keys of the app's CherryPy config give."""
        import cherrypy

        settings = dict(cherrypy.config)
        # socket_timeout also where CherryPy code sets it on cherrypy.server itself
        # (where the config puts it, and where it stays when the config is reset).
        timeout = cherrypy.server.socket_timeout
        if "server.socket_timeout" not in settings and timeout != type(cherrypy.server).socket_timeout:
            settings["server.socket_timeout"] = timeout
        return server_options(settings)

    # -- serving -------------------------------------------------------------------

    def subscribe(self, lifecycle: Lifecycle, serving: Serving | None = None) -> None:
        """Drive the engine from *lifecycle*; *serving*, the server, is what
        ``cherrypy.server`` then describes and what a stop of the engine stops."""
        self._serving = serving
        lifecycle.subscribe("started", self.start_engine)
        lifecycle.subscribe("tick", self.publish_main)
        lifecycle.subscribe("stopping", self.stop_engine)

    def start_engine(self) -> None:
        """``started``: ``cherrypy.server`` describes anyserve's server, then the engine starts."""
        import cherrypy

        engine = cherrypy.engine
        self._serving_threads.add(threading.get_ident())
        self._describe_server()
        engine.exit = self.exit_engine  # never os._exit() while anyserve serves
        engine.start()
        if engine.state != engine.states.STARTED:
            raise RuntimeError(f"the CherryPy engine did not start (state {engine.state})")
        # From now on, a stop of the engine is a stop of anyserve (not a start that failed).
        engine.subscribe("stop", self._engine_stopping, priority=_SERVER_STOP_PRIORITY)

    def publish_main(self) -> None:
        import cherrypy

        self._serving_threads.add(threading.get_ident())
        cherrypy.engine.publish("main")

    def stop_engine(self) -> None:
        """``stopping``: the engine's stop and exit listeners run (unless other code
        stopped the engine, which then stays as that code left it), then CherryPy
        is put back as it was."""
        import cherrypy

        engine = cherrypy.engine
        engine.unsubscribe("stop", self._engine_stopping)
        try:
            if engine.state in (engine.states.STARTED, engine.states.STARTING):
                self.exit_engine()
            elif self._serving is not None and self._serving.owns_process and not self._caller_waits:
                # Other code stopped the engine, and this process ends now: once
                # that stop is through (in a handler, it may still run), the
                # exit listeners run, as on TERM.
                deadline = time.monotonic() + self._serving.config.graceful_timeout
                while engine.state == engine.states.STOPPING and time.monotonic() < deadline:
                    time.sleep(0.02)
                if engine.state == engine.states.STOPPED:
                    self._publish_exit()
        finally:
            self.restore()

    def exit_engine(self) -> None:
        """The engine's ``stop`` then ``exit`` channels, as ``engine.exit()`` runs them,
        without its ``os._exit(70)``: a failing listener is logged, with its
        traceback, by CherryPy's bus itself, and the program goes on."""
        import cherrypy

        try:
            cherrypy.engine.stop()
        except Exception:  # each failing listener was logged by the bus, with its traceback
            pass
        self._publish_exit()

    @staticmethod
    def _publish_exit() -> None:
        import cherrypy

        engine = cherrypy.engine
        engine.state = engine.states.EXITING
        engine.log("Bus EXITING")
        try:
            engine.publish("exit")
        except Exception:
            pass
        engine.log("Bus EXITED")

    def _engine_stopping(self) -> None:
        """A ``stop`` listener while anyserve serves: other code stopped the engine
        (``engine.stop()``, ``exit()``, ``restart()``), so anyserve stops too."""
        self.stop_serving("The CherryPy engine was stopped")

    def stop_serving(self, why: str) -> None:
        """Stop anyserve gracefully, as TERM would; wait for its end unless that
        would wait on this very thread (a request, the server's own loop)."""
        serving = self._serving
        if serving is None or self._stop_requested:
            return
        self._stop_requested = True
        if not serving.shutdown():
            log.warning(
                "%s while anyserve is embedded: the engine stops, anyserve serves on until Embedded.stop()", why
            )
            return
        log.info("%s: anyserve stops gracefully (in-flight requests have %ss)", why, serving.config.graceful_timeout)
        if self._may_wait():
            self._caller_waits = True
            serving.closed.wait(serving.config.graceful_timeout + _STOP_MARGIN)

    def _may_wait(self) -> bool:
        import cherrypy

        if threading.get_ident() in self._serving_threads:
            return False
        return "request" not in vars(cherrypy.serving)  # a CherryPy request runs in this thread

    def _describe_server(self) -> None:
        import cherrypy

        serving = self._serving
        if serving is None or not serving.listeners:
            return
        listener = next((each for each in serving.listeners if not each.is_unix), serving.listeners[0])
        bind_addr = asked_address(listener)
        server = cherrypy.server
        server.bind_addr = bind_addr
        server.httpserver = AnyserveHTTPServer(self, serving, listener, bind_addr)
        server.running = True

    def restore(self) -> None:
        """Put back what :meth:`prepare` and serving changed in CherryPy. Safe to call
        again: CherryPy's signal handler, which only the main thread can set, is
        subscribed again by the first call from the main thread."""
        if self._saved is not None and self._saved.restore():
            self._saved = None
        self._serving_threads.clear()


def asked_address(listener: Listener) -> Any:
    """The address *listener* was bound for, as CherryPy's ``bind_addr`` keeps it:
    with port 0 when a free port was asked for (``bound_addr`` tells which)."""
    address = listener.address
    if listener.is_unix:
        return address
    try:
        kind, where = parse_bind(listener.spec)
    except BindError:  # systemd:NAME, fd://NAME
        return address
    if kind == "tcp" and isinstance(where, tuple) and where[1] == 0:
        return (address[0], 0)
    return address


#: The priority of CherryPy's own HTTP server on the ``stop`` channel: stopped before the app's listeners.
_SERVER_STOP_PRIORITY = 25
#: Beyond the graceful timeout, how long a stop of the engine waits for anyserve's end.
_STOP_MARGIN = 10.0
_NONE = object()


@dataclass
class _Saved:
    """What the bridge changes in CherryPy, as it was before."""

    server: dict[str, Any]
    server_subscribed: bool
    autoreload_subscribed: bool
    signal_handler: bool
    propagate: bool
    config: dict[str, Any]
    attributes: dict[str, Any]
    exit_overridden: bool
    config_keys: set[str] = field(default_factory=set)
    added_handler: logging.Handler | None = None
    screen: list[Callable[[], None]] = field(default_factory=list)
    #: The app's other servers, served as listeners: subscribed again after.
    other_servers: list[Any] = field(default_factory=list)

    @classmethod
    def take(cls) -> _Saved:
        import cherrypy

        engine = cherrypy.engine
        server = cherrypy.server
        return cls(
            server={name: getattr(server, name) for name in _SERVER_ATTRIBUTES},
            server_subscribed=_subscribed(engine, server),
            autoreload_subscribed=_subscribed(engine, engine.autoreload),
            signal_handler=_signal_handler_subscribed(engine),
            propagate=logging.getLogger("cherrypy").propagate,
            config=dict(cherrypy.config),
            attributes={"checker.on": cherrypy.checker.on, "log.screen": cherrypy.log.screen},
            exit_overridden="exit" in vars(engine),
        )

    restored: bool = False

    def restore(self) -> bool:
        """Put it all back (once); whether it is done (the signal handler waits for the main thread)."""
        import cherrypy

        engine = cherrypy.engine
        if not self.restored:
            self.restored = True
            self._restore_rest()
        if self.signal_handler:
            if threading.current_thread() is not threading.main_thread():
                return False
            self.signal_handler = False
            engine.signal_handler.subscribe()
        return True

    def _restore_rest(self) -> None:
        import cherrypy

        engine = cherrypy.engine
        if not self.exit_overridden:
            vars(engine).pop("exit", None)
        for key in self.config_keys:
            if key in self.config:
                dict.__setitem__(cherrypy.config, key, self.config[key])
            else:
                dict.pop(cherrypy.config, key, None)
        for undo in reversed(self.screen):
            undo()
        cherrypy.checker.on = self.attributes["checker.on"]
        cherrypy.log.screen = self.attributes["log.screen"]
        if self.added_handler is not None:
            logging.getLogger("cherrypy.error").removeHandler(self.added_handler)
        logging.getLogger("cherrypy").propagate = self.propagate
        server = cherrypy.server
        for name, value in self.server.items():
            setattr(server, name, value)
        if self.server_subscribed:
            server.subscribe()
        for other in self.other_servers:
            other.subscribe()
        if self.autoreload_subscribed:
            engine.autoreload.subscribe()


#: What serving changes on ``cherrypy.server`` (its address is set through socket_host/port/file).
_SERVER_ATTRIBUTES = ("httpserver", "running", "socket_host", "socket_port", "socket_file")


def _subscribed(engine: Any, plugin: Any) -> bool:
    return any(getattr(plugin, channel, None) in listeners for channel, listeners in engine.listeners.items())


def _signal_handler_subscribed(engine: Any) -> bool:
    handler = getattr(engine, "signal_handler", None)
    if handler is None:
        return False
    try:
        return any(signal.getsignal(number) == handler._handle_signal for number in handler.signals)
    except (TypeError, ValueError):
        return False


def read_config_file(path: str) -> dict[str, Any]:
    """A CherryPy config file (INI with Python values), as sections of settings."""
    from cherrypy.lib import reprconf

    try:
        return dict(reprconf.Parser().dict_from_file(path))
    except FileNotFoundError:
        raise ConfigError(f"--cherrypy-config: file {path} does not exist") from None
    except Exception as exc:  # CherryPy raises bare ValueError/SyntaxError for bad values
        raise ConfigError(f"--cherrypy-config: cannot read {path}: {exc}") from None


def options_in_config_file(path: str) -> ServerOptions:
    """The anyserve options the ``server.*`` keys of the file's ``[global]`` give,
    read without importing the app (whose workers import it after the listeners
    are bound)."""
    return server_options(read_config_file(path).get("global", {}))


# -- CherryPy's server.* config as anyserve's options ---------------------------------------

#: How sources show an option taken from the app's CherryPy config.
SOURCE = CHERRYPY_CONFIG + " (server.{})"


def _positive(value: Any) -> int:
    return to_positive_int(value)


def _path(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("expected a file name")
    return value


#: The ``server.*`` keys of CherryPy's config (cherrypy/_cpserver.py) that anyserve
#: honours: the key, the anyserve option it becomes, and the conversion.
SERVER_KEYS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "socket_queue_size": ("backlog", _positive),
    "thread_pool": ("threads", _positive),
    "max_request_header_size": ("max_header_size", to_size),
    "max_request_body_size": ("max_body_size", to_size),
    "ssl_certificate": ("certfile", _path),
    "ssl_private_key": ("keyfile", _path),
    "ssl_certificate_chain": ("ca_certs", _path),
    "shutdown_timeout": ("graceful_timeout", to_seconds),
    "socket_timeout": ("timeout_keep_alive", to_seconds),
}
#: The keys that make the address: ``socket_file`` wins over host and port, as in CherryPy.
ADDRESS_KEYS = ("socket_host", "socket_port", "socket_file", "bind_addr")
#: Keys anyserve has no equivalent of, with CherryPy's default (which anyserve's
#: serving matches) and what another value gets: "refuse" where serving without
#: it changes what the app's requests and responses are, "warn" where it changes
#: only how the server runs.
UNHONOURED_KEYS: dict[str, tuple[Any, str, str]] = {
    "protocol_version": ("HTTP/1.1", "refuse", "anyserve answers HTTP/1.1 requests as HTTP/1.1 on every server"),
    "wsgi_version": ((1, 0), "refuse", "every server gives the app WSGI 1.0 (PEP 3333)"),
    "instance": (None, "refuse", "anyserve serves the app; run the app's own server instance yourself"),
    "ssl_context": (None, "refuse", "anyserve serves TLS from certificate files: use server.ssl_certificate"),
    "ssl_ciphers": (None, "refuse", "anyserve has no cipher setting; it serves TLS 1.2 and later"),
    "peercreds": (False, "refuse", "anyserve gives no unix peer credentials to the app"),
    "peercreds_resolve": (False, "refuse", "anyserve gives no unix peer credentials to the app"),
    "ssl_module": ("builtin", "warn", "anyserve serves TLS with Python's ssl module"),
    "nodelay": (True, "warn", "anyserve sets TCP_NODELAY on every TCP listener"),
    "statistics": (False, "warn", "anyserve gathers no server statistics"),
    "thread_pool_max": (-1, "warn", "the pool stays at server.thread_pool (--threads)"),
    "accepted_queue_size": (-1, "warn", "connections wait in the listen backlog (server.socket_queue_size)"),
    "accepted_queue_timeout": (10, "warn", "connections wait in the listen backlog (server.socket_queue_size)"),
}
#: CherryPy's own server's ``instance`` value that names itself.
BUILTIN_INSTANCES = ("cherrypy._cpwsgi_server.CPWSGIServer",)


@dataclass
class ServerOptions:
    """What CherryPy's ``server.*`` config gives: options (name -> (value, key)),
    and a warning for each key anyserve leaves aside."""

    options: dict[str, tuple[Any, str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def server_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """The ``server.KEY`` entries of a CherryPy config (not ``server.NAME.KEY``,
    which configure another server), by KEY."""
    return {
        key[len("server.") :]: value
        for key, value in config.items()
        if key.startswith("server.") and "." not in key[len("server.") :]
    }


def server_options(config: Mapping[str, Any]) -> ServerOptions:
    """The anyserve options for the ``server.*`` keys *config* sets (a CherryPy
    config, which holds only the keys set); ConfigError, naming the key, for a
    value anyserve cannot serve as CherryPy would."""
    settings = server_settings(config)
    result = ServerOptions()
    bind = address_of(settings)
    if bind is not None:
        result.options["bind"] = ([bind[0]], bind[1])
    for key, value in settings.items():
        if key in SERVER_KEYS:
            option, convert = SERVER_KEYS[key]
            if value is None and key.startswith("ssl_"):
                continue
            try:
                result.options[option] = (convert(value), key)
            except ValueError as exc:
                raise ConfigError(f"server.{key} = {value!r} in the app's CherryPy config: {exc}") from None
        elif key in UNHONOURED_KEYS:
            message = unhonoured(key, value)
            if message is not None:
                result.warnings.append(message)
        elif key not in ADDRESS_KEYS:
            result.warnings.append(
                f"server.{key} in the app's CherryPy config is not a setting of CherryPy's server; "
                "ignored, as CherryPy ignores it"
            )
    return result


def unhonoured(key: str, value: Any) -> str | None:
    """None for a key at the value anyserve's serving matches; a warning for one
    anyserve leaves aside; ConfigError for one it cannot serve without."""
    default, action, why = UNHONOURED_KEYS[key]
    if value == default or (key == "instance" and value in BUILTIN_INSTANCES):
        return None
    if key == "protocol_version" and isinstance(value, str) and value.upper() == default:
        return None
    if key == "wsgi_version" and isinstance(value, (list, tuple)) and tuple(value) == default:
        return None
    text = f"server.{key} = {value!r} in the app's CherryPy config"
    if action == "refuse":
        raise ConfigError(f"{text} cannot be honoured: {why}; remove the key")
    return f"{text} is not applied: {why}"


def address_of(settings: Mapping[str, Any]) -> tuple[str, str] | None:
    """The --bind address CherryPy's server settings ask for, and the key that set
    it; None when they set none. ``socket_host`` '' and None are refused, as
    CherryPy refuses them."""
    settings = dict(settings)
    bind_addr = settings.pop("bind_addr", None)
    if isinstance(bind_addr, (str, bytes)):
        settings["socket_file"] = bind_addr.decode() if isinstance(bind_addr, bytes) else bind_addr
    elif bind_addr is not None:
        try:
            settings["socket_host"], settings["socket_port"] = bind_addr
        except (TypeError, ValueError):
            raise ConfigError(
                f"server.bind_addr = {bind_addr!r} in the app's CherryPy config: expected (host, port) "
                "or the path of a unix socket"
            ) from None
    if settings.get("socket_file"):
        return f"unix:{settings['socket_file']}", "socket_file"
    if "socket_host" not in settings and "socket_port" not in settings:
        return None
    host = settings.get("socket_host", "127.0.0.1")
    if host in ("", None):
        raise ConfigError(
            f"server.socket_host = {host!r} in the app's CherryPy config: CherryPy does not allow it; "
            "use '0.0.0.0' (IPv4) or '::' (IPv6) to listen on every interface"
        )
    try:
        port = to_port(settings.get("socket_port", 8080))
    except ValueError as exc:
        raise ConfigError(
            f"server.socket_port = {settings['socket_port']!r} in the app's CherryPy config: {exc}"
        ) from None
    if not isinstance(host, str):
        raise ConfigError(
            f"server.socket_host = {host!r} in the app's CherryPy config: expected a host name or address"
        )
    key = "socket_host" if "socket_host" in settings else "socket_port"
    return (f"[{host}]:{port}" if ":" in host else f"{host}:{port}"), key


@dataclass(frozen=True)
class ExtraServer:
    """Another ``cherrypy._cpserver.Server`` the app subscribed to the engine:
    where it listens and its TLS, as a listener of anyserve's."""

    bind: str
    tls: TLS | None
    #: How the summary names it: ``cherrypy.servers['2']`` or ``a cherrypy._cpserver.Server``.
    name: str


def subscribed_servers() -> list[Any]:
    """The ``cherrypy._cpserver.Server`` objects subscribed to the engine, other
    than ``cherrypy.server``, in the order of their addresses."""
    import cherrypy
    from cherrypy._cpserver import Server

    found = {
        id(owner): owner
        for listener in cherrypy.engine.listeners.get("start", ())
        if isinstance(owner := getattr(listener, "__self__", None), Server) and owner is not cherrypy.server
    }
    return sorted(found.values(), key=lambda server: str(server.bind_addr))


def extra_server(server: Any) -> ExtraServer:
    """The listener another CherryPy server object asks for; ConfigError, naming
    the server, for what anyserve cannot serve as CherryPy would."""
    import cherrypy

    names = [name for name, other in getattr(cherrypy, "servers", {}).items() if other is server]
    name = f"cherrypy.servers[{names[0]!r}]" if names else f"the app's cherrypy._cpserver.Server on {server.bind_addr}"
    settings = {key: getattr(server, key, default) for key, (default, _, _) in UNHONOURED_KEYS.items()}
    settings["bind_addr"] = server.bind_addr
    try:
        bind = address_of(settings)
        for key in UNHONOURED_KEYS:
            message = unhonoured(key, settings[key])
            if message is not None:
                log.warning("%s", message)
    except ConfigError as exc:
        raise ConfigError(f"{name}: {exc}".replace(" in the app's CherryPy config", "")) from None
    if bind is None:
        raise ConfigError(f"{name} has no address: set its socket_host and socket_port, or its socket_file")
    tls = None
    if server.ssl_certificate:
        tls = TLS(server.ssl_certificate, server.ssl_private_key, ca_certs=server.ssl_certificate_chain)
    return ExtraServer(bind[0], tls, name)


def bridge_for(app: Any, config: Config, *, native: bool = False) -> CherryPyBridge | None:
    """The bridge to use for *app*, or None when the CherryPy engine is not involved."""
    if native:
        if config.cherrypy is False:
            raise ConfigError("-s cherrypy runs CherryPy's own engine; it cannot be combined with --no-cherrypy")
        return CherryPyBridge(app, config, native=True)
    if config.cherrypy is False:
        return None
    if config.cherrypy is None and not is_cherrypy_app(app):
        if config.cherrypy_config:
            raise ConfigError("--cherrypy-config was given but the app is not a CherryPy app; add --cherrypy to force")
        return None
    if importlib.util.find_spec("cherrypy") is None:
        raise ConfigError("--cherrypy needs CherryPy: pip install cherrypy")
    return CherryPyBridge(app, config)
