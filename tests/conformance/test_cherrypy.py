"""CherryPy apps run unchanged on every server: the engine cases of the suite.

Every registered adapter serves the CherryPy conformance app (cpapp.py) through
the real ``anyserve`` command; its responses are compared with the same app on
CherryPy's own server started the way CherryPy's docs show (cp_native.py).
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from anyserve.registry import adapters

from ..harness import REPO_ROOT, Running, free_port, start_anyserve, suite_args, wait_for_port

CPAPP = "tests.apps.cpapp:application"
#: Headers a server sets for itself, not the app: left out of comparisons.
SERVER_HEADERS = {"date", "server", "via", "connection", "keep-alive", "transfer-encoding"}
HOST = "conformance.test"


def request(
    url: str, path: str, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection, with a fixed Host so absolute URLs compare."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=15)
    try:
        conn.request(method, path, headers={"Host": HOST, **(headers or {})})
        response = conn.getresponse()
        body = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body
    finally:
        conn.close()


def state(url: str) -> dict[str, Any]:
    status, _, body = request(url, "/state")
    assert status == 200, body
    return json.loads(body)


def is_native(server: str) -> bool:
    return adapters()[server].runs_cherrypy_engine


@pytest.fixture(scope="module")
def native() -> Iterator[str]:
    """The app on CherryPy's own server, with no anyserve involved."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "tests" / "apps" / "cp_native.py"), str(port)],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def served(server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    events = tmp_path_factory.mktemp("events") / "events.txt"
    running = start_anyserve(server, CPAPP, *suite_args(server), env={"CP_EVENTS_FILE": str(events)})
    try:
        yield running
    finally:
        running.stop()


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[1])


def serving_pid(running: Running, reported: dict[str, Any]) -> int:
    """The process that answered: anyserve's own, or one of its workers (a child of
    it, or of the master process anyserve started, for uwsgi)."""
    if adapters()[running.server].capabilities.workers:
        parents = {reported["ppid"], parent_of(reported["ppid"])}
        assert running.proc.pid in parents, "the engine runs in a worker forked by anyserve's server"
        return reported["pid"]
    assert reported["pid"] == running.proc.pid
    return running.proc.pid


def test_engine_started_in_the_serving_process(served: Running) -> None:
    reported = state(served.url)
    assert reported["started"], reported
    assert reported["start"] == 1
    # start listeners ran in the very process that serves, after any fork
    assert reported["start_pids"] == [serving_pid(served, reported)]


def test_main_is_published_from_the_host_loop(served: Running) -> None:
    before = state(served.url)["main"]
    time.sleep(1.0)  # a measurement window, not synchronisation: count ticks in one idle second
    after = state(served.url)["main"]
    assert after - before >= 5, (before, after)


def test_no_builtin_server_and_no_autoreload(served: Running) -> None:
    reported = state(served.url)
    assert not reported["builtin_server_subscribed"]
    assert not reported["autoreload_subscribed"]
    probe = socket.socket()
    try:
        assert probe.connect_ex(("127.0.0.1", 8080)) != 0, "something listens on CherryPy's default port 8080"
    finally:
        probe.close()


def test_environment_and_tracebacks(served: Running) -> None:
    reported = state(served.url)
    status, _, body = request(served.url, "/boom")
    assert status == 500
    if is_native(served.server):
        # -s cherrypy runs CherryPy as quickstart does: no environment, tracebacks shown.
        assert reported["environment"] is None
        assert b"cherrypy-boom-marker" in body
    else:
        assert reported["environment"] == "embedded"
        assert reported["show_tracebacks"] is False
        assert b"Traceback" not in body and b"cherrypy-boom-marker" not in body
    assert request(served.url, "/")[0] == 200  # and it keeps serving


COMPARED_PATHS = [
    "/",
    "/users/bob/greet",
    "/users/alice/",
    "/archive/2024/05/",
    "/archive/2024/05",
    "/alias_one",
    "/alias_two",
    "/aliased",
    "/stream?parts=4",
    "/static_file",
    "/go",
    "/forbidden",
    "/missing",
    "/echo?a=1&b=%C3%A9",
]


@pytest.mark.parametrize("path", COMPARED_PATHS)
def test_answers_as_cherrypy_own_server(served: Running, native: str, path: str) -> None:
    if is_native(served.server):
        # Not embedded: its error pages carry tracebacks, so compare only successes.
        expected = request(native, path)
        if expected[0] >= 400:
            assert request(served.url, path)[0] == expected[0]
            return
    want_status, want_headers, want_body = request(native, path)
    status, headers, body = request(served.url, path)
    assert (status, body) == (want_status, want_body)
    streamed = "content-length" not in want_headers or "content-length" not in headers
    skip = SERVER_HEADERS | ({"content-length"} if streamed else set())
    assert {k: v for k, v in headers.items() if k not in skip} == {
        k: v for k, v in want_headers.items() if k not in skip
    }


def test_sessions_answer_as_cherrypy_own_server(served: Running, native: str) -> None:
    for url in (native, served.url):
        status, headers, body = request(url, "/counter")
        assert (status, body) == (200, b"1")
        cookie = headers["set-cookie"].split(";", 1)[0]
        assert cookie.startswith("session_id=")
        assert request(url, "/counter", headers={"Cookie": cookie})[2] == b"2"
        assert request(url, "/counter", headers={"Cookie": cookie})[2] == b"3"


def test_sigterm_runs_stop_and_exit_listeners(server: str, tmp_path: Path) -> None:
    events = tmp_path / "events.txt"
    running = start_anyserve(server, CPAPP, env={"CP_EVENTS_FILE": str(events)})
    try:
        reported = state(running.url)
        assert reported["started"]
        pid = serving_pid(running, reported)
        running.proc.send_signal(signal.SIGTERM)
        assert running.proc.wait(timeout=30) == 0
    finally:
        running.stop()
    assert events.read_text().splitlines() == [f"start {pid}", f"stop {pid}", f"exit {pid}"]


CHERRYPY_CONFIG = """\
[global]
server.socket_host = "127.0.0.1"
server.socket_port = {port}
conformance.marker = "from-file"
request.show_tracebacks = True

[/configured]
tools.response_headers.headers = [("X-Config-Source", "file")]

[/other]
tools.response_headers.on = True
tools.response_headers.headers = [("X-Only-Other", "yes")]
"""


def test_cherrypy_config_file(server: str, tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "site.conf"
    config.write_text(CHERRYPY_CONFIG.format(port=port))
    running = start_anyserve(server, CPAPP, "--cherrypy-config", str(config), bind=None)
    try:
        # server.socket_host/port of [global] are the address when no -b/-i/-p is given.
        assert running.url == f"http://127.0.0.1:{port}"
        reported = state(running.url)
        assert reported["marker"] == "from-file"
        # The user's own config wins over the embedded environment.
        assert reported["show_tracebacks"] is True
        assert b"cherrypy-boom-marker" in request(running.url, "/boom")[2]
        # A path section overrides the class's _cp_config ...
        assert request(running.url, "/configured/")[1].get("x-config-source") == "file"
        # ... and applies to its own path only.
        assert request(running.url, "/other")[1].get("x-only-other") == "yes"
        root_headers = request(running.url, "/")[1]
        assert "x-only-other" not in root_headers and "x-config-source" not in root_headers
    finally:
        running.stop()


def test_several_apps_at_several_prefixes(server: str) -> None:
    running = start_anyserve(server, "tests.apps.cpmulti:tree")
    try:
        for name in ("app0", "app1"):
            status, headers, body = request(running.url, f"/{name}/")
            assert (status, body) == (200, f"{name} at /{name}".encode())
            assert headers.get("x-app") == name  # each app keeps its own config
        assert request(running.url, "/elsewhere")[0] == 404
    finally:
        running.stop()


def test_cherrypy_log_files(server: str, tmp_path: Path) -> None:
    access, error = tmp_path / "access.log", tmp_path / "error.log"
    config = tmp_path / "logs.conf"
    config.write_text(f'[global]\nlog.access_file = "{access}"\nlog.error_file = "{error}"\n')
    running = start_anyserve(server, CPAPP, "--cherrypy-config", str(config))
    try:
        assert request(running.url, "/users/bob/greet")[0] == 200
        assert request(running.url, "/boom")[0] == 500
        output = running.stderr_text()
    finally:
        running.stop()
    # As CherryPy documents: one access line per request, the handler's traceback in the error log.
    assert '"GET /users/bob/greet HTTP/1.1" 200' in access.read_text()
    assert "cherrypy-boom-marker" in error.read_text()
    if not is_native(server):
        # Embedded: with log files of its own and no screen, CherryPy writes nothing to the console.
        # (the host server's own access log may name the paths)
        assert "cherrypy-boom-marker" not in output, output


@pytest.mark.parametrize("preload", [False, True], ids=["", "preload"])
def test_each_worker_runs_its_own_engine(server: str, preload: bool, tmp_path: Path) -> None:
    """-w 2 on every server (its own workers, or anyserve's supervisor); with
    --preload the app is imported once in the parent, the engine still started in
    each worker, and a thread its start listener starts runs there."""
    events = tmp_path / "events.txt"
    args = ["-w", "2", *(["--preload"] if preload else [])]
    running = start_anyserve(server, CPAPP, *args, env={"CP_EVENTS_FILE": str(events)})
    try:
        pids: set[int] = set()
        deadline = time.monotonic() + 10
        while len(pids) < 2 and time.monotonic() < deadline:
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                futures = [pool.submit(request, running.url, "/pause?s=0.3") for _ in range(8)]
                answers = [json.loads(f.result()[2]) for f in futures]
            pids |= {answer["pid"] for answer in answers}
            assert all(answer["started"] for answer in answers)
            # main is published, and the app's own thread runs, in each worker
            assert all(answer["main"] > 0 and answer["helper_beats"] > 0 for answer in answers), answers
        assert len(pids) == 2, pids  # two workers answered
        assert running.proc.pid not in pids  # none of them is the parent
    finally:
        running.stop()
    started_in = [int(line.split()[1]) for line in events.read_text().splitlines() if line.startswith("start ")]
    # The engine started once in each worker, and nowhere else (not in a parent before the fork).
    assert sorted(started_in) == sorted(pids), (started_in, pids)
