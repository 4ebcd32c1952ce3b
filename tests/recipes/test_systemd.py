"""The systemd recipe (docs/deployment/anyserve.service and anyserve.socket): its
units read with configparser, its ExecStart run the way systemd would run it
(systemd itself does not run in the test machine)."""

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
import time
from pathlib import Path

from ..harness import ACTIVATE, ANYSERVE, APP, REPO_ROOT, Running, fetch, free_port, messages
from .recipes import DOCS, as_tested


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
        # On a free port: check binds the listeners (and releases them); systemd's socket is on port 80.
        [ANYSERVE, "check", "-s", server, *args, "-p", "0"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
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
    launcher = [sys.executable, ACTIVATE, f"{name}=127.0.0.1:{port}", "--"]
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
