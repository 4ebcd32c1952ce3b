"""Listeners: anyserve binds every socket itself and hands bound sockets to the adapter.

One place gets listening sockets right for every server: SO_REUSEADDR, TCP_NODELAY
(inherited by accepted connections on Linux), a large backlog, dual-stack IPv6,
unix sockets with their mode and stale-file cleanup, inherited descriptors
(``fd://N``) and systemd socket activation (``LISTEN_FDS``/``LISTEN_PID``, with
the names of ``LISTEN_FDNAMES``). A listener also says whether it serves TLS.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import BindError

if TYPE_CHECKING:
    from .tls import TLS

SD_LISTEN_FDS_START = 3
#: Descriptors handed from a reloading parent to its child, comma-separated, each
#: as ``FD`` or ``FD=SPEC`` (SPEC: the address the parent bound it for).
INHERITED_FDS_ENV = "_ANYSERVE_INHERITED_FDS"


@dataclass
class Listener:
    """A bound, listening socket and where it came from."""

    socket: socket.socket
    spec: str
    #: Set when anyserve created the unix socket file and removes it on close.
    unix_path: str | None = field(default=None, repr=False)
    #: The name systemd gave this socket (``LISTEN_FDNAMES``), if any.
    name: str | None = None
    #: How this listener serves TLS (an ``anyserve.tls.TLS``); None for plain HTTP.
    tls: TLS | None = field(default=None, repr=False)

    @property
    def family(self) -> int:
        return self.socket.family

    @property
    def is_unix(self) -> bool:
        return self.socket.family == socket.AF_UNIX

    @property
    def address(self) -> tuple[str, int] | str:
        """The address really bound: (host, port) for TCP (the real port when 0 was
        asked for), the path for a unix socket."""
        name = self.socket.getsockname()
        if self.is_unix:
            return name if isinstance(name, str) else name.decode()
        return name[0], name[1]

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"

    def url(self, scheme: str | None = None) -> str:
        scheme = scheme or self.scheme
        if self.is_unix:
            return f"unix:{self.address}" + (" (TLS)" if scheme == "https" else "")
        host, port = self.address
        if ":" in host:
            host = f"[{host}]"
        return f"{scheme}://{host}:{port}"

    def matches(self, spec: str) -> bool:
        """Whether *spec* (a --bind address, ``fd://N`` or ``fd://NAME``) names this listener."""
        kind, where = parse_tls_bind(spec)
        if kind == "fdname":
            return self.name == where
        if kind == "fd":
            return self.spec == spec or self.socket.fileno() == where
        try:
            if parse_bind(self.spec) == (kind, where):
                return True
        except BindError:
            pass  # systemd:NAME
        if kind == "unix":
            return self.is_unix and self.address == where
        host, port = where  # type: ignore[misc]
        if self.is_unix or port == 0:
            return False
        bound_host, bound_port = self.address  # type: ignore[misc]
        return bound_port == port and _same_host(host, bound_host)

    def close(self) -> None:
        self.socket.close()
        if self.unix_path:
            try:
                os.unlink(self.unix_path)
            except FileNotFoundError:
                pass


def bind_listeners(
    specs: Iterable[str],
    *,
    backlog: int = 2048,
    uds_mode: int | None = None,
    env: MutableMapping[str, str] | None = None,
) -> list[Listener]:
    """Bind every address in *specs*; on the first failure close what was bound and raise.

    With systemd socket activation (``LISTEN_PID`` is this process) the activated
    sockets are used instead of *specs*.
    """
    env = os.environ if env is None else env
    inherited = env.pop(INHERITED_FDS_ENV, None)
    if inherited:
        return [_adopt_inherited(item, backlog) for item in inherited.split(",")]
    activated = systemd_listeners(env, backlog=backlog)
    if activated:
        return activated
    listeners: list[Listener] = []
    try:
        for spec in specs:
            listeners.append(bind(spec, backlog=backlog, uds_mode=uds_mode))
    except BaseException:
        for listener in listeners:
            listener.close()
        raise
    return listeners


def inherited_fds_value(listeners: Iterable[Listener]) -> str:
    """The value of INHERITED_FDS_ENV that hands *listeners* to a child process."""
    return ",".join(f"{listener.socket.fileno()}={listener.spec}" for listener in listeners)


def _adopt_inherited(item: str, backlog: int) -> Listener:
    fd, _, spec = item.partition("=")
    listener = adopt_fd(int(fd), backlog=backlog)
    if spec:
        listener.spec = spec  # as the parent bound it, so --tls-bind still names it
        if spec.startswith("systemd:") and not spec[8:].startswith("fd://"):
            listener.name = spec[8:]
    return listener


def parse_tls_bind(spec: str) -> tuple[str, int | str | tuple[str, int]]:
    """As parse_bind, and ``fd://NAME`` (a socket systemd passed under that name) -> ('fdname', NAME)."""
    if spec.startswith("fd://") and spec[5:] and not spec[5:].isdigit():
        return "fdname", spec[5:]
    return parse_bind(spec)


def same_address(a: str, b: str) -> bool:
    """Whether two addresses are the same once parsed (``:80`` and ``0.0.0.0:80`` are)."""
    return parse_tls_bind(a) == parse_tls_bind(b)


def _same_host(asked: str, bound: str) -> bool:
    if asked == bound:
        return True
    try:
        return any(info[4][0] == bound for info in socket.getaddrinfo(asked, None))
    except socket.gaierror:
        return False


def parse_bind(spec: str) -> tuple[str, int | str | tuple[str, int]]:
    """('fd', N), ('unix', PATH) or ('tcp', (HOST, PORT)); BindError when malformed."""
    if spec.startswith("fd://"):
        try:
            return "fd", int(spec[5:])
        except ValueError:
            raise BindError(f"bad listener {spec!r}: fd:// must be followed by a descriptor number") from None
    if spec.startswith("unix:"):
        path = spec[5:]
        if path.startswith("//"):
            path = path[2:]
        if not path:
            raise BindError(f"bad listener {spec!r}: expected unix:PATH")
        return "unix", path
    return "tcp", parse_host_port(spec)


def bind(spec: str, *, backlog: int = 2048, uds_mode: int | None = None) -> Listener:
    """Bind one address: HOST:PORT, [IPv6]:PORT, :PORT, unix:PATH or fd://N."""
    kind, where = parse_bind(spec)
    if kind == "fd":
        return adopt_fd(where, backlog=backlog, spec=spec)  # type: ignore[arg-type]
    if kind == "unix":
        return _bind_unix(spec, where, backlog, uds_mode)  # type: ignore[arg-type]
    host, port = where  # type: ignore[misc]
    return _bind_tcp(spec, host, port, backlog)


def parse_host_port(spec: str) -> tuple[str, int]:
    """'127.0.0.1:80' -> ('127.0.0.1', 80); '[::1]:80' -> ('::1', 80); ':80' -> ('0.0.0.0', 80)."""
    if spec.startswith("["):
        host, sep, rest = spec[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise BindError(f"bad listener {spec!r}: expected [IPv6]:PORT, e.g. [::1]:8000")
        port_text = rest[1:] if rest else "8000"
    elif spec.count(":") > 1:
        raise BindError(f"bad listener {spec!r}: put an IPv6 address in brackets, e.g. [::1]:8000")
    else:
        host, sep, port_text = spec.rpartition(":")
        if not sep:
            host, port_text = spec, "8000"
        host = host or "0.0.0.0"
    try:
        port = int(port_text)
        if not 0 <= port <= 65535:
            raise ValueError
    except ValueError:
        raise BindError(f"bad listener {spec!r}: the port must be a number from 0 to 65535") from None
    return host, port


def _bind_tcp(spec: str, host: str, port: int, backlog: int) -> Listener:
    try:
        infos = socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise BindError(f"cannot listen on {spec}: cannot resolve host {host!r} ({exc.strerror})") from None
    family, type_, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, type_, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and host in ("::", "::0"):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # dual stack
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(sockaddr)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise BindError(f"cannot listen on {spec}: {_explain(exc, port)}") from None
    return Listener(sock, spec)


def _bind_unix(spec: str, path: str, backlog: int, mode: int | None) -> Listener:
    _remove_stale_socket(spec, path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        if mode is not None:
            os.chmod(path, mode)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise BindError(f"cannot listen on {spec}: {_explain(exc, None)}") from None
    return Listener(sock, spec, unix_path=path)


def _remove_stale_socket(spec: str, path: str) -> None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise BindError(f"cannot listen on {spec}: {path} exists and is not a socket; remove it or pick another path")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        os.unlink(path)  # left behind by a process that is gone
        return
    except OSError:
        return  # let bind() report what is wrong
    finally:
        probe.close()
    raise BindError(f"cannot listen on {spec}: another process is listening on {path}")


def adopt_fd(fd: int, *, backlog: int = 2048, spec: str | None = None) -> Listener:
    """Use an inherited listening socket, e.g. from systemd or a supervisor."""
    spec = spec or f"fd://{fd}"
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise BindError(f"cannot listen on {spec}: descriptor {fd} is not a socket ({exc.strerror})") from None
    if sock.type != socket.SOCK_STREAM:
        sock.detach()
        raise BindError(f"cannot listen on {spec}: descriptor {fd} is not a stream socket")
    try:
        if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            sock.listen(backlog)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as exc:
        sock.detach()
        raise BindError(f"cannot listen on {spec}: {_explain(exc, None)}") from None
    return Listener(sock, spec)


def systemd_listeners(env: MutableMapping[str, str], *, backlog: int = 2048) -> list[Listener]:
    """Sockets passed by systemd socket activation, removed from *env* once taken
    (as sd_listen_fds(unset_environment=1) does), so no server reads them again."""
    pid, count = env.get("LISTEN_PID"), env.get("LISTEN_FDS")
    if not pid or not count:
        return []
    names = env.get("LISTEN_FDNAMES", "").split(":")
    for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        env.pop(key, None)
    try:
        if int(pid) != os.getpid():
            return []
        n = int(count)
    except ValueError:
        raise BindError(f"bad socket activation: LISTEN_PID={pid!r} LISTEN_FDS={count!r} must be numbers") from None
    listeners = []
    for i in range(n):
        fd = SD_LISTEN_FDS_START + i
        name = names[i] if i < len(names) and names[i] else f"fd://{fd}"
        listener = adopt_fd(fd, backlog=backlog, spec=f"fd://{fd}")
        listener.spec = f"systemd:{name}"
        listener.name = names[i] if i < len(names) and names[i] else None
        listeners.append(listener)
    return listeners


def _explain(exc: OSError, port: int | None) -> str:
    if exc.errno == errno.EADDRINUSE:
        return "address already in use; another process is listening there (pick another port with -p or -b)"
    if exc.errno == errno.EACCES:
        if port is not None and 0 < port < 1024:
            return "permission denied; ports below 1024 need root or CAP_NET_BIND_SERVICE"
        return "permission denied"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "address not available on this machine"
    return exc.strerror or str(exc)
