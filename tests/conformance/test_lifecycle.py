"""Shutdown cases: each starts its own ``anyserve`` process."""

from __future__ import annotations

import http.client
import signal
import threading
import time
from pathlib import Path

import pytest

from anyserve.registry import adapters

from .conftest import start_anyserve
from .test_http import APP, fetch

SERVERS = list(adapters())


@pytest.mark.parametrize("server", SERVERS)
def test_sigterm_lets_the_request_in_flight_finish(server: str, tmp_path: Path) -> None:
    running = start_anyserve(server, APP)
    mark = tmp_path / "started"
    result: dict[str, object] = {}

    def slow() -> None:
        try:
            result["answer"] = fetch(running.url, f"/slow?s=1.0&mark={mark}")
        except Exception as exc:  # reported by the assertion below
            result["error"] = exc

    client = threading.Thread(target=slow)
    try:
        client.start()
        deadline = time.monotonic() + 10
        while not mark.exists():
            assert time.monotonic() < deadline, "the slow request never reached the app"
            time.sleep(0.01)
        running.proc.send_signal(signal.SIGTERM)
        client.join(timeout=30)
        assert running.proc.wait(timeout=30) == 0
    finally:
        running.stop()
    assert "error" not in result, result
    status, _, body = result["answer"]  # type: ignore[misc]
    assert (status, body) == (200, b"slept")


@pytest.mark.parametrize("server", SERVERS)
def test_an_idle_keep_alive_connection_does_not_hold_up_shutdown(server: str) -> None:
    running = start_anyserve(server, APP, "--graceful-timeout", "30")
    host, port = running.url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", "/echo")
        conn.getresponse().read()  # the connection stays open, idle
        started = time.monotonic()
        running.proc.send_signal(signal.SIGTERM)
        assert running.proc.wait(timeout=30) == 0
        assert time.monotonic() - started < 5, "shutdown waited for an idle connection"
    finally:
        conn.close()
        running.stop()
