"""Listeners: anyserve binds every socket itself."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from anyserve.errors import BindError
from anyserve.sockets import bind, bind_listeners, parse_host_port, systemd_listeners


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("127.0.0.1:80", ("127.0.0.1", 80)),
        (":8080", ("0.0.0.0", 8080)),
        ("localhost", ("localhost", 8000)),
        ("[::1]:9000", ("::1", 9000)),
        ("[::]", ("::", 8000)),
    ],
)
def test_parse_host_port(spec: str, expected: tuple[str, int]) -> None:
    assert parse_host_port(spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("::1:80", "brackets"),
        ("1.2.3.4:http", "port must be a number"),
        ("[::1", "expected \\[IPv6\\]:PORT"),
        ("h:99999", "from 0 to 65535"),
    ],
)
def test_parse_errors(spec: str, message: str) -> None:
    with pytest.raises(BindError, match=message):
        parse_host_port(spec)


def test_tcp_port_zero_gives_the_real_port_and_options() -> None:
    listener = bind("127.0.0.1:0", backlog=16)
    try:
        host, port = listener.address
        assert host == "127.0.0.1" and port > 0
        assert listener.url() == f"http://127.0.0.1:{port}"
        sock = listener.socket
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    finally:
        listener.close()


def test_ipv6_loopback() -> None:
    try:
        listener = bind("[::1]:0")
    except BindError as exc:  # a machine without IPv6 must say so in one line
        assert "cannot listen on [::1]:0" in str(exc)
        return
    try:
        assert listener.url().startswith("http://[::1]:")
    finally:
        listener.close()


def test_address_in_use() -> None:
    first = bind("127.0.0.1:0")
    try:
        with pytest.raises(BindError, match="address already in use"):
            bind(f"127.0.0.1:{first.address[1]}")
    finally:
        first.close()


def test_unknown_host() -> None:
    with pytest.raises(BindError, match="cannot resolve host"):
        bind("no-such-host.invalid:0")


def test_unix_socket_mode_and_cleanup(tmp_path: Path) -> None:
    path = tmp_path / "app.sock"
    listener = bind(f"unix:{path}", uds_mode=0o660)
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
        assert listener.url() == f"unix:{path}"
        with pytest.raises(BindError, match="another process is listening"):
            bind(f"unix:{path}")
    finally:
        listener.close()
    assert not path.exists()


def test_stale_unix_socket_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "stale.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens
    listener = bind(f"unix:{path}")
    listener.close()


def test_regular_file_is_not_replaced(tmp_path: Path) -> None:
    path = tmp_path / "data"
    path.write_text("keep me")
    with pytest.raises(BindError, match="exists and is not a socket"):
        bind(f"unix:{path}")
    assert path.read_text() == "keep me"


def test_fd_adopts_an_inherited_socket() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    listener = bind(f"fd://{sock.detach()}")
    try:
        assert listener.address == ("127.0.0.1", port)
        assert listener.socket.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)  # listen() was called
    finally:
        listener.close()


def test_fd_that_is_not_a_socket(tmp_path: Path) -> None:
    with open(tmp_path / "f", "w") as fh:
        with pytest.raises(BindError, match="is not a socket"):
            bind(f"fd://{fh.fileno()}")
    with pytest.raises(BindError, match="descriptor number"):
        bind("fd://three")


def test_a_failed_bind_closes_the_others() -> None:
    first = bind("127.0.0.1:0")
    try:
        with pytest.raises(BindError):
            bind_listeners(["127.0.0.1:0", f"127.0.0.1:{first.address[1]}"], env={})
    finally:
        first.close()


def test_systemd_socket_for_another_process_is_ignored_and_unset() -> None:
    env = {"LISTEN_PID": "1", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "web"}
    assert systemd_listeners(env) == []
    assert env == {}


SYSTEMD_CHILD = """
import os, sys
from anyserve.sockets import bind_listeners
os.dup2(int(sys.argv[1]), 3)  # where systemd puts the first socket
os.environ["LISTEN_PID"] = str(os.getpid())
listeners = bind_listeners(["127.0.0.1:1"], env=os.environ)
print(len(listeners), listeners[0].spec, listeners[0].address[1], "LISTEN_PID" in os.environ)
"""


def test_systemd_socket_activation() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    try:
        result = subprocess.run(
            [sys.executable, "-c", SYSTEMD_CHILD, str(sock.fileno())],
            env={**os.environ, "LISTEN_FDS": "1", "LISTEN_FDNAMES": "web"},
            pass_fds=[sock.fileno()],
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        sock.close()
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", "systemd:web", str(port), "False"]
