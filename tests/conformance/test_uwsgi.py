"""uwsgi's own cases: the uwsgi protocol (what nginx's ``uwsgi_pass`` speaks) and its options."""

from __future__ import annotations

import json
import socket
import struct
import subprocess

from anyserve.errors import EXIT_USAGE

from .conftest import ANYSERVE, APP, REPO_ROOT, address, start_anyserve


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
