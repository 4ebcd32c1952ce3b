"""anyserve: serve one WSGI application on any of many Python servers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import Config
from .errors import AnyserveError, AppLoadError, BindError, ConfigError, ServerError
from .lifecycle import Lifecycle
from .loader import load_app

__version__ = "0.1.0"

__all__ = [
    "AnyserveError",
    "AppLoadError",
    "BindError",
    "Config",
    "ConfigError",
    "Embedded",
    "Lifecycle",
    "Server",
    "ServerError",
    "__version__",
    "embed",
    "load_app",
    "run",
    "serving",
    "start",
]

if TYPE_CHECKING:
    from .api import Embedded, embed, run, serving, start
    from .server import Server


def __getattr__(name: str) -> Any:
    # The API pulls in the registry; keep `import anyserve` (and --help) light.
    if name == "Server":
        from .server import Server

        return Server
    if name in ("Embedded", "embed", "run", "serving", "start"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'anyserve' has no attribute {name!r}")
