"""The CherryPy bridge: the CherryPy engine, driven by anyserve's Lifecycle.

CherryPy's deployment docs ask everyone who serves a CherryPy app on another
server to wire the engine by hand. The bridge does it once, for every adapter:

- prepare (once, before serving, starting no thread): the ``embedded``
  environment unless the user's CherryPy config chose one (the user's own keys
  win), autoreload off and unsubscribed, CherryPy's own HTTP server
  unsubscribed, its signal handlers left alone (anyserve owns signals) and its
  log kept out of the host server's handlers;
- ``started`` -> ``engine.start()``, in each serving process, after any fork;
- ``tick`` -> ``engine.publish('main')``, from the host's loop;
- ``stopping`` -> ``engine.exit()``, so ``stop`` and ``exit`` listeners run.

``engine.block()`` is never called. CherryPy is imported only when the bridge
is active, and only here and in the cherrypy adapter.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import sys
from typing import Any

from .config import Config
from .errors import ConfigError
from .lifecycle import Lifecycle
from .logs import DATE_FORMAT, LOG_FORMAT, has_anyserve_handler, server_level, stderr_handler

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


def restyle_screen_log(manager: Any, level: str) -> None:
    """CherryPy's screen log (``log.screen``: on under ``-s cherrypy``, as under
    quickstart): its ENGINE lines in anyserve's format, at the level of a
    server's own messages, and no line per request (``--access-log`` is the
    one access log). Its log files, when configured, stay as CherryPy writes them."""
    for handler in manager.error_log.handlers:
        if getattr(handler, "_cpbuiltin", None) == "screen":
            handler.setFormatter(_ScreenFormatter(LOG_FORMAT, DATE_FORMAT))
            handler.setLevel(server_level(level))
    for handler in list(manager.access_log.handlers):
        if getattr(handler, "_cpbuiltin", None) == "screen":
            manager.access_log.removeHandler(handler)


class CherryPyBridge:
    """Prepares CherryPy for a host server and subscribes its engine to a Lifecycle."""

    def __init__(self, app: Any, config: Config, *, native: bool = False) -> None:
        self.app = app
        self.config = config
        #: True under ``-s cherrypy``: CherryPy's own server, as quickstart runs it.
        self.native = native

    def prepare(self) -> None:
        """Configure CherryPy once, before serving. Starts no thread (safe before a fork)."""
        import cherrypy
        from cherrypy._cpconfig import environments

        if self.config.cherrypy_config:
            self._apply_config_file(self.config.cherrypy_config)
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
        cherrypy.engine.signal_handler.unsubscribe()  # anyserve owns TERM, INT and HUP
        # CherryPy logs through its own handlers (log.screen, log.error_file,
        # log.access_file) as its docs say; not a second time through the host's.
        logging.getLogger("cherrypy").propagate = False
        error_log = logging.getLogger("cherrypy.error")
        if not (cherrypy.log.screen or cherrypy.log.error_file) and not has_anyserve_handler(error_log):
            # Nothing of CherryPy's own would show a failing handler's traceback
            # (the embedded environment turns the screen off): keep errors visible.
            error_log.addHandler(stderr_handler(logging.ERROR))
        restyle_screen_log(cherrypy.log, self.config.log_level)

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

    def subscribe(self, lifecycle: Lifecycle) -> None:
        import cherrypy

        engine = cherrypy.engine
        lifecycle.subscribe("started", self.start_engine)
        lifecycle.subscribe("tick", lambda: engine.publish("main"))
        lifecycle.subscribe("stopping", engine.exit)

    @staticmethod
    def start_engine() -> None:
        import cherrypy

        cherrypy.engine.start()
        if cherrypy.engine.state != cherrypy.engine.states.STARTED:
            raise RuntimeError(f"the CherryPy engine did not start (state {cherrypy.engine.state})")


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
