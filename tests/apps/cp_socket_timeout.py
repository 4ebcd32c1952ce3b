"""The conformance CherryPy app, with ``cherrypy.server.socket_timeout`` set on the
server object itself (as CherryPy's own tests leave it), not in a config."""

from __future__ import annotations

import cherrypy

from tests.apps.cpapp import application

cherrypy.server.socket_timeout = 1.0

__all__ = ["application"]
