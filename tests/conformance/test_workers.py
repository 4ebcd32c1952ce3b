"""``--workers 3`` on every server: a killed worker is replaced, TERM drains every
worker, HUP replaces them with no request refused. The pre-fork servers
(gunicorn, uwsgi) do this with their own master; every other server with
anyserve's supervisor. Each case starts its own ``anyserve`` process."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from anyserve.errors import EXIT_APP
from anyserve.registry import adapters

from ..harness import APP, REPO_ROOT, Running, children, fetch, start_anyserve, wait_for_file

WORKERS = 3
#: Extra options so that ten requests can be in flight at once on three workers.
CONCURRENCY = {"gunicorn": ["-t", "4"]}


def start(server: str, *args: str) -> Running:
    return start_anyserve(server, APP, "-w", str(WORKERS), *CONCURRENCY.get(server, []), *args)


def workers(running: Running) -> set[int]:
    """The serving processes: anyserve's children, or for a server whose master
    anyserve starts as a child of its own (uwsgi), that master's children."""
    direct = children(running.proc.pid)
    if adapters()[running.server].capabilities.workers and len(direct) == 1:
        nested = children(next(iter(direct)))
        if nested:
            return nested
    return direct


def wait_until(condition: Callable[[], object], timeout: float, what: object) -> None:
    """Wait for *condition*; *what* (or what it returns, when callable) says what failed."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what() if callable(what) else what
        time.sleep(0.05)


def log_lines(running: Running) -> str:
    """anyserve's own lines, without the servers' access lines."""
    return "\n".join(line for line in running.stderr_text().splitlines() if "GET /echo" not in line)[-4000:]


def answering_pid(url: str) -> int:
    response = fetch(url, "/echo", headers={"Connection": "close"}, timeout=10)
    assert response.status == 200
    return int(json.loads(response.body)["pid"])


def pids_answering(url: str, burst: int = 12) -> set[int]:
    """The pids that answer a burst of concurrent slow requests (so every worker gets some)."""
    with ThreadPoolExecutor(burst) as pool:
        return set(pool.map(lambda _: answering_pid(url), range(burst)))


class Stream:
    """Clients sending requests back to back, each on a new connection, recording failures."""

    def __init__(self, url: str, clients: int = 3) -> None:
        self.url = url
        self.done = threading.Event()
        self.lock = threading.Lock()  # held while a request is in flight
        self.ok = 0
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(clients)]

    def run(self) -> None:
        while not self.done.is_set():
            with self.lock:
                try:
                    answering_pid(self.url)
                    self.ok += 1
                except Exception as exc:  # a refused or cut request: the failure the tests look for
                    self.failures.append(repr(exc))
            time.sleep(0.001)

    def __enter__(self) -> Stream:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        for thread in self.threads:
            thread.join(timeout=30)


def test_the_app_is_told_it_runs_in_several_processes(server: str) -> None:
    running = start(server)
    try:
        response = fetch(running.url, "/echo")
        assert response.status == 200, response
        assert json.loads(response.body)["multiprocess"] is True
    finally:
        running.stop()


def test_a_killed_worker_is_replaced(server: str) -> None:
    running = start(server)
    try:
        wait_until(lambda: len(workers(running)) == WORKERS, 10, f"not {WORKERS} workers: {workers(running)}")
        before = workers(running)
        with Stream(running.url, clients=1) as stream:
            wait_until(lambda: stream.ok >= 5, 10, "the stream of requests did not start")
            with stream.lock:  # between two requests: the killed worker has none in flight
                victim = answering_pid(running.url)
                assert victim in before
                os.kill(victim, signal.SIGKILL)
                killed_at = time.monotonic()
            wait_until(
                lambda: len(workers(running) - before) >= 1 and len(workers(running)) == WORKERS,
                5,
                f"no new worker within 5 s of killing {victim}: {workers(running)}",
            )
            (new,) = workers(running) - before
            wait_until(
                lambda: new in pids_answering(running.url),
                5 - (time.monotonic() - killed_at),
                f"the new worker {new} did not answer within 5 s",
            )
        assert stream.failures == [], stream.failures
        assert running.stop() == 0, running.stderr_text()
        # Workers fork from a parent that imported nothing a green-thread server must patch first.
        assert "may still block" not in running.stderr_text()
    finally:
        running.stop()


def test_sigterm_lets_ten_requests_in_flight_finish(server: str, tmp_path: Path) -> None:
    running = start(server)
    marks = [tmp_path / f"started-{n}" for n in range(10)]
    results: list[object] = []

    def slow(mark: Path) -> None:
        try:
            results.append(fetch(running.url, f"/slow?s=1.5&mark={mark}", timeout=30).body)
        except Exception as exc:  # reported by the assertion below
            results.append(exc)

    clients = [threading.Thread(target=slow, args=(mark,)) for mark in marks]
    try:
        wait_until(lambda: len(workers(running)) == WORKERS, 10, f"not {WORKERS} workers")
        for client in clients:
            client.start()
        for mark in marks:
            wait_for_file(mark, what=f"only {sum(m.exists() for m in marks)} of 10 requests reached the app")
        running.proc.send_signal(signal.SIGTERM)
        assert running.proc.wait(timeout=30) == 0, running.stderr_text()
    finally:
        for client in clients:
            client.join(timeout=30)
        running.stop()
    assert results == [b"slept"] * 10, results
    assert not workers(running), "workers outlived anyserve"


def test_sighup_replaces_the_workers_and_refuses_no_request(server: str) -> None:
    running = start(server)
    try:
        wait_until(lambda: len(workers(running)) == WORKERS, 10, f"not {WORKERS} workers")
        before = workers(running)
        with Stream(running.url) as stream:
            wait_until(lambda: stream.ok >= 10, 10, "the stream of requests did not start")
            running.proc.send_signal(signal.SIGHUP)
            wait_until(
                lambda: not (workers(running) & before) and len(workers(running)) == WORKERS,
                30,
                lambda: (
                    f"the workers were not all replaced: before {before}, now {workers(running)}\n{log_lines(running)}"
                ),
            )
            ok_at_replacement = stream.ok
            wait_until(lambda: stream.ok > ok_at_replacement + 10, 10, "no requests after the restart")
        assert stream.failures == [], stream.failures
        assert running.proc.poll() is None
        assert running.stop() == 0, running.stderr_text()
    finally:
        running.stop()


def test_ttin_adds_a_worker_and_ttou_removes_one() -> None:
    running = start("cheroot")  # anyserve's supervisor
    try:
        wait_until(lambda: len(workers(running)) == WORKERS, 10, f"not {WORKERS} workers")
        running.proc.send_signal(signal.SIGTTIN)
        wait_until(lambda: len(workers(running)) == WORKERS + 1, 10, f"SIGTTIN: {workers(running)}")
        for _ in range(WORKERS + 2):  # never below one
            running.proc.send_signal(signal.SIGTTOU)
            time.sleep(0.2)
        wait_until(lambda: len(workers(running)) == 1, 10, f"SIGTTOU: {workers(running)}")
        assert answering_pid(running.url) in workers(running)
        assert "one worker left; it stays" in running.stderr_text()
        assert running.stop() == 0
    finally:
        running.stop()


BAD_APP = "tests.apps.app:no_such_app"


@pytest.mark.parametrize("server", ["cheroot", "tornado", "gunicorn", "uwsgi"])
def test_workers_that_cannot_load_the_app_end_the_start_with_one_error_line(server: str) -> None:
    running = Running(server, ["-b", "127.0.0.1:0", "-w", str(WORKERS), "--app-dir", str(REPO_ROOT), BAD_APP])
    try:
        assert running.proc.wait(timeout=30) == EXIT_APP
    finally:
        running.stop()
    errors = [line for line in running.stderr_text().splitlines() if line.startswith("anyserve: error:")]
    assert len(errors) == 1, running.stderr_text()
    assert "has no attribute 'no_such_app' (APP 'tests.apps.app:no_such_app')" in errors[0]
    assert "Traceback" not in running.stderr_text()
    assert not children(running.proc.pid)


def test_a_worker_dying_young_is_replaced_after_a_pause(tmp_path: Path) -> None:
    """A worker that dies soon after it started is replaced after a pause that
    grows, and the log says how each one ended."""
    running = start("cheroot")
    try:
        wait_until(lambda: len(workers(running)) == WORKERS, 10, f"not {WORKERS} workers")
        for _ in range(2):
            victim = answering_pid(running.url)
            os.kill(victim, signal.SIGKILL)
            wait_until(lambda v=victim: v not in workers(running) and len(workers(running)) == WORKERS, 10, "")
        text = running.stderr_text()
        assert re.search(r"Worker \d \(pid \d+\) died after [\d.]+ s \(signal SIGKILL\); starting another in", text)
        assert running.stop() == 0
    finally:
        running.stop()


@pytest.mark.parametrize("server", ["cheroot", "uwsgi"])
def test_ttin_without_a_supervisor_is_logged_and_ignored(server: str) -> None:
    running = start_anyserve(server, APP)  # one process: nothing to add
    try:
        running.proc.send_signal(signal.SIGTTIN)
        running.wait_for_output("Received SIGTTIN: .* ignored")
        assert answering_pid(running.url)
        assert running.stop() == 0
    finally:
        running.stop()
