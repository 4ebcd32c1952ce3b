"""Two CherryPy apps mounted at two prefixes of one cherrypy.tree, each with its own config."""

from __future__ import annotations

import cherrypy


class Site:
    def __init__(self, name: str) -> None:
        self.name = name

    @cherrypy.expose
    def index(self) -> str:
        return f"{self.name} at {cherrypy.request.script_name}"

    @cherrypy.expose
    def setting(self) -> str:
        return str(cherrypy.request.config.get("tools.response_headers.headers"))


def _config(name: str) -> dict[str, dict[str, object]]:
    return {"/": {"tools.response_headers.on": True, "tools.response_headers.headers": [("X-App", name)]}}


cherrypy.tree.mount(Site("app0"), "/app0", _config("app0"))
cherrypy.tree.mount(Site("app1"), "/app1", _config("app1"))
tree = cherrypy.tree
