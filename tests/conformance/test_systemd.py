"""systemd integration through the real ``anyserve`` command: socket activation and sd_notify.

Socket activation: a harness (activate.py) binds two sockets, puts them on
descriptors 3 and 4 with LISTEN_FDS, LISTEN_PID and LISTEN_FDNAMES set, and
execs anyserve, which serves on them: every server that claims ``fd``, with
TLS on the socket named ``secure`` where the server can mix HTTP and HTTPS.
sd_notify: the test listens on NOTIFY_SOCKET and sees READY=1 once the server
serves, then STOPPING=1 on SIGTERM, from every server.
The recipe's units are tested in tests/recipes/test_systemd.py.
"""

from __future__ import annotations

import json
import socket
import sys
import tempfile
from pathlib import Path

import pytest

from ..harness import (
    ACTIVATE,
    APP,
    REPO_ROOT,
    Running,
    capabilities,
    fetch,
    free_port,
    https_fetch,
    messages,
    start_anyserve,
)
from ..pki import Pki


@pytest.mark.servers(has="fd")
def test_socket_activation(server: str, pki: Pki) -> None:
    web, secure = free_port(), free_port()
    tls = capabilities(server).tls and capabilities(server).tls_mixed
    args = ["--app-dir", str(REPO_ROOT), *([*pki.certificate_args(), "--tls-bind", "fd://secure"] if tls else []), APP]
    launcher = [sys.executable, ACTIVATE, f"web=127.0.0.1:{web}", f"secure=127.0.0.1:{secure}", "--"]
    running = Running(server, args, launcher=launcher)
    try:
        running.wait_listening(2)
        scheme = "https" if tls else "http"
        assert sorted(running.urls) == sorted([f"http://127.0.0.1:{web}", f"{scheme}://127.0.0.1:{secure}"])
        response = fetch(f"http://127.0.0.1:{web}", "/echo")
        assert response.status == 200
        pid = json.loads(response.body)["pid"]
        if tls:
            status, body = https_fetch(f"https://127.0.0.1:{secure}", "/echo", pki.client_context())
            assert status == 200 and json.loads(body)["url_scheme"] == "https"
        else:
            assert fetch(f"http://127.0.0.1:{secure}", "/echo").status == 200
        if not capabilities(server).workers:
            assert pid == running.proc.pid  # served by the process the harness became
    finally:
        assert running.stop() == 0, running.stderr_text()


def test_sd_notify_ready_then_stopping(server: str, notify_socket: tuple[str, socket.socket]) -> None:
    address, sock = notify_socket
    running = start_anyserve(server, APP, env={"NOTIFY_SOCKET": address})
    try:
        ready = sock.recv(4096).decode()
        assert "READY=1" in ready.splitlines(), ready
        assert fetch(running.url, "/echo").status == 200  # ready means serving
    finally:
        assert running.stop() == 0, running.stderr_text()
    stopping = sock.recv(4096).decode()
    assert "STOPPING=1" in stopping.splitlines(), stopping
    late = messages(sock)
    assert not any("READY=1" in message for message in late), late  # once, not from every worker


def test_sd_notify_to_a_socket_path() -> None:
    with tempfile.TemporaryDirectory(prefix="as-") as directory:  # a short path: at most 107 bytes
        path = str(Path(directory) / "notify")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(path)
            sock.settimeout(20)
            running = start_anyserve("cheroot", APP, env={"NOTIFY_SOCKET": path})
            try:
                assert sock.recv(4096) == b"READY=1"
            finally:
                running.stop()
            assert sock.recv(4096) == b"STOPPING=1"
