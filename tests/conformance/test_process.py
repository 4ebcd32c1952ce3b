"""Process control with the real command: --daemon, --pid, --user/--group/--umask, --require-non-root."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..harness import ANYSERVE, APP, KINDS, POLL, REPO_ROOT, Running, children, fetch, free_port

IS_ROOT = os.geteuid() == 0


def launch(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the command to its end (under --daemon, the launching process)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("ANYSERVE_", "LISTEN_"))}
    return subprocess.run(
        [ANYSERVE, "--app-dir", str(REPO_ROOT), *args],
        cwd=REPO_ROOT,
        env=environ,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has exited: it only waits for its parent.
    with open(f"/proc/{pid}/status") as fh:
        return "zombie" not in fh.read()


def wait_until(condition: object, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(POLL)


@pytest.fixture
def daemons() -> Iterator[list[int]]:
    """Pids of daemons a test started: each ends with the test, however it ends."""
    pids: list[int] = []
    try:
        yield pids
    finally:
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def status_field(pid: int, name: str) -> str:
    with open(f"/proc/{pid}/status") as fh:
        return next(line.split(":", 1)[1].strip() for line in fh if line.startswith(f"{name}:"))


# -- daemon and pid file -----------------------------------------------------------------


@pytest.mark.parametrize("server", KINDS)
def test_daemon_with_a_pid_file(server: str, tmp_path: Path, daemons: list[int]) -> None:
    port = free_port()
    pid_file, errors = tmp_path / "anyserve.pid", tmp_path / "error.log"
    started = time.monotonic()
    result = launch(
        "-s", server, "-b", f"127.0.0.1:{port}", "--daemon", "--pid", str(pid_file), "--error-log", str(errors), APP
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == result.stderr == ""
    assert time.monotonic() - started < 30
    pid = int(pid_file.read_text())  # written before the command returned
    daemons.append(pid)
    assert alive(pid)
    assert status_field(pid, "PPid") != str(os.getpid())  # detached: not a child of ours
    assert os.getsid(pid) != os.getsid(0)  # a session of its own: no controlling terminal
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: "Listening on" in errors.read_text(), "the daemon did not log to --error-log")
    assert fetch(url, "/big?size=3").body == bytes(range(3))
    os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not pid_file.exists(), "SIGTERM did not remove the pid file")
    wait_until(lambda: not alive(pid), "the daemon did not exit")
    assert "Stopped" in errors.read_text()


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["tests.apps.app:nothing"], 3, "has no attribute 'nothing'"),
        (["--access-log", "/nonexistent/dir/a.log", APP], 2, "--access-log: cannot open /nonexistent/dir/a.log"),
    ],
)
def test_a_daemon_that_cannot_start_fails_the_command(args: list[str], code: int, fragment: str) -> None:
    result = launch("-s", "cheroot", "-b", "127.0.0.1:0", "--daemon", *args)
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("anyserve: error: ") and fragment in lines[0], result.stderr


def test_a_daemon_whose_port_is_taken_fails_the_command() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = launch("-s", "waitress", "-b", f"127.0.0.1:{taken.getsockname()[1]}", "--daemon", APP)
    assert result.returncode == 4, result.stderr
    assert result.stderr.startswith("anyserve: error: cannot listen on 127.0.0.1:") and "address already in use" in (
        result.stderr
    )


def test_the_pid_file_without_daemon_stale_and_live(tmp_path: Path) -> None:
    pid_file = tmp_path / "app.pid"
    gone = subprocess.Popen(["true"])
    gone.wait()
    pid_file.write_text(f"{gone.pid}\n")  # a stale file from a dead process: replaced
    running = Running("cheroot", ["-b", "127.0.0.1:0", "--app-dir", str(REPO_ROOT), "--pid", str(pid_file), APP])
    try:
        running.wait_listening()
        assert pid_file.read_text() == f"{running.proc.pid}\n"
        second = launch("-s", "cheroot", "-b", "127.0.0.1:0", "--pid", str(pid_file), APP)  # a live one: refused
        assert second.returncode == 2
        assert second.stderr == (
            f"anyserve: error: --pid: {pid_file} names process {running.proc.pid}, which is running; "
            "stop it first, or remove the file if that process is not anyserve\n"
        )
    finally:
        assert running.stop() == 0
    assert not pid_file.exists()


def test_gunicorn_workers_leave_the_pid_file_to_the_master(tmp_path: Path) -> None:
    pid_file = tmp_path / "app.pid"
    args = ["-w", "2", "-b", "127.0.0.1:0", "--app-dir", str(REPO_ROOT), "--pid", str(pid_file)]
    running = Running("gunicorn", [*args, "--log-level", "debug", APP])  # debug: gunicorn's "Booting worker"
    try:
        running.wait_listening()  # once both workers serve
        os.kill(min(children(running.proc.pid)), signal.SIGTERM)  # a worker exits (and is replaced)
        running.wait_for_output(r"Booting worker with pid: \d+[\s\S]*Booting worker[\s\S]*Booting worker")
        assert pid_file.read_text() == f"{running.proc.pid}\n"
    finally:
        running.stop()
    assert not pid_file.exists()


def test_daemon_and_reload_are_refused() -> None:
    result = launch("--daemon", "--reload", APP)
    assert (result.returncode, result.stderr) == (
        2,
        "anyserve: error: --daemon cannot be combined with --reload; drop one of them\n",
    )


# -- user, group, umask ------------------------------------------------------------------


def privileged_port() -> int:
    """A free port below 1024 (only root may bind it), from a range of this xdist
    worker's own: two workers probing the same range could pick the same port."""
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    top = 1023 - 50 * (worker % 8)
    for port in range(top, top - 50, -1):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port below 1024")


@pytest.mark.parametrize("server", ["cheroot", "gunicorn", "tornado", "waitress", "twisted", "gevent"])
def test_user_nobody_after_binding_a_privileged_port(server: str) -> None:
    if not IS_ROOT:
        result = launch("-s", server, "-p", "0", "--user", "nobody", APP)
        assert result.returncode == 2
        assert "--user needs root to change to another user or group" in result.stderr
        return
    port = privileged_port()
    args = ["-b", f"127.0.0.1:{port}", "--app-dir", str(REPO_ROOT), "--user", "nobody", "--umask", "027"]
    args += ["--require-non-root"]
    if server == "gunicorn":
        args += ["-w", "2"]
    running = Running(server, [*args, APP])
    try:
        running.wait_listening()  # once every worker serves
        assert fetch(f"http://127.0.0.1:{port}", "/big?size=3").body == bytes(range(3))
        serving = sorted(children(running.proc.pid)) if server == "gunicorn" else [running.proc.pid]
        assert len(serving) == (2 if server == "gunicorn" else 1)
        for pid in serving:
            assert status_field(pid, "Uid").split() == ["65534"] * 4, pid
            assert status_field(pid, "Gid").split() == ["65534"] * 4, pid
            assert status_field(pid, "Groups").split() == ["65534"], pid
            assert status_field(pid, "Umask") == "0027"
        assert status_field(running.proc.pid, "Umask") == "0027"
    finally:
        assert running.stop() == 0


def test_require_non_root() -> None:
    if IS_ROOT:
        result = launch("-s", "cheroot", "-p", "0", "--require-non-root", APP)
        assert result.returncode == 2
        assert result.stderr.startswith("anyserve: error: refusing to serve as root (--require-non-root): add --user")
    else:  # not root: nothing to refuse
        running = Running("cheroot", ["-p", "0", "--app-dir", str(REPO_ROOT), "--require-non-root", APP])
        try:
            running.wait_listening()
        finally:
            running.stop()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--user", "no-such-user-q"], "--user: there is no user 'no-such-user-q' on this system"),
        (["--group", "no-such-group-q"], "--group: there is no group 'no-such-group-q' on this system"),
        (["--user", "root", "--require-non-root"], "refusing to serve as root (--require-non-root)"),
        (["--umask", "999"], "invalid value for --umask"),
    ],
)
def test_bad_user_group_and_umask(args: list[str], message: str) -> None:
    result = launch("-s", "cheroot", "-p", "0", *args, APP)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.splitlines()) == 1 and message in result.stderr, result.stderr


def test_pid_file_is_written_after_binding(tmp_path: Path) -> None:
    pid_file = tmp_path / "app.pid"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = launch("-s", "cheroot", "-b", f"127.0.0.1:{taken.getsockname()[1]}", "--pid", str(pid_file), APP)
    assert result.returncode == 4
    assert not pid_file.exists()
    assert re.search("address already in use", result.stderr)
