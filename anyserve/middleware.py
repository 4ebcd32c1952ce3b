"""Small WSGI middleware the core applies itself, only when an option asks for it."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any


class RootPath:
    """Serve an app under a URL prefix (--root-path): the prefix becomes SCRIPT_NAME
    and is taken off PATH_INFO when the request carries it, as a proxy that does
    not strip it would send."""

    def __init__(self, app: Callable[..., Iterable[bytes]], prefix: str) -> None:
        self.app = app
        self.prefix = prefix.rstrip("/")

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == self.prefix or path.startswith(self.prefix + "/"):
            path = path[len(self.prefix) :]
        environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + self.prefix
        environ["PATH_INFO"] = path
        return self.app(environ, start_response)
