"""One CherryPy root, served plain (``plain``) and with CherryPy's own proxy tool (``proxied``)."""

from __future__ import annotations

import cherrypy


class Root:
    @cherrypy.expose
    @cherrypy.tools.json_out()
    def base(self) -> dict[str, object]:
        request = cherrypy.request
        return {
            "base": request.base,
            "remote_ip": request.remote.ip,
            "scheme": request.scheme,
            "url": cherrypy.url("/base"),
        }


plain = cherrypy.Application(Root(), None)
proxied = cherrypy.Application(Root(), None, {"/": {"tools.proxy.on": True}})
