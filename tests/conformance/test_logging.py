"""Logging, on every server: anyserve's messages and the app's own, nothing else.

anyserve configures its own loggers and the server's, never the root logger: an
app's ``logging.basicConfig`` keeps its format, ``--log-level`` does not hide
the app's lines, and an app that logs through a handler of its own does not log
twice. No server writes a line per request of its own (``--access-log`` is the
one access log), and a server's start-up chatter (banners, a line per worker)
shows only with ``--log-level debug``, so "Listening on" and "Stopped" come
once whatever the number of workers.
"""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import IO

from ..harness import (
    ANYSERVE,
    LISTENING,
    POLL,
    REPO_ROOT,
    START_TIMEOUT,
    fetch,
    free_port,
    suite_args,
    wait_for_port,
)

APP = "tests.apps.logging_basic:app"

#: A line of anyserve's own, in its format.
ANYSERVE_LINE = re.compile(r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}\] \[\d+\] \[[A-Z]+\] anyserve(\.\w+)*: .*")


@dataclass
class Served:
    stdout: str
    stderr: str
    code: int


def serve(server: str, app: str, *args: str, paths: tuple[str, ...] = ("/",), said: bool = True) -> Served:
    """Run ``anyserve -s SERVER ARGS APP``, request *paths* once it listens (its port
    answers, and it said "Listening on" unless not *said*: below the log level),
    stop it with TERM and return all it wrote."""
    port = free_port()
    argv = [ANYSERVE, "-s", server, "-b", f"127.0.0.1:{port}", "--app-dir", str(REPO_ROOT), *suite_args(server)]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([*argv, *args, app], cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        try:
            wait_for_port(port, proc)
            deadline = time.monotonic() + START_TIMEOUT
            while said and not LISTENING.search(_text(err)):
                assert proc.poll() is None and time.monotonic() < deadline, f"no Listening on:\n{_text(err)}"
                time.sleep(POLL)
            for path in paths:
                fetch(f"http://127.0.0.1:{port}", path)
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        return Served(_text(out), _text(err), code)


def _text(stream: IO[bytes]) -> str:
    fd = stream.fileno()
    return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")


def test_only_anyserve_and_the_app_write_and_the_app_keeps_its_format(server: str) -> None:
    served = serve(server, APP, paths=("/first", "/second"))
    assert served.code == 0, served.stderr
    assert served.stdout == ""  # no access line of the server's own
    lines = served.stderr.splitlines()
    apps = [line for line in lines if line.startswith("APP ")]
    assert apps == ["APP INFO myapp: serving /first", "APP INFO myapp: serving /second"], served.stderr
    others = [line for line in lines if not line.startswith("APP ")]
    assert all(ANYSERVE_LINE.fullmatch(line) for line in others), served.stderr
    assert len(re.findall(r"\] anyserve: Listening on ", served.stderr)) == 1, served.stderr
    assert len(re.findall(r"\] anyserve: Stopped$", served.stderr, re.MULTILINE)) == 1, served.stderr


def test_the_log_level_leaves_the_apps_lines_alone(server: str) -> None:
    served = serve(server, APP, "--log-level", "warning", paths=("/first",), said=False)
    assert served.code == 0, served.stderr
    assert [line for line in served.stderr.splitlines() if line.startswith("APP ")] == [
        "APP INFO myapp: serving /first"
    ], served.stderr
    assert "[INFO]" not in served.stderr  # anyserve's own INFO lines are below the level


def test_an_app_with_a_handler_of_its_own_logs_once(server: str) -> None:
    served = serve(server, "tests.apps.logging_own:app", "--log-level", "warning", paths=("/nothing",), said=False)
    assert served.code == 0, served.stderr
    assert served.stderr.count("seen /nothing") == 1, served.stderr
    assert served.stderr.count("Not Found: /nothing") == 1, served.stderr
    assert [line for line in served.stderr.splitlines() if line.startswith("SHOP ")] == [
        "SHOP INFO seen /nothing",
        "SHOP WARNING Not Found: /nothing",
    ], served.stderr


def test_the_servers_own_lines_with_log_level_debug(server: str) -> None:
    served = serve(server, APP, "--log-level", "debug", paths=("/first",))
    assert served.code == 0, served.stderr
    assert served.stdout == ""  # still no access line of the server's own
    assert "APP INFO myapp: serving /first" in served.stderr.splitlines()
    assert len(re.findall(r"\] anyserve: Listening on ", served.stderr)) == 1, served.stderr
    assert "object at 0x" not in served.stderr  # messages, not reprs (Twisted's factories)


def test_press_ctrl_c_to_quit_once_on_a_terminal(server: str) -> None:
    controller, terminal = pty.openpty()
    argv = [ANYSERVE, "-s", server, "-b", "127.0.0.1:0", "--app-dir", str(REPO_ROOT), *suite_args(server), APP]
    proc = subprocess.Popen(argv, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=terminal, stderr=terminal)
    os.close(terminal)
    seen = b""
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while b"Press Ctrl-C to quit" not in seen and time.monotonic() < deadline and proc.poll() is None:
            seen += _read(controller, 0.1)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        while chunk := _read(controller, 0.5):
            seen += chunk
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(controller)
    text = seen.decode(errors="replace")
    assert text.count("Press Ctrl-C to quit") == 1, text
    lines = text.splitlines()
    (said,) = [i for i, line in enumerate(lines) if line.endswith("] anyserve: Press Ctrl-C to quit")]
    assert "] anyserve: access log: " in lines[said - 1], text  # right after the start-up summary


def _read(fd: int, timeout: float) -> bytes:
    """What the terminal shows within *timeout* (b"" once nothing more comes)."""
    if not select.select([fd], [], [], timeout)[0]:
        return b""
    try:
        return os.read(fd, 65536)
    except OSError:  # the last process holding the terminal has exited
        return b""
