"""uwsgi's own cases: the uwsgi protocol (what nginx's ``uwsgi_pass`` speaks) and its options."""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import time

from anyserve.errors import EXIT_USAGE

from ..harness import ANYSERVE, APP, REPO_ROOT, address, start_anyserve


def uwsgi_packet(variables: dict[str, str], body: bytes = b"") -> bytes:
    """A request in the uwsgi protocol: a 4-byte header, then the CGI variables."""
    payload = b"".join(
        struct.pack("<H", len(k)) + k + struct.pack("<H", len(v)) + v
        for k, v in ((key.encode(), value.encode()) for key, value in variables.items())
    )
    return struct.pack("<BHB", 0, len(payload), 0) + payload + body


def test_protocol_uwsgi_answers_the_uwsgi_protocol() -> None:
    running = start_anyserve("uwsgi", APP, "-o", "protocol=uwsgi")
    try:
        host, port = address(running.url)
        request = uwsgi_packet(
            {
                "REQUEST_METHOD": "POST",
                "REQUEST_URI": "/echo?via=uwsgi",
                "PATH_INFO": "/echo",
                "QUERY_STRING": "via=uwsgi",
                "SERVER_PROTOCOL": "HTTP/1.1",
                "SERVER_NAME": "conformance",
                "SERVER_PORT": "80",
                "REMOTE_ADDR": "127.0.0.1",
                "HTTP_HOST": "conformance",
                "CONTENT_LENGTH": "5",
            },
            b"hello",
        )
        with socket.create_connection((host, port), timeout=10) as sock:
            sock.sendall(request)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), answer[:200]
        report = json.loads(body)
        assert (report["method"], report["query_string"], report["length"]) == ("POST", "via=uwsgi", 5)
    finally:
        running.stop()


def test_an_unknown_protocol_is_refused() -> None:
    result = subprocess.run(
        [ANYSERVE, "-s", "uwsgi", "-b", "127.0.0.1:0", "-o", "protocol=spdy", "--app-dir", str(REPO_ROOT), APP],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == EXIT_USAGE, result.stderr
    assert result.stderr.strip().splitlines() == [
        "anyserve: error: invalid value for -o protocol=spdy (server uwsgi): expected one of http, http11, uwsgi"
    ]


def test_term_while_workers_still_load_the_app_stops_at_once() -> None:
    """TERM as soon as the first of four workers serves: the others are still loading the app,
    and uWSGI's graceful shutdown used to wait the whole --graceful-timeout for them."""
    running = start_anyserve("uwsgi", APP, "-w", "4", "--graceful-timeout", "20", "-o", "protocol=uwsgi")
    started = time.monotonic()
    code = running.stop(timeout=10)
    assert code == 0, running.stderr_text()
    assert time.monotonic() - started < 10


def test_uwsgi_does_not_outlive_a_killed_anyserve() -> None:
    running = start_anyserve("uwsgi", APP, "-w", "2")
    master = descendants(running.proc.pid)
    assert master, "no uWSGI processes"
    running.proc.kill()
    running.proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while any(os.path.exists(f"/proc/{pid}") and not zombie(pid) for pid in master):
        assert time.monotonic() < deadline, f"uWSGI processes outlived anyserve: {master}"
        time.sleep(0.05)
    running.stop()


def descendants(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            if parent == pid:
                found += [int(entry), *descendants(int(entry))]
    return found


def zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
