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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .config import Config
from .errors import BindError, ConfigError
from .lifecycle import Lifecycle
from .logs import DATE_FORMAT, LOG_FORMAT, has_anyserve_handler, server_level, stderr_handler
from .sockets import Listener, parse_bind

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
        self.timeout = settings.socket_timeout
        self.max_request_header_size = settings.max_request_header_size
        self.max_request_body_size = settings.max_request_body_size
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
        cherrypy.server.unsubscribe()  # its own HTTP server would bind 8080
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

    def bind_address(self) -> tuple[str, int] | None:
        """``server.socket_host``/``server.socket_port`` from the user's CherryPy config, if set."""
        import cherrypy

        host = cherrypy.config.get("server.socket_host")
        port = cherrypy.config.get("server.socket_port")
        if host is None and port is None:
            return None
        return host or "127.0.0.1", int(port if port is not None else 8080)

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


def address_in_config_file(path: str) -> tuple[str, int] | None:
    """``server.socket_host``/``server.socket_port`` of the file's ``[global]``, read
    without importing the app (whose workers import it after the listeners are bound)."""
    section = read_config_file(path).get("global", {})
    host, port = section.get("server.socket_host"), section.get("server.socket_port")
    if host is None and port is None:
        return None
    return host or "127.0.0.1", int(port if port is not None else 8080)


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
