"""Listeners: anyserve binds every socket itself."""

from __future__ import annotations

import errno
import os
import socket
import stat
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from anyserve.errors import BindError
from anyserve.sockets import (
    INHERITED_FDS_ENV,
    Listener,
    adopt_fd,
    bind,
    bind_listeners,
    parse_bind,
    parse_host_port,
    systemd_listeners,
)


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A directory with a short path: unix socket paths are limited to 107 bytes."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="as-") as name:
        yield Path(name)


def max_backlog(sock: socket.socket) -> int:
    """The accept queue length the kernel uses for a listening socket (Linux:
    tcp_info.tcpi_sacked of a listening socket is sk_max_ack_backlog)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    return struct.unpack_from("8B6I", info)[13]


# -- parsing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("127.0.0.1:80", ("127.0.0.1", 80)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        (":8080", ("0.0.0.0", 8080)),
        ("localhost", ("localhost", 8000)),
        ("example.com:65535", ("example.com", 65535)),
        ("[::1]:9000", ("::1", 9000)),
        ("[::]:0", ("::", 0)),
        ("[::]", ("::", 8000)),
        ("[fe80::1%eth0]:80", ("fe80::1%eth0", 80)),
    ],
)
def test_parse_host_port(spec: str, expected: tuple[str, int]) -> None:
    assert parse_host_port(spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("::1:80", "put an IPv6 address in brackets, e.g. \\[::1\\]:8000"),
        ("::", "put an IPv6 address in brackets"),
        ("1.2.3.4:http", "the port must be a number from 0 to 65535"),
        ("1.2.3.4:", "the port must be a number"),
        ("h:99999", "from 0 to 65535"),
        ("h:-1", "from 0 to 65535"),
        ("[::1", "expected \\[IPv6\\]:PORT"),
        ("[::1]80", "expected \\[IPv6\\]:PORT"),
    ],
)
def test_parse_errors_name_the_listener(spec: str, message: str) -> None:
    with pytest.raises(BindError, match=message) as info:
        parse_host_port(spec)
    assert str(info.value).startswith(f"bad listener {spec!r}: ")


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("fd://3", ("fd", 3)),
        ("unix:/run/app.sock", ("unix", "/run/app.sock")),
        ("unix:///run/app.sock", ("unix", "/run/app.sock")),
        ("unix:rel.sock", ("unix", "rel.sock")),
        ("127.0.0.1:1", ("tcp", ("127.0.0.1", 1))),
    ],
)
def test_parse_bind(spec: str, expected: tuple[str, object]) -> None:
    assert parse_bind(spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"), [("fd://", "descriptor number"), ("fd://x", "descriptor number"), ("unix:", "unix:PATH")]
)
def test_parse_bind_errors(spec: str, message: str) -> None:
    with pytest.raises(BindError, match=message):
        parse_bind(spec)


# -- TCP ----------------------------------------------------------------------------------------


def test_tcp_port_zero_gives_the_real_port_and_the_socket_options() -> None:
    listener = bind("127.0.0.1:0", backlog=16)
    try:
        host, port = listener.address
        assert host == "127.0.0.1" and port > 0
        assert listener.url() == f"http://127.0.0.1:{port}"
        assert listener.url("https") == f"https://127.0.0.1:{port}"
        assert listener.spec == "127.0.0.1:0" and not listener.is_unix
        sock = listener.socket
        assert sock.family == socket.AF_INET
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        assert max_backlog(sock) == 16
        with socket.create_connection(listener.address, timeout=5):
            conn, _ = sock.accept()
            with conn:  # accepted connections inherit TCP_NODELAY on Linux
                assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    finally:
        listener.close()
    assert listener.socket.fileno() == -1


def test_the_default_backlog_is_large() -> None:
    listener = bind("127.0.0.1:0")
    try:
        somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
        assert max_backlog(listener.socket) == min(2048, somaxconn)
    finally:
        listener.close()


def test_bind_listeners_binds_every_address_with_the_backlog() -> None:
    listeners = bind_listeners(["127.0.0.1:0", "127.0.0.1:0"], backlog=7, env={})
    try:
        assert len(listeners) == 2
        assert listeners[0].address[1] != listeners[1].address[1]
        assert [max_backlog(listener.socket) for listener in listeners] == [7, 7]
    finally:
        for listener in listeners:
            listener.close()


def ipv6_loopback_available() -> bool:
    """Asked of the kernel directly, not through anyserve."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def test_ipv6_loopback() -> None:
    if not ipv6_loopback_available():  # a machine without IPv6 must say so, in one line
        with pytest.raises(BindError, match=r"^cannot listen on \[::1\]:0: "):
            bind("[::1]:0")
        return
    listener = bind("[::1]:0")
    try:
        host, port = listener.address
        assert host == "::1" and port > 0
        assert listener.url() == f"http://[::1]:{port}"
        assert listener.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        with socket.create_connection(("::1", port), timeout=5):
            pass
    finally:
        listener.close()


def test_ipv6_wildcard_is_dual_stack() -> None:
    if not ipv6_loopback_available():
        with pytest.raises(BindError, match=r"^cannot listen on \[::\]:0: "):
            bind("[::]:0")
        return
    listener = bind("[::]:0")
    try:
        assert listener.socket.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0
        with socket.create_connection(("127.0.0.1", listener.address[1]), timeout=5):
            pass  # an IPv4 client reaches the IPv6 wildcard socket
    finally:
        listener.close()


def test_address_in_use() -> None:
    first = bind("127.0.0.1:0")
    port = first.address[1]
    try:
        with pytest.raises(BindError) as info:
            bind(f"127.0.0.1:{port}")
        assert str(info.value) == (
            f"cannot listen on 127.0.0.1:{port}: address already in use; "
            "another process is listening there (pick another port with -p or -b)"
        )
    finally:
        first.close()


def test_unknown_host() -> None:
    with pytest.raises(BindError, match=r"cannot listen on no-such-host.invalid:0: cannot resolve host"):
        bind("no-such-host.invalid:0")


def test_address_not_on_this_machine() -> None:
    with pytest.raises(BindError, match="address not available on this machine"):
        bind("192.0.2.1:0")  # TEST-NET-1: never assigned to a host


def test_a_failed_bind_closes_the_ones_bound_before_it(short_tmp: Path) -> None:
    first = bind("127.0.0.1:0")
    path = short_tmp / "first.sock"
    try:
        with pytest.raises(BindError, match="address already in use"):
            bind_listeners([f"unix:{path}", f"127.0.0.1:{first.address[1]}"], env={})
        assert not path.exists()  # the unix listener bound first was closed, its file removed
    finally:
        first.close()


# -- unix sockets ------------------------------------------------------------------------------------


def test_unix_socket_mode_url_and_cleanup(short_tmp: Path) -> None:
    path = short_tmp / "app.sock"
    listener = bind(f"unix:{path}", uds_mode=0o660, backlog=5)
    try:
        assert stat.S_ISSOCK(os.stat(path).st_mode)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
        assert listener.is_unix and listener.address == str(path)
        assert listener.url() == f"unix:{path}"
        assert listener.socket.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(path))
    finally:
        listener.close()
    assert not path.exists()


def test_uds_mode_from_bind_listeners(short_tmp: Path) -> None:
    path = short_tmp / "mode.sock"
    (listener,) = bind_listeners([f"unix:{path}"], uds_mode=0o600, env={})
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    finally:
        listener.close()


def test_a_live_unix_socket_is_refused(short_tmp: Path) -> None:
    path = short_tmp / "live.sock"
    listener = bind(f"unix:{path}")
    try:
        with pytest.raises(BindError, match=f"cannot listen on unix:{path}: another process is listening on {path}"):
            bind(f"unix:{path}")
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(path))  # the first listener still has its file
    finally:
        listener.close()


def test_a_stale_unix_socket_is_replaced(short_tmp: Path) -> None:
    path = short_tmp / "stale.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file stays behind, nobody listens on it
    assert stat.S_ISSOCK(os.stat(path).st_mode)
    listener = bind(f"unix:{path}")
    try:
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(path))
    finally:
        listener.close()


def test_a_regular_file_is_not_replaced(short_tmp: Path) -> None:
    path = short_tmp / "data"
    path.write_text("keep me")
    with pytest.raises(BindError, match=f"{path} exists and is not a socket; remove it or pick another path"):
        bind(f"unix:{path}")
    assert path.read_text() == "keep me"


def test_a_unix_socket_in_a_missing_directory(short_tmp: Path) -> None:
    with pytest.raises(BindError, match=r"cannot listen on unix:.*/nodir/x.sock: No such file or directory"):
        bind(f"unix:{short_tmp}/nodir/x.sock")


# -- inherited descriptors: fd://N, systemd, a reloading parent ------------------------------------


def test_fd_adopts_a_bound_socket_and_listens() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    listener = bind(f"fd://{sock.detach()}", backlog=9)
    try:
        assert listener.address == ("127.0.0.1", port)
        assert listener.spec.startswith("fd://")
        assert listener.socket.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)  # listen() was called
        assert listener.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert max_backlog(listener.socket) == 9
    finally:
        listener.close()


def test_fd_keeps_a_socket_that_already_listens() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(3)
    listener = adopt_fd(sock.detach(), backlog=100)
    try:
        assert max_backlog(listener.socket) == 3  # not listen()ed again
        assert listener.url().startswith("http://127.0.0.1:")
    finally:
        listener.close()


def test_fd_that_is_not_a_socket(tmp_path: Path) -> None:
    with open(tmp_path / "f", "w") as fh:
        fd = fh.fileno()
        with pytest.raises(BindError, match=f"cannot listen on fd://{fd}: descriptor {fd} is not a socket"):
            bind(f"fd://{fd}")
        os.fstat(fd)  # still open: anyserve did not close what it did not take


def test_fd_that_is_not_open() -> None:
    fd = 1000
    with pytest.raises(OSError):  # nothing in this test process opens a thousand files
        os.fstat(fd)
    with pytest.raises(BindError, match=f"descriptor {fd} is not a socket \\(Bad file descriptor\\)"):
        bind(f"fd://{fd}")


def test_fd_that_is_a_datagram_socket() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        with pytest.raises(BindError, match="is not a stream socket"):
            bind(f"fd://{udp.fileno()}")
        assert udp.fileno() != -1


def test_descriptors_from_a_reloading_parent_are_adopted_and_forgotten() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    env = {INHERITED_FDS_ENV: str(sock.detach())}
    listeners = bind_listeners(["127.0.0.1:1"], env=env)  # the specs are not bound again
    try:
        assert [listener.address[1] for listener in listeners] == [port]
        assert INHERITED_FDS_ENV not in env
    finally:
        for listener in listeners:
            listener.close()


def test_systemd_sockets_for_another_process_are_ignored_and_unset() -> None:
    env = {"LISTEN_PID": "1", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "web", "OTHER": "x"}
    assert systemd_listeners(env) == []
    assert env == {"OTHER": "x"}


def test_systemd_variables_that_are_not_numbers() -> None:
    env = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "many"}
    with pytest.raises(BindError, match=r"bad socket activation: .*LISTEN_FDS='many' must be numbers"):
        systemd_listeners(env)
    assert env == {}


def test_no_systemd_variables_means_no_activation() -> None:
    assert systemd_listeners({}) == []


SYSTEMD_CHILD = """
import os, sys
from anyserve.sockets import bind_listeners

os.dup2(int(sys.argv[1]), 3)  # where systemd puts the first socket
os.close(int(sys.argv[1]))
os.environ["LISTEN_PID"] = str(os.getpid())
os.environ["LISTEN_FDS"] = "1"
os.environ["LISTEN_FDNAMES"] = "web"
listeners = bind_listeners(["127.0.0.1:1"], env=os.environ)  # the spec is not bound: systemd's socket is
(listener,) = listeners
print(listener.spec, listener.socket.fileno(), listener.address[1])
print(sorted(name for name in os.environ if name.startswith("LISTEN_")))
"""


def test_systemd_socket_activation() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    try:
        result = subprocess.run(
            [sys.executable, "-c", SYSTEMD_CHILD, str(sock.fileno())],
            pass_fds=[sock.fileno()],
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        sock.close()
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"systemd:web 3 {port}", "[]"]


# -- explanations -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "port", "text"),
    [
        (errno.EACCES, 80, "permission denied; ports below 1024 need root or CAP_NET_BIND_SERVICE"),
        (errno.EACCES, 8080, "permission denied"),
        (errno.EADDRINUSE, 80, "address already in use"),
    ],
)
def test_errors_are_explained(code: int, port: int, text: str) -> None:
    from anyserve.sockets import _explain

    assert _explain(OSError(code, os.strerror(code)), port).startswith(text)


def test_listener_repr_and_family() -> None:
    listener = bind("127.0.0.1:0")
    try:
        assert isinstance(listener, Listener)
        assert listener.family == socket.AF_INET
        assert "127.0.0.1:0" in repr(listener)
    finally:
        listener.close()
