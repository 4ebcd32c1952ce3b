"""The CherryPy app of the conformance suite: it reports its engine over HTTP.

Bus listeners count ``start`` and ``main`` in this process and append ``stop``
and ``exit`` to the file named by CP_EVENTS_FILE, so a test can see them after
the process is gone. The handlers cover what a CherryPy app expects of its
server: sessions, HTTPError, HTTPRedirect, _cp_dispatch, popargs, aliases,
streaming and tools.staticfile.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time

import cherrypy
import cherrypy.lib.sessions

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static", "hello.txt")
SESSIONS = os.path.join(tempfile.gettempdir(), "anyserve-conformance-sessions")
os.makedirs(SESSIONS, exist_ok=True)
EVENTS = {"start": 0, "main": 0, "start_pids": [], "start_threads": []}
_lock = threading.Lock()


def _record(event: str) -> None:
    path = os.environ.get("CP_EVENTS_FILE")
    if path:
        with open(path, "a") as fh:
            fh.write(f"{event} {os.getpid()}\n")


def on_start() -> None:
    with _lock:
        EVENTS["start"] += 1
        EVENTS["start_pids"].append(os.getpid())
    _record("start")
    # A thread of the app's own, as many plugins start one: started before a
    # fork, it would not exist in the workers (and a lock it holds could hang them).
    helper = threading.Thread(target=_helper_loop, name="cp-app-helper", daemon=True)
    helper.start()


def _helper_loop() -> None:
    while True:
        with _lock:
            EVENTS["helper_beats"] = EVENTS.get("helper_beats", 0) + 1
        time.sleep(0.05)


def on_main() -> None:
    with _lock:
        EVENTS["main"] += 1


cherrypy.engine.subscribe("start", on_start)
cherrypy.engine.subscribe("main", on_main)
cherrypy.engine.subscribe("stop", lambda: _record("stop"))
cherrypy.engine.subscribe("exit", lambda: _record("exit"))


def _subscribed(plugin: object, channel: str) -> bool:
    return any(getattr(listener, "__self__", None) is plugin for listener in cherrypy.engine.listeners[channel])


class Users:
    """Dispatched with _cp_dispatch: /users/NAME/ and /users/NAME/greet."""

    def _cp_dispatch(self, vpath: list[str]) -> object:
        if vpath:
            cherrypy.request.params["name"] = vpath.pop(0)
            return self
        return vpath

    @cherrypy.expose
    def index(self, name: str = "nobody") -> str:
        return f"user {name}"

    @cherrypy.expose
    def greet(self, name: str = "nobody") -> str:
        return f"hello {name}"


@cherrypy.popargs("year", "month")
class Archive:
    @cherrypy.expose
    def index(self, year: str = "", month: str = "") -> str:
        return f"archive {year}/{month}"


class Configured:
    """A _cp_config value that --cherrypy-config may override for /configured."""

    _cp_config = {
        "tools.response_headers.on": True,
        "tools.response_headers.headers": [("X-Config-Source", "class")],
    }

    @cherrypy.expose
    def index(self) -> str:
        return "configured"


class Root:
    users = Users()
    archive = Archive()
    configured = Configured()

    @cherrypy.expose
    def index(self) -> str:
        return "cherrypy root"

    @cherrypy.expose
    @cherrypy.tools.json_out()
    def state(self) -> dict[str, object]:
        engine = cherrypy.engine
        with _lock:
            events = dict(EVENTS)
        return {
            "state": str(engine.state),
            "started": engine.state == engine.states.STARTED,
            "pid": os.getpid(),
            "ppid": os.getppid(),
            "start": events["start"],
            "main": events["main"],
            "start_pids": events["start_pids"],
            "environment": cherrypy.config.get("environment"),
            "autoreload_subscribed": _subscribed(engine.autoreload, "start"),
            "builtin_server_subscribed": _subscribed(cherrypy.server, "start"),
            "show_tracebacks": cherrypy.request.show_tracebacks,
            "marker": cherrypy.config.get("conformance.marker"),
        }

    @cherrypy.expose
    @cherrypy.tools.json_out()
    def pause(self, s: str = "0.2") -> dict[str, object]:
        """Holds a worker for a while, so concurrent requests reach the others."""
        time.sleep(float(s))
        with _lock:
            main, beats = EVENTS["main"], EVENTS.get("helper_beats", 0)
        return {
            "pid": os.getpid(),
            "started": cherrypy.engine.state == cherrypy.engine.states.STARTED,
            "main": main,
            "helper_beats": beats,
        }

    @cherrypy.expose
    def slow(self, s: str = "0.5", size: str = "0", mark: str = "") -> bytes:
        """Creates *mark* once the request reached the app, sleeps, then answers
        *size* bytes of pattern(): a request in flight when a stop begins."""
        if mark:
            with open(mark, "w"):
                pass
        time.sleep(float(s))
        cherrypy.response.headers["Content-Type"] = "application/octet-stream"
        block = bytes(range(256)) * 256
        return (block * (int(size) // len(block) + 1))[: int(size)]

    @cherrypy.expose
    def boom(self) -> str:
        raise ValueError("cherrypy-boom-marker")

    @cherrypy.expose
    # In files, not in RAM: with several worker processes a client's next request
    # may reach another one (as under any pre-fork server).
    @cherrypy.tools.sessions(on=True, storage_class=cherrypy.lib.sessions.FileSession, storage_path=SESSIONS)
    def counter(self) -> str:
        count = cherrypy.session.get("count", 0) + 1
        cherrypy.session["count"] = count
        return str(count)

    @cherrypy.expose
    def forbidden(self) -> str:
        raise cherrypy.HTTPError(403, "no entry here")

    @cherrypy.expose
    def missing(self) -> str:
        raise cherrypy.NotFound()

    @cherrypy.expose
    def go(self) -> str:
        raise cherrypy.HTTPRedirect("/target", 303)

    @cherrypy.expose
    def target(self) -> str:
        return "redirected here"

    @cherrypy.expose(["alias_one", "alias_two"])
    def aliased(self) -> str:
        return "aliased handler"

    @cherrypy.expose
    @cherrypy.config(**{"response.stream": True})
    def stream(self, parts: str = "3") -> object:
        def generate() -> object:
            for i in range(int(parts)):
                yield f"part {i}\n".encode()

        return generate()

    @cherrypy.expose
    def echo(self, **params: str) -> str:
        body = cherrypy.request.body.read() if cherrypy.request.method == "POST" and not params else b""
        pairs = ",".join(f"{k}={v}" for k, v in sorted(params.items()))
        return f"{cherrypy.request.method} {pairs} {len(body)}"

    @cherrypy.expose
    def other(self) -> str:
        return "other"

    static_file = cherrypy.tools.staticfile.handler(filename=STATIC)


root = Root()
application = cherrypy.Application(root, script_name=None)
