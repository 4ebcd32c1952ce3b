"""A CherryPy app whose ``server.*`` config comes from the environment: CP_SERVER_CONFIG
holds a JSON object of CherryPy config keys (``{"server.thread_pool": 3}``), applied
with ``cherrypy.config.update`` as an app does at import. CP_EXTRA_SERVERS holds a
JSON list of the other servers the app creates and subscribes, each an object
of ``cherrypy._cpserver.Server`` attributes. ``/sleep`` writes the file CP_SLEEP_MARKER
names, if any, once the request is in the app."""

from __future__ import annotations

import json
import os
import time

import cherrypy
from cherrypy._cpserver import Server


class Root:
    @cherrypy.expose
    def index(self) -> str:
        return f"{cherrypy.request.scheme} {cherrypy.request.wsgi_environ['SERVER_PORT']}"

    @cherrypy.expose
    def upload(self, **params: str) -> str:
        return f"read {len(cherrypy.request.body.read())}"

    @cherrypy.expose
    def sleep(self, seconds: str = "1") -> str:
        marker = os.environ.get("CP_SLEEP_MARKER")
        if marker:  # the request is in the app: a test may stop the server now
            with open(marker, "w") as fh:
                fh.write("sleeping")
        time.sleep(float(seconds))
        return "slept"


application = cherrypy.tree.mount(Root())
cherrypy.config.update(json.loads(os.environ.get("CP_SERVER_CONFIG", "{}")))
for attributes in json.loads(os.environ.get("CP_EXTRA_SERVERS", "[]")):
    server = Server()
    for name, value in attributes.items():
        setattr(server, name, value)
    server.subscribe()
