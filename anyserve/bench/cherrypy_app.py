"""The ``cherrypy`` scenario: the hello page through a full CherryPy app.

A plain CherryPy root object, written as CherryPy's tutorials write one; the
loader mounts it and anyserve's CherryPy bridge drives the engine on every server.
"""

from __future__ import annotations

import cherrypy

from .scenarios import HELLO


class Root:
    @cherrypy.expose
    def index(self) -> bytes:
        cherrypy.response.headers["Content-Type"] = "text/plain"
        return HELLO


root = Root()
