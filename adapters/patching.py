"""Monkey-patching the standard library, for the green-thread servers (gevent, eventlet)."""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Mapping
from typing import Any, ClassVar

from anyserve.config import Config, to_bool

from .base import Option

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


#: The ``-o patch`` option every green-thread server takes.
PATCH_OPTION = Option(to_bool, "monkey-patch the standard library before loading the app (default true)")


class MonkeyPatching:
    """Mixed in before the base of a green-thread server's adapter: in a process
    anyserve owns, the standard library is patched first thing, unless ``-o patch=false``."""

    name: ClassVar[str]
    #: The module and function that patch: ("gevent.monkey", "patch_all").
    patching: ClassVar[tuple[str, str]]

    @classmethod
    def prepare_process(cls, config: Config, settings: Mapping[str, Any]) -> None:
        if settings.get("patch", True):
            monkey_patch_first(cls.name, *cls.patching)
