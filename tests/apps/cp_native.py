"""The reference for the CherryPy cases: the conformance CherryPy app on CherryPy's
own server, started the way CherryPy's docs show (quickstart-style: engine.start()
then engine.block()), with no anyserve involved.

Usage: python cp_native.py PORT
"""

from __future__ import annotations

import sys

import cherrypy

from tests.apps import cpapp

if __name__ == "__main__":
    cherrypy.config.update(
        {
            # The same environment the bridge applies, so responses compare.
            "environment": "embedded",
            "server.socket_host": "127.0.0.1",
            "server.socket_port": int(sys.argv[1]),
        }
    )
    cherrypy.tree.mount(cpapp.root, "")
    cherrypy.engine.signals.subscribe()
    cherrypy.engine.start()
    print("native cherrypy ready", flush=True)
    cherrypy.engine.block()
