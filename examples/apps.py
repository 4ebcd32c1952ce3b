"""The two apps the embedding examples serve: a plain WSGI app and a CherryPy app.

The CherryPy app reports its engine's state, how often ``main`` was published
and from which thread, so you can see the engine is driven from your loop.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import cherrypy

MAIN = {"count": 0, "thread": None}


def _on_main() -> None:
    MAIN["count"] += 1
    MAIN["thread"] = threading.get_native_id()


cherrypy.engine.subscribe("main", _on_main)


def plain(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """A plain WSGI app."""
    body = b"plain WSGI app\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


class Root:
    """A CherryPy app, unchanged: anyserve starts and ticks its engine."""

    def __init__(self, loop_thread: int) -> None:
        self.loop_thread = loop_thread

    @cherrypy.expose
    def index(self) -> str:
        return json.dumps(
            {
                "engine": str(cherrypy.engine.state),
                "main": MAIN["count"],
                "main_from_loop_thread": MAIN["thread"] == self.loop_thread,
            }
        )
