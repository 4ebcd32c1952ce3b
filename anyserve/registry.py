"""The adapter registry: servers found through the ``anyserve.adapters`` entry points.

Built-in adapters are registered the same way a third-party plugin is, so the
two are indistinguishable here. Loading an adapter imports its module only;
adapter modules import their server inside ``serve()``, so listing servers
imports no server package.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from anyserve.adapters.base import Adapter

from .config import Config
from .errors import ServerError, Unsupported, install_hint

ENTRY_POINT_GROUP = "anyserve.adapters"

#: ``-s auto`` takes the first installed server in this order that can honour the
#: options: production-grade threaded servers first (cheroot, the server CherryPy
#: ships, then waitress), then pre-fork and event-loop servers, CherryPy's own
#: engine-run server, and the development servers last. Servers not listed here
#: come after them, by name.
AUTO_ORDER = (
    "cheroot",
    "waitress",
    "gunicorn",
    "uwsgi",
    "tornado",
    "twisted",
    "gevent",
    "eventlet",
    "cherrypy",
    "werkzeug",
    "wsgiref",
)


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def server_names() -> list[str]:
    """Every registered server, in ``-s auto`` order."""
    names = _entry_points()
    ordered = [name for name in AUTO_ORDER if name in names]
    return ordered + sorted(set(names) - set(ordered))


def adapters() -> dict[str, type[Adapter]]:
    """Every registered adapter class, installed or not, by name."""
    return {name: get_adapter(name) for name in server_names()}


def get_adapter(name: str) -> type[Adapter]:
    """The adapter class for a server name or a ``module:Class`` string."""
    if ":" in name:
        return _import_adapter(name)
    entry_point = _entry_points().get(name)
    if entry_point is None:
        raise ServerError(_unknown_server_message(name))
    return _check_adapter(entry_point.load(), name)


def servers_with(capability: str) -> list[str]:
    """Names of the registered servers that declare *capability*."""
    return [name for name, cls in adapters().items() if getattr(cls.capabilities, capability, False)]


def choose_adapter(config: Config) -> tuple[type[Adapter], dict[str, Any]]:
    """The adapter for ``config.server``, checked installed and able to honour the
    config, and its ``-o`` options parsed: where a server is chosen, once."""
    if config.server == "auto":
        return _auto(config)
    cls = get_adapter(config.server)
    if not cls.is_installed():
        raise ServerError(f"server {cls.name!r} is not installed; install it with: {cls.install_hint()}")
    return cls, _checked(cls, config)


def _checked(cls: type[Adapter], config: Config) -> dict[str, Any]:
    with suggesting_others(cls.name):
        cls.refuse(config)
    return cls.parse_options(config.options)


def _auto(config: Config) -> tuple[type[Adapter], dict[str, Any]]:
    refusals = []
    for name in server_names():
        cls = get_adapter(name)
        if not cls.is_installed():
            continue
        try:
            return cls, _checked(cls, config)
        except ServerError as exc:
            refusals.append(str(exc))
    raise ServerError(
        "no installed server can honour these options"
        + (f": {refusals[-1]}" if refusals else f"; install one, e.g. {install_hint('cheroot')}")
    )


@contextmanager
def suggesting_others(name: str) -> Iterator[None]:
    """Turn a server's refusal for want of a capability into one that names the
    servers that have it."""
    try:
        yield
    except Unsupported as exc:
        others = [other for other in servers_with(exc.capability) if other != name]
        instead = ", ".join(f"-s {other}" for other in others) if others else "another server"
        raise ServerError(f"{exc}; use {instead}") from None


_MODULE_CLASS_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$")


def _import_adapter(spec: str) -> type[Adapter]:
    if not _MODULE_CLASS_RE.match(spec):
        raise ServerError(f"bad -s {spec!r}: expected a server name (see 'anyserve list') or module:Class")
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ServerError(f"cannot import adapter module {module_name!r} of -s {spec}: {exc}") from None
    except Exception as exc:  # the user's adapter module is broken: say so in one line
        raise ServerError(
            f"adapter module {module_name!r} of -s {spec} raised {type(exc).__name__} on import: {exc}"
        ) from None
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise ServerError(f"module {module_name!r} has no adapter class {attr!r} (-s {spec})") from None
    return _check_adapter(obj, spec)


def _check_adapter(obj: object, spec: str) -> type[Adapter]:
    if not (isinstance(obj, type) and issubclass(obj, Adapter)):
        raise ServerError(f"-s {spec} is not an adapter: {obj!r} is not a subclass of anyserve.adapters.base.Adapter")
    return obj


def _unknown_server_message(name: str) -> str:
    known = server_names()
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    classes = {n: get_adapter(n) for n in known}
    installed = [n for n, cls in classes.items() if cls.is_installed()]
    missing = [f"{n} ({cls.install_hint()})" for n, cls in classes.items() if not cls.is_installed()]
    return (
        f"unknown server {name!r}; {hint}known servers: {', '.join(known)} "
        f"(installed: {', '.join(installed) or 'none'}"
        + (f"; not installed: {', '.join(missing)}" if missing else "")
        + "); or give an adapter class as module:Class"
    )
