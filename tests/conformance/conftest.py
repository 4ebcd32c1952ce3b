"""Start the real ``anyserve`` command and talk to it over real sockets."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
ANYSERVE = str(Path(sys.executable).parent / "anyserve")
LISTENING = re.compile(r"Listening on (\S+)")
START_TIMEOUT = 20.0


class Running:
    """An ``anyserve`` process: its URL once it listens, its stderr, and a stop that always ends it."""

    def __init__(self, server: str, args: list[str], env: dict[str, str] | None = None) -> None:
        self.server = server
        self.args = args
        self._stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [ANYSERVE, "-s", server, *args],
            cwd=REPO_ROOT,
            env={**os.environ, **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
        )
        self.urls: list[str] = []

    @property
    def url(self) -> str:
        return self.urls[0]

    def stderr_text(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def wait_listening(self, count: int = 1, timeout: float = START_TIMEOUT) -> Running:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.urls = LISTENING.findall(self.stderr_text())
            if len(self.urls) >= count:
                return self
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"anyserve -s {self.server} exited with {self.proc.returncode}:\n{self.stderr_text()}"
                )
            time.sleep(0.02)
        self.stop()
        raise AssertionError(f"anyserve -s {self.server} did not listen within {timeout} s:\n{self.stderr_text()}")

    def wait_for_output(self, pattern: str, timeout: float = START_TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.stderr_text()
            if re.search(pattern, text):
                return text
            time.sleep(0.02)
        raise AssertionError(f"no {pattern!r} in the output of anyserve -s {self.server}:\n{self.stderr_text()}")

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait, then kill; returns the exit code."""
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
            self._stderr.close()


def start_anyserve(
    server: str, app: str, *args: str, bind: str | None = "127.0.0.1:0", env: dict[str, str] | None = None
) -> Running:
    """Start ``anyserve -s SERVER [-b BIND] ARGS APP`` and wait until it listens."""
    argv = [*(["-b", bind] if bind else []), "--app-dir", str(REPO_ROOT), *args, app]
    running = Running(server, argv, env)
    try:
        return running.wait_listening()
    except BaseException:
        running.stop()
        raise


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
        time.sleep(0.02)
    raise AssertionError(f"nothing listened on port {port} within {timeout} s")


__all__ = ["REPO_ROOT", "Running", "free_port", "start_anyserve", "wait_for_port"]
