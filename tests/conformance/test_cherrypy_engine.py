"""``cherrypy.server`` and the CherryPy engine while anyserve serves, and CherryPy
as it was once anyserve has stopped.

The app (tests/apps/cpengine.py) reports what ``cherrypy.server`` says and can
call ``engine.exit()`` from a handler; it is served by the real ``anyserve``
command on every server, and from inside a program (tests/apps/cpprogram.py,
``anyserve.serving()``, or ``anyserve.embed()`` for a server that only embeds)
on every server that can serve from a program.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from anyserve.registry import adapters

from ..harness import REPO_ROOT, Response, Running, capabilities, fetch, free_port, start_anyserve, wait_for_file

APP = "tests.apps.cpengine:application"
FAILING_MARKER = "cpengine-failing-listener-marker"
#: The servers a program can serve from: in a background thread, or embedded in its loop.
IN_PROGRAM = [name for name, cls in adapters().items() if cls.capabilities.background or cls.capabilities.embed]
#: The embedding program's own exit code.
PROGRAM_EXIT_CODE = 3
#: The exit code of a process CherryPy's bus ends with os._exit().
EX_SOFTWARE = 70


def report(url: str) -> dict[str, Any]:
    answer = fetch(url, "/server")
    assert answer.status == 200, answer
    return json.loads(answer.body)


# -- served by the anyserve command -------------------------------------------------------


def test_cherrypy_server_tells_where_anyserve_listens(server: str) -> None:
    running = start_anyserve(server, APP)
    try:
        seen = report(running.url)
    finally:
        running.stop()
    host, port = running.url.removeprefix("http://").rsplit(":", 1)
    assert seen["running"] is True
    # As CherryPy's own server: bind_addr as asked (port 0), bound_addr as bound.
    assert seen["bind_addr"] == [host, 0]
    assert seen["bound_addr"] == [host, int(port)]
    assert seen["socket_port"] == int(port)
    httpserver = seen["httpserver"]
    assert httpserver["bind_addr"] == [host, 0]
    # What anyserve applies: the app's own server.* values (cpengine.SERVER_CONFIG),
    # except on a server whose workers import the app once the listeners are bound
    # (gunicorn, uWSGI), which serves with anyserve's defaults (and warns).
    limits = (httpserver["timeout"], httpserver["max_request_header_size"], httpserver["max_request_body_size"])
    assert limits == ((5, 0, 0) if capabilities(server).workers else (7, 12345, 543210))
    assert httpserver["protocol"] == "HTTP/1.1"
    assert httpserver["ready"] is True
    assert httpserver["server_name"]
    assert httpserver["version"].startswith(f"anyserve ({server}")


@pytest.mark.parametrize("call", ["exit", "stop"])
def test_engine_exit_from_the_app_stops_gracefully(server: str, call: str, tmp_path: Path) -> None:
    """engine.exit() or stop() called by a handler stops what serves it as TERM
    would: the request in flight finishes, the stop and exit listeners run. A
    server with worker processes of its own replaces the worker that stopped,
    as it replaces any worker that ends."""
    events = tmp_path / "events.txt"
    running = start_anyserve(server, APP, "--graceful-timeout", "20", env={"CP_EVENTS_FILE": str(events)})
    try:
        first_pid = int(fetch(running.url, "/pid").body)
        mark = tmp_path / "in-flight"
        answers: list[Response] = []
        slow = threading.Thread(target=lambda: answers.append(fetch(running.url, f"/slow?s=1.5&mark={mark}")))
        slow.start()
        wait_for_file(mark)
        assert fetch(running.url, f"/{call}").body == {"exit": b"exiting", "stop": b"stopping"}[call]
        slow.join(30)
        assert answers and (answers[0].status, answers[0].body) == (200, b"slept 1.5")
        if capabilities(server).workers:
            deadline = time.monotonic() + 30
            while True:
                try:
                    pid = int(fetch(running.url, "/pid", timeout=5).body)
                except OSError:
                    pid = first_pid
                if pid != first_pid:
                    break
                assert time.monotonic() < deadline, "no other worker took over"
                time.sleep(0.1)
            assert running.proc.poll() is None
        else:
            assert running.proc.wait(timeout=30) == 0
    finally:
        running.stop()
    recorded = events.read_text().splitlines()
    assert recorded[:3] == [f"start {first_pid}", f"stop {first_pid}", f"exit {first_pid}"], recorded
    output = running.stderr_text()
    assert "Traceback" not in output and "Warning" not in output, output


def test_a_failing_exit_listener_is_logged_and_the_stop_goes_on(server: str, tmp_path: Path) -> None:
    """CherryPy's bus would end the process with os._exit(70); anyserve logs the
    listener's traceback and stops as usual (exit code 0)."""
    events = tmp_path / "events.txt"
    running = start_anyserve(server, APP, env={"CP_EVENTS_FILE": str(events), "CP_FAILING": "exit"})
    try:
        pid = int(fetch(running.url, "/pid").body)
        running.proc.send_signal(signal.SIGTERM)
        assert running.proc.wait(timeout=30) == 0
    finally:
        running.stop()
    output = running.stderr_text()
    assert FAILING_MARKER in output and "Traceback" in output, output
    # The other exit listeners still ran.
    assert events.read_text().splitlines() == [f"start {pid}", f"stop {pid}", f"exit {pid}"]


def test_a_failing_start_listener_ends_anyserve_with_an_error(server: str) -> None:
    """The engine does not start: anyserve does not serve, and ends with an error
    of its own (not CherryPy's os._exit(70), not hanging on the server's threads)."""
    running = Running(server, ["-b", "127.0.0.1:0", "--app-dir", str(REPO_ROOT), APP], env={"CP_FAILING": "start"})
    try:
        code = running.proc.wait(timeout=30)
    finally:
        running.stop()
    assert code not in (0, EX_SOFTWARE), code
    assert FAILING_MARKER in running.stderr_text()


# -- served from inside a program -----------------------------------------------------------


def run_program(scenario: str, server: str, *args: str, env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Run tests/apps/cpprogram.py; its JSON lines, once it ended with its own exit code."""
    proc = subprocess.run(
        [sys.executable, "-m", "tests.apps.cpprogram", scenario, server, *args],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == PROGRAM_EXIT_CODE, f"exit code {proc.returncode}:\n{proc.stdout}\n{proc.stderr[-4000:]}"
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines and lines[-1].get("done"), proc.stdout
    lines[-1]["stderr"] = proc.stderr
    return lines


def differences(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """What differs between two snapshots of CherryPy's state, one line each."""
    found = []
    for key, value in before.items():
        if key == "config":
            for name in sorted(set(value) | set(after[key])):
                if value.get(name) != after[key].get(name):
                    found.append(f"config {name}: {value.get(name)} -> {after[key].get(name)}")
        elif value != after[key]:
            found.append(f"{key}: {value} -> {after[key]}")
    return found


@pytest.mark.parametrize("server", IN_PROGRAM)
def test_cherrypy_is_put_back_when_anyserve_stops(server: str) -> None:
    (seen, _) = run_program("restore", server)
    before, during, after = seen["before"], seen["during"], seen["after"]
    # While anyserve served, the bridge had changed CherryPy ...
    assert differences(before, during)
    assert during["server"]["running"] is True
    assert "Server.start" not in during["listeners"]["start"]
    # ... and put every bit of it back: subscriptions (cherrypy.server, autoreload),
    # the signal handler, the loggers, the config, cherrypy.server's own state.
    assert differences(before, after) == []


@pytest.mark.parametrize("server", IN_PROGRAM)
def test_serving_then_cherrypy_own_server_in_one_program(server: str) -> None:
    port = free_port()
    (served, native, _) = run_program("then-native", server, str(port))
    assert served == {"anyserve": "cpengine root"}
    assert native == {"native": "cpengine root", "httpserver": "CPWSGIServer"}


@pytest.mark.parametrize("failing", ["stop", "exit"])
@pytest.mark.parametrize("scenario", ["serve", "exit-call"])
@pytest.mark.parametrize("server", IN_PROGRAM)
def test_a_failing_listener_leaves_the_program_its_own_exit_code(
    server: str, scenario: str, failing: str, tmp_path: Path
) -> None:
    """anyserve stops (at the end of serving(), or because the program called
    engine.exit() while it served) and the program goes on to its own end: a
    stop or exit listener that raises is logged with its traceback, the others run."""
    events = tmp_path / "events.txt"
    *states, done = run_program(scenario, server, env={"CP_FAILING": failing, "CP_EVENTS_FILE": str(events)})
    assert states[-1] == {"state_after": "states.EXITING"}
    if scenario == "exit-call":
        # anyserve stopped with the engine, unless it is embedded in the program's
        # loop: then only Embedded.stop() stops it, from that loop.
        embedded = not capabilities(server).background
        assert states[0] == {"state": "states.EXITING", "serves_after_exit": embedded}
    assert FAILING_MARKER in done["stderr"] and "Traceback" in done["stderr"], done["stderr"]
    pid = done["pid"]
    assert events.read_text().splitlines() == [f"start {pid}", f"stop {pid}", f"exit {pid}"]


@pytest.mark.parametrize("server", IN_PROGRAM)
def test_the_app_socket_port_is_where_a_program_serves_it(server: str) -> None:
    port = free_port()
    (seen, _) = run_program("socket-port", server, str(port))
    assert seen == {"url": f"http://127.0.0.1:{port}", "answer": "cpengine root"}


@pytest.mark.parametrize("server", IN_PROGRAM)
def test_a_failing_start_listener_is_raised_to_the_program(server: str) -> None:
    (seen, done) = run_program("start-fails", server, env={"CP_FAILING": "start"})
    assert seen == {"error": "ChannelFailures", "state": "states.EXITING"}
    assert FAILING_MARKER in done["stderr"]
