"""A pytest plugin that runs CherryPy's own test suite (``cherrypy.test``) on anyserve.

What the glue does, and nothing else:

- CherryPy's ``cherrypy/test/helper.py`` starts the server of every test class
  (``CPWebCase.setup_class``) through the supervisor it finds under the name
  ``"wsgi"`` in ``CPWebCase.available_servers``; natively that is
  ``LocalWSGISupervisor``, which starts the engine and so CherryPy's own
  ``cherrypy.server`` (cheroot) serving ``cherrypy.tree``. With a server chosen
  (``--anyserve-server NAME`` or ``ANYSERVE_CP_SERVER=NAME``) that entry is
  replaced by a supervisor that serves ``cherrypy.tree`` with anyserve on that
  server, the way a CherryPy user would: ``anyserve.serving(cherrypy.tree,
  server=NAME)`` in a background thread (the address is the app's
  ``server.socket_host``/``socket_port`` or ``socket_file``), for servers
  with the ``background`` capability, and ``anyserve.embed()`` called in a
  Twisted reactor that runs in a thread of its own for twisted. The bridge
  then does what it does for any user (the engine started and exited by
  anyserve, ``cherrypy.server`` unsubscribed, ...). Servers that need the
  process to themselves (gunicorn, uwsgi, eventlet) cannot serve an app that the
  tests build in this process; choosing one is a usage error, and
  ``tests/cherrypy_suite/run.py`` reports them as "cannot run in-process".
- The helper's fixed port 54583 becomes a free port, chosen before the helper
  puts it in CherryPy's config (``server.socket_port``) and in the client
  (``webtest.WebCase.PORT``), so that runs on one machine do not collide.
- Everything else is CherryPy's: no test is skipped, deselected, edited or
  given a different expectation. Tests that do not go through the helper's
  supervisor (``test_bus``, ``test_logging``, the ``helper.CPProcess`` ones in
  ``test_states`` that start ``python -m cherrypy`` in a subprocess...) run as
  they are, in a process where anyserve served the classes before them.
- ``WEBTEST_INTERACTIVE=false`` unless set, as CherryPy's tox.ini sets it: a
  failed assertion is reported, not turned into a prompt on the terminal.
- ``--anyserve-results FILE`` writes each test's outcome (passed, failed,
  skipped) as JSON, for ``run.py`` and ``test_cherrypy_suite.py``.

With no server chosen, the suite runs natively: the baseline.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from typing import Any

import pytest
from cherrypy.test import helper

#: The environment variable that chooses the server when the option is not given.
SERVER_ENV = "ANYSERVE_CP_SERVER"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("anyserve", "CherryPy's test suite served by anyserve")
    group.addoption(
        "--anyserve-server",
        default=os.environ.get(SERVER_ENV) or None,
        metavar="NAME",
        help=f"serve the suite's apps with anyserve on this server (default: ${SERVER_ENV}; none: CherryPy's own)",
    )
    group.addoption(
        "--anyserve-results",
        default=None,
        metavar="FILE",
        help="write every test's outcome to FILE as JSON",
    )


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("WEBTEST_INTERACTIVE", "false")
    name = config.getoption("anyserve_server")
    if name and name != "native":
        install_supervisor(name)
    results = config.getoption("anyserve_results")
    if results:
        config.pluginmanager.register(ResultRecorder(results, name or "native"), "anyserve-results")


def pytest_unconfigure(config: pytest.Config) -> None:
    ReactorThread.stop()


# -- choosing the supervisor ------------------------------------------------------------


def in_process_support(name: str) -> str | None:
    """How *name* serves in this process ("background" or "embed"), or None when it cannot."""
    from anyserve.registry import get_adapter

    capabilities = get_adapter(name).capabilities
    if capabilities.background:
        return "background"
    if capabilities.embed and name == "twisted":
        return "embed"
    return None


def install_supervisor(name: str) -> None:
    """Make the helper's "wsgi" supervisor serve with anyserve on *name*."""
    from anyserve.errors import AnyserveError

    try:
        how = in_process_support(name)
    except AnyserveError as exc:
        raise pytest.UsageError(f"--anyserve-server: {exc}") from None
    if how is None:
        raise pytest.UsageError(
            f"--anyserve-server {name}: {name} cannot serve from a thread or a loop of this process, "
            "where the tests build their apps"
        )
    supervisor = ThreadSupervisor if how == "background" else ReactorSupervisor

    def factory(**options: Any) -> helper.LocalWSGISupervisor:
        return supervisor(anyserve_server=name, **options)

    helper.CPWebCase.available_servers = {**helper.CPWebCase.available_servers, "wsgi": factory}


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class AnyserveSupervisor(helper.LocalWSGISupervisor):
    """The helper's local WSGI supervisor, with anyserve serving ``cherrypy.tree``
    in place of CherryPy's own server."""

    #: The anyserve server to serve with (the helper's own "server" option names its supervisor).
    anyserve_server: str

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.port = free_port(self.host)

    def __str__(self) -> str:
        return f"anyserve -s {self.anyserve_server} on {self.host}:{self.port}"

    def start(self, modulename: str | None = None) -> None:
        import cherrypy

        if modulename:
            cherrypy.server.httpserver = None  # as the helper does
        self.serve(self.get_app())

    def serve(self, app: Any) -> None:
        raise NotImplementedError

    def end(self) -> None:
        raise NotImplementedError

    def sync_apps(self) -> None:
        """anyserve serves ``cherrypy.tree`` itself: mounted apps are served as mounted."""

    def stop(self) -> None:
        import cherrypy

        teardown = getattr(self, "teardown", None)
        if teardown:
            teardown()
        self.end()  # anyserve's stop exits the engine
        for name, server in getattr(cherrypy, "servers", {}).copy().items():  # as the helper does
            server.unsubscribe()
            del cherrypy.servers[name]


class ThreadSupervisor(AnyserveSupervisor):
    """``anyserve.serving()``: the server in a background thread of this process."""

    def serve(self, app: Any) -> None:
        import anyserve

        self._stack = contextlib.ExitStack()
        self._stack.enter_context(anyserve.serving(app, server=self.anyserve_server))

    def end(self) -> None:
        self._stack.close()


class ReactorThread:
    """One Twisted reactor for the whole run, in a thread (a reactor runs once per process)."""

    _thread: threading.Thread | None = None

    @classmethod
    def reactor(cls) -> Any:
        from twisted.internet import reactor

        if cls._thread is None:
            cls._thread = threading.Thread(
                target=reactor.run, kwargs={"installSignalHandlers": False}, name="twisted-reactor", daemon=True
            )
            cls._thread.start()
            deadline = time.monotonic() + 10
            while not reactor.running and time.monotonic() < deadline:
                time.sleep(0.01)
        return reactor

    @classmethod
    def stop(cls) -> None:
        if cls._thread is None:
            return
        from twisted.internet import reactor

        reactor.callFromThread(reactor.stop)
        cls._thread.join(10)
        cls._thread = None


class ReactorSupervisor(AnyserveSupervisor):
    """``anyserve.embed()`` in a Twisted reactor that runs in a thread of this process."""

    def serve(self, app: Any) -> None:
        from twisted.internet.threads import blockingCallFromThread

        import anyserve

        reactor = ReactorThread.reactor()
        self._embedded = blockingCallFromThread(reactor, anyserve.embed, app, server=self.anyserve_server)

    def end(self) -> None:
        from twisted.internet.threads import blockingCallFromThread

        blockingCallFromThread(ReactorThread.reactor(), self._embedded.stop)


# -- recording the outcomes ---------------------------------------------------------------


def short_id(nodeid: str) -> str:
    """``test_conn.py::ConnectionTests::test_x``, wherever pytest found cherrypy/test
    (run.py gives ``--rootdir`` the folder that holds the ``cherrypy`` package)."""
    return nodeid.rpartition("cherrypy/test/")[2]


#: A test's phases (setup, call, teardown) report separately; the worst one is its outcome.
RANK = {"passed": 0, "skipped": 1, "failed": 2}


class ResultRecorder:
    """Each test's outcome: failed if any phase failed, else skipped if skipped
    (xfail included), else passed (xpass included). The file is rewritten after
    each test, so that a run that dies (CherryPy's bus can end the process with
    os._exit) still tells how far it got and in which test it died."""

    def __init__(self, path: str, server: str) -> None:
        self.path = path
        self.server = server
        self.outcomes: dict[str, str] = {}
        self.durations: dict[str, float] = {}
        self.running = ""
        self.started = time.monotonic()

    def pytest_runtest_logstart(self, nodeid: str) -> None:
        self.running = short_id(nodeid)
        self.write()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        test = short_id(report.nodeid)
        outcome = "failed" if report.failed else "skipped" if report.skipped else "passed"
        self.durations[test] = self.durations.get(test, 0.0) + report.duration
        if test not in self.outcomes or RANK[outcome] > RANK[self.outcomes[test]]:
            self.outcomes[test] = outcome

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.outcomes[short_id(report.nodeid)] = "failed"

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        self.running = ""
        self.write(finished=True)

    def write(self, *, finished: bool = False) -> None:
        data = {
            "server": self.server,
            "finished": finished,
            "running": self.running,
            "seconds": round(time.monotonic() - self.started, 1),
            "outcomes": dict(sorted(self.outcomes.items())),
            "durations": {test: round(seconds, 2) for test, seconds in sorted(self.durations.items())},
        }
        with open(self.path + ".part", "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1)
        os.replace(self.path + ".part", self.path)
