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


class HeadWithoutBody:
    """For servers that would send the app's body after a HEAD response (RFC 9112
    section 6.3 forbids it; a keep-alive client then misreads the next response):
    the app runs as for GET, up to its first chunk so a deferred start_response
    happens, and nothing of the body is returned."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        result = self.app(environ, start_response)
        if environ.get("REQUEST_METHOD") != "HEAD":
            return result
        try:
            for chunk in result:
                if chunk:
                    break
        finally:
            if hasattr(result, "close"):
                result.close()
        return []
