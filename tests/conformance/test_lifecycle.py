"""Shutdown cases: each starts its own ``anyserve`` process, for every server.

Each runs with the server's defaults and with ``--threads 1``: a server with
threads then serves one request at a time (wsgiref and werkzeug in their
accepting thread); one without refuses the option, which is asserted."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

import pytest

from ..apps.app import pattern
from ..harness import (
    APP,
    Response,
    alive,
    capabilities,
    descendants,
    fetch,
    is_closed,
    raw_connection,
    read_response,
    run_anyserve,
    start_anyserve,
    wait_for_file,
)

BODY_SIZE = 256 * 1024  # sent over several writes, so a cut-off response shows


THREADS = pytest.mark.parametrize("args", [(), ("--threads", "1")], ids=["", "threads1"])


def refuses_threads(server: str, args: tuple[str, ...]) -> bool:
    """True, once asserted, when *args* ask for threads of a server that has none."""
    if "--threads" not in args or capabilities(server).threads:
        return False
    result = run_anyserve("-s", server, *args, APP)
    assert result.returncode == 2, result.stderr
    assert f"anyserve: error: {server} cannot honour --threads" in result.stderr
    return True


@THREADS
def test_sigterm_lets_the_request_in_flight_finish(server: str, args: tuple[str, ...], tmp_path: Path) -> None:
    if refuses_threads(server, args):
        return
    running = start_anyserve(server, APP, *args)
    mark = tmp_path / "started"
    result: dict[str, Response | BaseException] = {}

    def slow() -> None:
        try:
            result["answer"] = fetch(running.url, f"/slow?s=1.0&size={BODY_SIZE}&mark={mark}")
        except BaseException as exc:  # reported by the assertion below
            result["error"] = exc

    client = threading.Thread(target=slow)
    try:
        client.start()
        wait_for_file(mark, what="the slow request never reached the app")
        running.proc.send_signal(signal.SIGTERM)
        client.join(timeout=30)
        assert running.proc.wait(timeout=30) == 0, running.stderr_text()
    finally:
        client.join(timeout=30)
        running.stop()
    assert "error" not in result, result
    answer = result["answer"]
    assert isinstance(answer, Response)
    assert answer.status == 200
    assert answer.body == b"".join(pattern(BODY_SIZE)), f"{len(answer.body)} of {BODY_SIZE} bytes"


@pytest.mark.servers(has="unix")
def test_tcp_and_unix_listeners_in_one_process(server: str, tmp_path: Path) -> None:
    """-b HOST:PORT -b unix:PATH, as the README's example: both answer, and a stop
    lets a request in flight on each of them finish."""
    directory = tempfile.mkdtemp(prefix="anyserve-", dir="/tmp")  # a unix socket path must be short
    unix = f"unix:{directory}/app.sock"
    running = start_anyserve(server, APP, "-b", unix)
    result: dict[str, Response | BaseException] = {}

    def slow(url: str, mark: Path) -> None:
        try:
            result[url] = fetch(url, f"/slow?s=1.0&size={BODY_SIZE}&mark={mark}")
        except BaseException as exc:  # reported by the assertion below
            result[url] = exc

    try:
        for url in (running.url, unix):
            answer = fetch(url, "/echo")
            assert answer.status == 200, (url, answer)
        clients = [
            threading.Thread(target=slow, args=(url, tmp_path / f"started-{i}"))
            for i, url in enumerate((running.url, unix))
        ]
        for client in clients:
            client.start()
        for i in range(len(clients)):
            wait_for_file(tmp_path / f"started-{i}", what="a slow request never reached the app")
        running.proc.send_signal(signal.SIGTERM)
        for client in clients:
            client.join(timeout=30)
        assert running.proc.wait(timeout=30) == 0, running.stderr_text()
        assert not os.path.exists(f"{directory}/app.sock"), "the socket file was left behind"
    finally:
        running.stop()
        shutil.rmtree(directory, ignore_errors=True)
    for url in (running.url, unix):
        answer = result.get(url)
        assert isinstance(answer, Response), (url, answer)
        assert answer.status == 200 and answer.body == b"".join(pattern(BODY_SIZE)), url


def test_an_idle_keep_alive_connection_does_not_hold_up_shutdown(server: str) -> None:
    running = start_anyserve(server, APP, "--graceful-timeout", "30")
    try:
        with raw_connection(running.url) as (sock, reader):
            sock.sendall(b"GET /echo HTTP/1.1\r\nHost: conformance\r\n\r\n")
            assert read_response(reader).status == 200  # the connection stays open, idle (where kept alive)
            started = time.monotonic()
            running.proc.send_signal(signal.SIGTERM)
            assert running.proc.wait(timeout=30) == 0, running.stderr_text()
            elapsed = time.monotonic() - started
            assert elapsed < 1.0, f"the stop took {elapsed:.2f} s: it waited for an idle connection"
            assert is_closed(reader)
    finally:
        running.stop()


#: The graceful timeout of the cut cases: a stop ends within 1.5 s past it.
CUT_TIMEOUT = 2


@THREADS
def test_a_request_past_the_graceful_timeout_is_cut_short(server: str, args: tuple[str, ...], tmp_path: Path) -> None:
    """--graceful-timeout bounds the stop: anyserve exits soon after it, with a
    warning, however long the app still runs (a supervisor counts on it)."""
    if refuses_threads(server, args):
        return
    running = start_anyserve(server, APP, "--graceful-timeout", str(CUT_TIMEOUT), *args)
    mark = tmp_path / "started"
    result: dict[str, Response | BaseException] = {}

    def slow() -> None:
        try:
            result["answer"] = fetch(running.url, f"/slow?s=12&mark={mark}", timeout=30)
        except BaseException as exc:  # the expected outcome: the connection is cut
            result["error"] = exc

    client = threading.Thread(target=slow)
    try:
        client.start()
        wait_for_file(mark, what="the slow request never reached the app")
        processes = descendants(running.proc.pid)
        started = time.monotonic()
        running.proc.send_signal(signal.SIGTERM)
        assert running.proc.wait(timeout=30) == 0, running.stderr_text()
        elapsed = time.monotonic() - started
        client.join(timeout=30)
    finally:
        running.stop()
    assert elapsed <= CUT_TIMEOUT + 1.5, f"{server} took {elapsed:.1f} s to exit with --graceful-timeout {CUT_TIMEOUT}"
    assert f"graceful timeout ({CUT_TIMEOUT:.1f}s) reached" in running.stderr_text(), running.stderr_text()[-2000:]
    answer = result.get("answer")
    assert answer is None or answer.body != b"slept", "the request was not cut short"
    # Nothing of the server outlives anyserve (a port probe could meet another test's server).
    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in processes):
        assert time.monotonic() < deadline, [pid for pid in processes if alive(pid)]
        time.sleep(0.05)
