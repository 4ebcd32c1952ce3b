"""The ``cherrypy`` scenario: the hello page through a full CherryPy app.

A plain CherryPy root object, written as CherryPy's tutorials write one; the
loader mounts it and anyserve's CherryPy bridge drives the engine on every server.
CherryPy is imported when the scenario's server calls :func:`make_root`, never
when anyserve itself is imported.
"""

from __future__ import annotations

from typing import Any

from .scenarios import HELLO


def make_root() -> Any:
    import cherrypy

    class Root:
        @cherrypy.expose
        def index(self) -> bytes:
            cherrypy.response.headers["Content-Type"] = "text/plain"
            return HELLO

    return Root()
