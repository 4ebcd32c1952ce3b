"""CherryPy root objects, one per site, for --vhost and --mount."""

from __future__ import annotations

import cherrypy


class Site:
    def __init__(self, name: str) -> None:
        self.name = name

    @cherrypy.expose
    def index(self) -> str:
        return f"{self.name} at {cherrypy.request.script_name or '/'} engine {cherrypy.engine.state}"


first, second, third = Site("first"), Site("second"), Site("third")
