"""The test harness: start the real ``anyserve`` command and talk to it over real sockets.

``start_anyserve()`` is the one way a test gets a running server (``Running``
for one it starts by hand); the HTTP helpers below speak to it with the
standard library only (``http.client`` where it is enough, a raw socket where
the test needs to see the bytes). ``servers()`` lists the registered servers a
test runs against, by what they declare; the suite's ``server`` fixture
(``tests/conformance/conftest.py``) is parametrized from it.
"""

from __future__ import annotations

import http.client
import io
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from anyserve.registry import adapters

REPO_ROOT = Path(__file__).resolve().parents[1]
ANYSERVE = str(Path(sys.executable).parent / "anyserve")
APP = "tests.apps.app:app"
#: The socket-activation launcher: binds sockets and passes them as systemd does (tests/activate.py).
ACTIVATE = str(Path(__file__).with_name("activate.py"))
LISTENING = re.compile(r"Listening on (https?://\S+)")
START_TIMEOUT = 20.0
POLL = 0.02  # how often a wait looks again at what it waits for


class Running:
    """An ``anyserve`` process: its URL once it listens, its stderr, and a stop that always ends it."""

    def __init__(
        self,
        server: str | None,
        args: list[str],
        env: dict[str, str] | None = None,
        launcher: list[str] | None = None,
        pass_fds: tuple[int, ...] = (),
        new_session: bool = False,
        cwd: Path = REPO_ROOT,
    ) -> None:
        self.server = server
        #: How the failure messages name it.
        self.name = f"anyserve -s {server}" if server else " ".join(["anyserve", *args])
        self.args = args
        self._stderr = tempfile.TemporaryFile()
        self._final_stderr: str | None = None
        self.proc = subprocess.Popen(
            # A launcher (e.g. a socket-activation harness) runs first and execs anyserve.
            # No server: the command line (or a config file) names it.
            [*(launcher or []), ANYSERVE, *(["-s", server] if server else []), *args],
            cwd=cwd,
            # $PORT and $WEB_CONCURRENCY would set the address and the workers, as gunicorn's.
            env={**{k: v for k, v in os.environ.items() if k not in ("PORT", "WEB_CONCURRENCY")}, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            pass_fds=pass_fds,
            # A session of its own: its process group is the one a service
            # manager or a terminal signals as a whole.
            start_new_session=new_session,
        )
        self.urls: list[str] = []

    @property
    def url(self) -> str:
        return self.urls[0]

    def stderr_text(self) -> str:
        """All the process wrote to stderr so far (and still after stop())."""
        if self._final_stderr is not None:
            return self._final_stderr
        # pread, not seek + read: the process writes through the same open file
        # (its stderr is this file's descriptor), so moving the shared offset
        # would make its next line overwrite what it wrote before.
        fd = self._stderr.fileno()
        return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")

    def wait_listening(self, count: int = 1, timeout: float = START_TIMEOUT) -> Running:
        """Wait for *count* 'Listening on URL' lines; fail if the process exits first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.urls = LISTENING.findall(self.stderr_text())
            if len(self.urls) >= count:
                return self
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited with {self.proc.returncode} before listening:\n{self.stderr_text()}"
                )
            time.sleep(POLL)
        self.stop()
        raise AssertionError(f"{self.name} did not listen within {timeout} s:\n{self.stderr_text()}")

    def wait_for_output(self, pattern: str, timeout: float = START_TIMEOUT) -> str:
        """Wait until stderr matches the regular expression *pattern*; return all of stderr."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.stderr_text()
            if re.search(pattern, text):
                return text
            time.sleep(POLL)
        raise AssertionError(f"no {pattern!r} in the output of {self.name}:\n{self.stderr_text()}")

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait, then kill; returns the exit code. Safe to call more than once."""
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            return self.proc.returncode
        finally:
            if self._final_stderr is None:
                self._final_stderr = self.stderr_text()
                self._stderr.close()


def start_anyserve(
    server: str,
    app: str = APP,
    *args: str,
    bind: str | None = "127.0.0.1:0",
    env: dict[str, str] | None = None,
) -> Running:
    """Start ``anyserve -s SERVER [-b BIND] --app-dir REPO ARGS APP`` and wait until it listens.

    A registered server that is not installed is a failure that names the
    install command, never a skip."""
    registered = adapters().get(server)
    if registered is not None:
        assert registered.is_installed(), f"{server} is registered but not installed: {registered.install_hint()}"
    argv = [*(["-b", bind] if bind else []), "--app-dir", str(REPO_ROOT), *args, app]
    running = Running(server, argv, env)
    try:
        return running.wait_listening()
    except BaseException:
        running.stop()
        raise


def run_anyserve(*args: str, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``anyserve ARGS`` to completion and capture its output."""
    return subprocess.run([ANYSERVE, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def servers(has: str | None = None, lacks: str | None = None, deviates: str | None = None) -> list[str]:
    """The registered servers, in ``-s auto`` order: those with (*has*) or without
    (*lacks*) a capability, or (*deviates*) with a declared deviation."""
    chosen = []
    for name, cls in adapters().items():
        if has is not None and not getattr(cls.capabilities, has):
            continue
        if lacks is not None and getattr(cls.capabilities, lacks):
            continue
        if deviates is not None and not getattr(cls.deviations, deviates):
            continue
        chosen.append(name)
    return chosen


#: One server of each kind (a thread pool, pre-fork workers, an event loop, an I/O
#: loop feeding threads), for the options whose cases cost too much on every server.
KINDS = ("cheroot", "gunicorn", "tornado", "waitress")


def suite_args(server: str) -> list[str]:
    """How the shared conformance fixtures start *server*: a pre-fork server with
    two workers, so every case also holds across worker processes."""
    return ["-w", "2"] if adapters()[server].capabilities.workers else []


def capabilities(server: str) -> Any:
    """What the adapter registered as *server* declares it can do."""
    return adapters()[server].capabilities


def deviations(server: str) -> Any:
    """Where the adapter registered as *server* declares it departs from HTTP/1.1."""
    return adapters()[server].deviations


def children(pid: int) -> set[int]:
    """The live (not zombie) child processes of *pid*."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.add(int(entry))
    return found


def descendants(pid: int) -> set[int]:
    """The live processes below *pid*: its children, theirs, and so on."""
    found = children(pid)
    for child in list(found):
        found |= descendants(child)
    return found


def alive(pid: int) -> bool:
    """Whether *pid* runs (a zombie does not)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"process exited with {proc.returncode} before listening on {port}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(POLL)
    raise AssertionError(f"nothing listened on port {port} within {timeout} s")


def wait_for_file(path: Path, timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, what or f"{path} did not appear within {timeout} s"
        time.sleep(POLL)


# -- HTTP clients ------------------------------------------------------------------


def address(url: str) -> tuple[str, int]:
    host, port = url.split("://", 1)[-1].rsplit(":", 1)
    return host.strip("[]"), int(port)


def connect(url: str, timeout: float = 30) -> http.client.HTTPConnection:
    """A connection to *url*: ``http://HOST:PORT``, or ``unix:PATH`` for a unix socket."""
    if url.startswith("unix:"):
        return UnixHTTPConnection(url.removeprefix("unix:"), timeout)
    return http.client.HTTPConnection(*address(url), timeout=timeout)


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a unix socket (the Host header says "localhost")."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # names in lower case; repeated fields joined with ", "
    body: bytes
    version: str = "HTTP/1.1"
    head: bytes = field(default=b"", repr=False)  # status line and header fields, as received

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")


def fetch(
    url: str,
    path: str,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
) -> Response:
    """One request on a fresh connection, with http.client."""
    conn = connect(url, timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return Response(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        conn.close()


@contextmanager
def raw_connection(url: str, timeout: float = 10) -> Iterator[tuple[socket.socket, BinaryIO]]:
    """A plain socket to the server and a buffered reader on it, both closed afterwards."""
    with socket.create_connection(address(url), timeout=timeout) as sock, sock.makefile("rb") as reader:
        yield sock, reader


def read_response(reader: BinaryIO, method: str = "GET") -> Response:
    """Read one response, framed as RFC 9112 section 6.3 says; EOFError if the server closed first."""
    status_line = reader.readline()
    if not status_line:
        raise EOFError("the server closed the connection without answering")
    head = [status_line]
    version, _, rest = status_line.decode("latin-1").rstrip("\r\n").partition(" ")
    assert version.startswith("HTTP/1."), f"not an HTTP/1.x status line: {status_line!r}"
    status = int(rest[:3])
    headers: dict[str, str] = {}
    while (line := reader.readline()) not in (b"\r\n", b"\n", b""):
        head.append(line)
        name, _, value = line.decode("latin-1").partition(":")
        key = name.strip().lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        body = b""
    elif "chunked" in headers.get("transfer-encoding", "").lower():
        body = _read_chunked(reader)
    elif "content-length" in headers:
        length = int(headers["content-length"])
        body = reader.read(length)
        assert len(body) == length, f"the server closed after {len(body)} of {length} bytes"
    else:
        body = reader.read()  # delimited by the close of the connection
    return Response(status, headers, body, version, b"".join(head))


def _read_chunked(reader: BinaryIO) -> bytes:
    body = io.BytesIO()
    while True:
        size_line = reader.readline()
        assert size_line, "the server closed in the middle of a chunked body"
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            while reader.readline() not in (b"\r\n", b"\n", b""):  # trailer fields
                pass
            return body.getvalue()
        body.write(reader.read(size))
        reader.readline()


def https_fetch(
    url: str,
    path: str,
    context: ssl.SSLContext,
    method: str = "GET",
    body: bytes | None = None,
    timeout: float = 30,
) -> tuple[int, bytes]:
    """One HTTPS request on a fresh connection: its status and body."""
    conn = http.client.HTTPSConnection(*address(url), context=context, timeout=timeout)
    return answer(conn, method, path, body)


def answer(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    """One request on *conn*, which is closed afterwards: the status and the body."""
    try:
        conn.request(method, path, body=body)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def messages(sock: socket.socket) -> list[str]:
    """Every datagram waiting on *sock* (a NOTIFY_SOCKET), without waiting for more."""
    received = []
    sock.setblocking(False)
    try:
        while True:
            received.append(sock.recv(4096).decode())
    except BlockingIOError:
        return received
    finally:
        sock.settimeout(20)


def is_closed(reader: BinaryIO) -> bool:
    """True when the server has closed the connection (EOF, or a reset) within the socket's timeout."""
    try:
        return reader.read(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def exchange(url: str, request: bytes, timeout: float = 10) -> bytes:
    """Send raw bytes and return all the server sends until it closes the connection.

    The request should ask for the close (``Connection: close``); a server that
    keeps the connection open anyway fails the test at the timeout."""
    received = bytearray()
    with socket.create_connection(address(url), timeout=timeout) as sock:
        sock.sendall(request)
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:  # a server may reset after an error answer: keep what came
            pass
        except TimeoutError:
            raise AssertionError(
                f"the server did not close the connection within {timeout} s; received {bytes(received[:300])!r}"
            ) from None
    return bytes(received)


# -- the graceful stop -------------------------------------------------------------

#: The app of the stop cases: CherryPy's, whose bus listeners write to CP_EVENTS_FILE.
CPAPP = "tests.apps.cpapp:application"
BODY_SIZE = 256 * 1024  # more than a socket buffer holds: sent over several writes
EXPECTED = (bytes(range(256)) * 256 * 4)[:BODY_SIZE]
#: Far above what a stop of a 0.5 s request takes: a stop past it is hung.
STOP_BOUND = 8.0


def server_core() -> int:
    """The CPU this test pins the server (and its hog) to: one per xdist worker."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(worker.removeprefix("gw") or 0) % (os.cpu_count() or 1)


def pinned(core: int) -> list[str]:
    """A launcher that pins itself to *core*, then execs anyserve (its children inherit it)."""
    code = f"import os, sys; os.sched_setaffinity(0, {{{core}}}); os.execv(sys.argv[1], sys.argv[1:])"
    return [sys.executable, "-c", code]


@contextmanager
def cpu_hog(core: int) -> Iterator[None]:
    """A process that keeps *core* busy for as long as the block runs."""
    code = f"import os\nos.sched_setaffinity(0, {{{core}}})\nwhile True:\n    pass\n"
    hog = subprocess.Popen([sys.executable, "-c", code])
    try:
        yield
    finally:
        hog.kill()
        hog.wait()


def one_stop(
    server: str,
    workers: int,
    to_group: bool,
    signum: int,
    core: int | None,
    where: Path,
    env: dict[str, str] | None = None,
) -> str | None:
    """Start anyserve, put one slow request in flight per worker, signal, and say
    what went wrong (None: nothing)."""
    where.mkdir()
    events = where / "events.txt"
    args = ["-b", "127.0.0.1:0", "--app-dir", str(REPO_ROOT), "-w", str(workers), "--graceful-timeout", "10", CPAPP]
    running = Running(
        server,
        args,
        env={"CP_EVENTS_FILE": str(events), **(env or {})},
        launcher=pinned(core) if core is not None else None,
        new_session=True,
    )
    answers: dict[int, Response | BaseException] = {}

    def slow(number: int) -> None:
        try:
            answers[number] = fetch(running.url, f"/slow?s=0.5&size={BODY_SIZE}&mark={where}/mark-{number}")
        except BaseException as exc:  # reported below
            answers[number] = exc

    clients = [threading.Thread(target=slow, args=(number,)) for number in range(workers)]
    elapsed = None
    try:
        running.wait_listening()
        for client in clients:
            client.start()
        for number in range(workers):
            wait_for_file(where / f"mark-{number}", what="a slow request never reached the app")
        started = time.monotonic()
        if to_group:
            os.killpg(running.proc.pid, signum)
        else:
            running.proc.send_signal(signum)
        try:
            code = running.proc.wait(timeout=STOP_BOUND)
        except subprocess.TimeoutExpired:
            return f"still running {STOP_BOUND} s after the signal:\n{running.stderr_text()[-3000:]}"
        elapsed = time.monotonic() - started
    finally:
        for client in clients:
            if client.is_alive() or client.ident is not None:
                client.join(timeout=30)
        if running.proc.poll() is None and to_group:
            os.killpg(running.proc.pid, signal.SIGKILL)
        running.stop()
    output = running.stderr_text()
    if code != 0:
        return f"exit code {code} after {elapsed:.2f} s:\n{output[-3000:]}"
    for number in range(workers):
        answer = answers.get(number)
        if not isinstance(answer, Response):
            return f"request {number} failed: {answer!r}\n{output[-3000:]}"
        if answer.status != 200 or answer.body != EXPECTED:
            return f"request {number}: {answer.status}, {len(answer.body)} of {BODY_SIZE} bytes"
    lines = [line.split() for line in events.read_text().splitlines()] if events.exists() else []
    by_pid: dict[str, list[str]] = {}
    for event, pid in lines:
        by_pid.setdefault(pid, []).append(event)
    if len(by_pid) < workers:
        return f"{len(by_pid)} engine(s) started for {workers} worker(s): {lines}"
    for pid, seen in by_pid.items():
        if seen != ["start", "stop", "exit"]:
            return f"process {pid} ran {seen}, not start, stop, exit:\n{output[-3000:]}"
    if "Traceback" in output:
        return f"a traceback in the output:\n{output[-3000:]}"
    return None


__all__ = [
    "ACTIVATE",
    "ANYSERVE",
    "APP",
    "CPAPP",
    "KINDS",
    "REPO_ROOT",
    "Response",
    "Running",
    "address",
    "alive",
    "answer",
    "capabilities",
    "children",
    "connect",
    "cpu_hog",
    "descendants",
    "deviations",
    "exchange",
    "fetch",
    "free_port",
    "https_fetch",
    "is_closed",
    "messages",
    "one_stop",
    "raw_connection",
    "read_response",
    "run_anyserve",
    "server_core",
    "servers",
    "start_anyserve",
    "wait_for_file",
    "wait_for_port",
]
