"""A CherryPy app that looks at ``cherrypy.server`` and drives the engine itself.

``/server`` reports what ``cherrypy.server`` says of the server that serves it;
``/exit`` and ``/stop`` call ``cherrypy.engine.exit()`` and ``stop()`` from the handler; ``/slow`` holds a
request in flight. Engine listeners append ``start``, ``stop`` and ``exit`` to
the file named by CP_EVENTS_FILE; with CP_FAILING=stop (or exit) a listener of
that channel raises, after which the others still run.
"""

from __future__ import annotations

import os
import time

import cherrypy

#: The app's own server.* values, which cherrypy.server.httpserver reports.
SERVER_CONFIG = {
    "server.socket_timeout": 7,
    "server.max_request_header_size": 12345,
    "server.max_request_body_size": 543210,
}
FAILING_MARKER = "cpengine-failing-listener-marker"


def _record(event: str) -> None:
    path = os.environ.get("CP_EVENTS_FILE")
    if path:
        with open(path, "a") as fh:
            fh.write(f"{event} {os.getpid()}\n")


def _failing() -> None:
    raise RuntimeError(FAILING_MARKER)


def subscribe_listeners() -> None:
    engine = cherrypy.engine
    engine.subscribe("start", lambda: _record("start"))
    engine.subscribe("stop", lambda: _record("stop"))
    engine.subscribe("exit", lambda: _record("exit"))
    failing = os.environ.get("CP_FAILING")
    if failing:
        # Before the recording listeners: they still run after it.
        engine.subscribe(failing, _failing, priority=10)


class Root:
    @cherrypy.expose
    def index(self) -> str:
        return "cpengine root"

    @cherrypy.expose
    @cherrypy.tools.json_out()
    def server(self) -> dict[str, object]:
        server = cherrypy.server
        httpserver = server.httpserver
        return {
            "pid": os.getpid(),
            "running": server.running,
            "bind_addr": server.bind_addr,
            "bound_addr": server.bound_addr,
            "base": server.base(),
            "httpserver": None
            if httpserver is None
            else {
                name: getattr(httpserver, name, None)
                for name in (
                    "bind_addr",
                    "timeout",
                    "max_request_header_size",
                    "max_request_body_size",
                    "server_name",
                    "protocol",
                    "version",
                    "ready",
                )
            },
            "socket_port": httpserver.socket.getsockname()[1] if httpserver is not None else None,
        }

    @cherrypy.expose
    def pid(self) -> str:
        return str(os.getpid())

    @cherrypy.expose
    def slow(self, s: str = "1", mark: str = "") -> str:
        if mark:
            with open(mark, "w"):
                pass
        time.sleep(float(s))
        return f"slept {s}"

    @cherrypy.expose
    def exit(self) -> str:
        cherrypy.engine.exit()
        return "exiting"

    @cherrypy.expose
    def stop(self) -> str:
        cherrypy.engine.stop()
        return "stopping"


def make_application() -> cherrypy.Application:
    cherrypy.config.update(SERVER_CONFIG)
    subscribe_listeners()
    return cherrypy.Application(Root(), script_name="")


application = make_application()
