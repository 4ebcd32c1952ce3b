"""Shutdown cases: each starts its own ``anyserve`` process, for every adapter."""

from __future__ import annotations

import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from anyserve.registry import adapters

from .app import pattern
from .conftest import (
    APP,
    Response,
    address,
    fetch,
    is_closed,
    raw_connection,
    read_response,
    start_anyserve,
    wait_for_file,
)

SERVERS = list(adapters())
BODY_SIZE = 256 * 1024  # sent over several writes, so a cut-off response shows


#: Each server with its defaults, and those with threads also with one (served
#: in the accepting thread by wsgiref and werkzeug).
SHUTDOWN_CASES = [(server, ()) for server in SERVERS] + [
    (server, ("--threads", "1")) for server, cls in adapters().items() if cls.capabilities.threads
]


@pytest.mark.parametrize(("server", "args"), SHUTDOWN_CASES, ids=[" ".join((s, *a)) for s, a in SHUTDOWN_CASES])
def test_sigterm_lets_the_request_in_flight_finish(server: str, args: tuple[str, ...], tmp_path: Path) -> None:
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


@pytest.mark.parametrize("server", SERVERS)
def test_an_idle_keep_alive_connection_does_not_hold_up_shutdown(server: str) -> None:
    running = start_anyserve(server, APP, "--graceful-timeout", "30")
    try:
        with raw_connection(running.url) as (sock, reader):
            sock.sendall(b"GET /echo HTTP/1.1\r\nHost: conformance\r\n\r\n")
            assert read_response(reader).status == 200  # the connection stays open, idle (where kept alive)
            started = time.monotonic()
            running.proc.send_signal(signal.SIGTERM)
            assert running.proc.wait(timeout=30) == 0, running.stderr_text()
            assert time.monotonic() - started < 5, "shutdown waited for an idle connection"
            assert is_closed(reader)
    finally:
        running.stop()


#: A request running past --graceful-timeout: each server with its defaults, and
#: those that serve in their accepting thread with --threads 1.
CUT_CASES = [(server, ()) for server in SERVERS] + [
    (server, ("--threads", "1")) for server in ("wsgiref", "werkzeug") if server in SERVERS
]


@pytest.mark.parametrize(("server", "args"), CUT_CASES, ids=[" ".join((s, *a)) for s, a in CUT_CASES])
def test_a_request_past_the_graceful_timeout_is_cut_short(server: str, args: tuple[str, ...], tmp_path: Path) -> None:
    """--graceful-timeout bounds the stop: anyserve exits soon after it, with a
    warning, however long the app still runs (a supervisor counts on it)."""
    running = start_anyserve(server, APP, "--graceful-timeout", "1", *args)
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
        started = time.monotonic()
        running.proc.send_signal(signal.SIGTERM)
        assert running.proc.wait(timeout=30) == 0, running.stderr_text()
        elapsed = time.monotonic() - started
        client.join(timeout=30)
    finally:
        running.stop()
    assert elapsed < 5, f"{server} took {elapsed:.1f} s to exit with --graceful-timeout 1"
    assert "graceful timeout (1.0s) reached" in running.stderr_text(), running.stderr_text()[-2000:]
    answer = result.get("answer")
    assert answer is None or answer.body != b"slept", "the request was not cut short"
    with pytest.raises(ConnectionRefusedError):  # nothing of the server outlives anyserve
        socket.create_connection(address(running.url), timeout=5).close()
