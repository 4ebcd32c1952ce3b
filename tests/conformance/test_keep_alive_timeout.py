"""``--timeout-keep-alive`` on every server: a connection that waits longer than
the timeout for a request (its first or the next one) is closed, and so is one
whose request head stops arriving, where the server can (``no read timeout``
is the declared deviation of one that cannot). A connection whose first
request did not come whole is answered 408 (Request Timeout) before it closes,
as cheroot does (``silent request timeout``: it closes without a word). Each
case starts its own process with a short timeout."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from ..harness import APP, CPAPP, Running, deviations, raw_connection, read_response, start_anyserve

TIMEOUT = 1.0
#: A connection is not closed before TIMEOUT - EARLY ...
EARLY = 0.4
#: ... and is closed by TIMEOUT + LATE (waitress looks for idle channels every
#: quarter of the timeout; a loaded machine adds its own delay).
LATE = 1.5
REQUEST = b"GET /echo HTTP/1.1\r\nHost: conformance\r\n\r\n"


def closed_after(sock: socket.socket, since: float) -> tuple[float | None, bytes]:
    """Read until the server closes the connection: how long after *since* it
    did (None: still open at TIMEOUT + LATE), and what it sent meanwhile."""
    received = b""
    deadline = since + TIMEOUT + LATE
    while (remaining := deadline - time.monotonic()) > 0:
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            return time.monotonic() - since, received
        if not chunk:
            return time.monotonic() - since, received
        received += chunk
    return None, received


def start(server: str) -> Running:
    # A short graceful timeout: a server that holds a silent client (declared)
    # is still stopped quickly.
    return start_anyserve(server, APP, "--timeout-keep-alive", str(TIMEOUT), "--graceful-timeout", "1")


def test_an_idle_keep_alive_connection_is_closed_after_the_timeout(server: str) -> None:
    """Closed TIMEOUT after the last response, not after the first: each response
    starts the wait again."""
    running = start(server)
    try:
        with raw_connection(running.url) as (sock, reader):
            sock.sendall(REQUEST)
            assert read_response(reader).status == 200
            if deviations(server).no_keep_alive:
                elapsed, _ = closed_after(sock, time.monotonic())
                assert elapsed is not None and elapsed < EARLY, f"{server} (no keep-alive) kept the connection open"
                return
            time.sleep(TIMEOUT - EARLY)  # idle, but not for long enough
            sock.sendall(REQUEST)
            assert read_response(reader).status == 200, "the connection was closed before the timeout"
            elapsed, received = closed_after(sock, time.monotonic())
    finally:
        running.stop()
    assert "Traceback" not in running.stderr_text(), running.stderr_text()
    assert elapsed is not None, f"{server} kept an idle connection open past {TIMEOUT + LATE} s"
    assert elapsed >= TIMEOUT - EARLY, f"{server} closed an idle connection after {elapsed:.2f} s"
    assert received == b"", received


@pytest.mark.parametrize("sent", [b"", b"GET /echo HTTP/1.1\r\nHost: conformance\r\n"], ids=["nothing", "half_a_head"])
def test_a_client_that_stalls_before_its_request_is_whole_is_cut_after_the_timeout(server: str, sent: bytes) -> None:
    running = start(server)
    try:
        with raw_connection(running.url) as (sock, _):
            sock.sendall(sent)
            elapsed, received = closed_after(sock, time.monotonic())
    finally:
        running.stop()
    assert "Traceback" not in running.stderr_text(), running.stderr_text()
    if deviations(server).no_read_timeout:
        assert elapsed is None, f"{server} declares no read timeout, yet closed the connection after {elapsed} s"
        return
    assert elapsed is not None, f"{server} kept a stalled connection open past {TIMEOUT + LATE} s"
    assert elapsed >= TIMEOUT - EARLY, f"{server} cut a stalled connection after {elapsed:.2f} s"
    if deviations(server).silent_request_timeout:
        assert received == b"", received
    else:  # as cheroot does, and CherryPy's tests expect
        assert received.split(b" ", 2)[:2] == [b"HTTP/1.1", b"408"], received


@pytest.mark.parametrize("server", ["cheroot", "tornado", "cherrypy"])
@pytest.mark.parametrize("where", ["config", "server object"])
def test_a_cherrypy_apps_socket_timeout_is_the_keep_alive_timeout(server: str, where: str, tmp_path: Path) -> None:
    """CherryPy's ``server.socket_timeout`` set by the app, in its config or on
    ``cherrypy.server``, with no option giving one, is --timeout-keep-alive."""
    if where == "config":
        config = tmp_path / "app.conf"
        config.write_text(f"[global]\nserver.socket_timeout = {TIMEOUT}\n")
        running = start_anyserve(server, CPAPP, "--cherrypy-config", str(config))
    else:
        running = start_anyserve(server, "tests.apps.cp_socket_timeout:application")
    try:
        with raw_connection(running.url) as (sock, reader):
            sock.sendall(REQUEST.replace(b"/echo", b"/users/bob/greet"))
            assert read_response(reader).status == 200
            elapsed, _ = closed_after(sock, time.monotonic())
    finally:
        running.stop()
    assert elapsed is not None, f"{server} kept an idle connection open past {TIMEOUT + LATE} s"
    assert elapsed >= TIMEOUT - EARLY, f"{server} closed an idle connection after {elapsed:.2f} s"
