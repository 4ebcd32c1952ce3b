"""systemd integration through the real ``anyserve`` command: socket activation and sd_notify.

Socket activation: a harness (activate.py) binds two sockets, puts them on
descriptors 3 and 4 with LISTEN_FDS, LISTEN_PID and LISTEN_FDNAMES set, and
execs anyserve, which serves on them: every server that claims ``fd``, with
TLS on the socket named ``secure`` where the server can mix HTTP and HTTPS.
sd_notify: the test listens on NOTIFY_SOCKET and sees READY=1 once the server
serves, then STOPPING=1 on SIGTERM, from every server.
The recipe (docs/deployment/anyserve.service and anyserve.socket): its units
read with configparser, its ExecStart run the way systemd would run it.
"""

from __future__ import annotations

import configparser
import json
import os
import shlex
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from anyserve.registry import adapters

from ..pki import Pki
from .conftest import ANYSERVE, APP, REPO_ROOT, Running, capabilities, fetch, free_port, start_anyserve
from .recipes import DOCS, as_tested
from .test_tls import certificate_args, https_fetch

SERVERS = list(adapters())
FD_SERVERS = [name for name in SERVERS if capabilities(name).fd]
HARNESS = str(Path(__file__).with_name("activate.py"))


@pytest.mark.parametrize("server", FD_SERVERS)
def test_socket_activation(server: str, pki: Pki) -> None:
    web, secure = free_port(), free_port()
    tls = capabilities(server).tls and capabilities(server).tls_mixed
    args = ["--app-dir", str(REPO_ROOT), *([*certificate_args(pki), "--tls-bind", "fd://secure"] if tls else []), APP]
    launcher = [sys.executable, HARNESS, f"web=127.0.0.1:{web}", f"secure=127.0.0.1:{secure}", "--"]
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


@pytest.fixture
def notify_socket() -> Iterator[tuple[str, socket.socket]]:
    """A datagram socket in the abstract namespace, as NOTIFY_SOCKET names it: @name."""
    name = f"anyserve-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(20)
        yield "@" + name, sock


def messages(sock: socket.socket) -> list[str]:
    """Every datagram waiting on *sock*, without waiting for more."""
    received = []
    sock.setblocking(False)
    try:
        while True:
            received.append(sock.recv(4096).decode())
    except BlockingIOError:
        return received
    finally:
        sock.settimeout(20)


@pytest.mark.parametrize("server", SERVERS)
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


# -- the recipe: docs/deployment/anyserve.service and anyserve.socket ----------------


def unit(name: str) -> configparser.ConfigParser:
    """A systemd unit file of the recipe, read as systemd's INI dialect: keys kept as written, no interpolation."""
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((DOCS / name).read_text())
    return parser


SERVICE, SOCKET = unit("anyserve.service"), unit("anyserve.socket")


def exec_start() -> tuple[str, list[str]]:
    """The service's ExecStart as this repository runs it: (server, the other arguments)."""
    return as_tested(shlex.split(SERVICE["Service"]["ExecStart"]), APP)


def test_the_units_say_what_anyserve_does() -> None:
    service, sock = SERVICE["Service"], SOCKET["Socket"]
    assert (service["Type"], service["NotifyAccess"]) == ("notify", "main")
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["KillSignal"] == "SIGTERM"
    assert "anyserve.socket" in SERVICE["Unit"]["Requires"].split()
    argv = shlex.split(service["ExecStart"])
    assert "-b" not in argv and "--bind" not in argv  # the socket unit's socket, not one of its own
    graceful = float(argv[argv.index("--graceful-timeout") + 1])
    assert float(service["TimeoutStopSec"]) > graceful
    assert sock["ListenStream"] == "80" and sock["FileDescriptorName"]


def test_exec_start_is_accepted_by_anyserve_check() -> None:
    server, args = exec_start()
    result = subprocess.run(
        [ANYSERVE, "check", "-s", server, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def notification(sock: socket.socket) -> tuple[str, int]:
    """The next datagram on NOTIFY_SOCKET and the id of the process that sent it (SO_PASSCRED)."""
    data, ancillary, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(struct.calcsize("iII")))
    for level, kind, payload in ancillary:
        if (level, kind) == (socket.SOL_SOCKET, socket.SCM_CREDENTIALS):
            return data.decode(), struct.unpack("iII", payload[: struct.calcsize("iII")])[0]
    raise AssertionError(f"no credentials with {data!r}")


def serving_pids(url: str, count: int) -> set[int]:
    return {json.loads(fetch(url, "/echo").body)["pid"] for _ in range(count)}


def test_the_units_as_systemd_runs_them(notify_socket: tuple[str, socket.socket]) -> None:
    """ExecStart with the ListenStream socket on descriptor 3 (named as FileDescriptorName says, on a free
    loopback port instead of 80) and NOTIFY_SOCKET: READY from the main process, ExecReload, the stop."""
    address, sock = notify_socket
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    server, args = exec_start()
    name, port = SOCKET["Socket"]["FileDescriptorName"], free_port()
    launcher = [sys.executable, HARNESS, f"{name}=127.0.0.1:{port}", "--"]
    running = Running(server, args, env={"NOTIFY_SOCKET": address}, launcher=launcher)
    try:
        main = running.proc.pid  # $MAINPID: the harness execs anyserve
        ready, sender = notification(sock)
        assert "READY=1" in ready.splitlines() and sender == main, (ready, sender, main)
        running.wait_listening()
        url = f"http://127.0.0.1:{port}"
        assert running.urls == [url]
        before = serving_pids(url, 8)
        assert main not in before  # served by the workers of -w

        # ExecReload=/bin/kill -HUP $MAINPID: the workers are replaced, the main process stays.
        kill, how, whom = shlex.split(SERVICE["Service"]["ExecReload"])
        assert (Path(kill).name, how, whom) == ("kill", "-HUP", "$MAINPID")
        os.kill(main, signal.SIGHUP)
        running.wait_for_output("SIGHUP: restarting the workers")
        deadline = time.monotonic() + 60
        while not serving_pids(url, 4) - before:
            assert time.monotonic() < deadline, f"no new worker served after HUP:\n{running.stderr_text()}"
            time.sleep(0.1)
        assert running.proc.poll() is None
    finally:
        code = running.stop()
    assert code == 0, running.stderr_text()
    stopping, sender = notification(sock)
    assert "STOPPING=1" in stopping.splitlines() and sender == main, (stopping, sender, main)
    late = messages(sock)
    assert not any("READY=1" in message for message in late), late
