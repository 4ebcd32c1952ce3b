"""Apps for the deployment options: each reports what it saw of the request.

``environ`` reports the keys the proxy headers and the routing change (and the
serving process); the
named apps say who answered.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

KEYS = ("SCRIPT_NAME", "PATH_INFO", "REMOTE_ADDR", "wsgi.url_scheme", "HTTP_HOST", "SERVER_NAME", "SERVER_PORT")


def environ(env: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    body = json.dumps({key: env.get(key) for key in KEYS} | {"pid": os.getpid()}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def named(name: str) -> Callable[..., list[bytes]]:
    def app(env: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        body = f"{name} script_name={env['SCRIPT_NAME']} path_info={env['PATH_INFO']}".encode()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]

    return app


app0, app1, app2, default = named("app0"), named("app1"), named("app2"), named("default")
