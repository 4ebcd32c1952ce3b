"""The supervisord recipe (docs/deployment/supervisord.conf) under a real supervisord
(PyPI ``supervisor``, in the test extra), controlled with the real supervisorctl.

The recipe's program section is used as it is, with this machine's paths, a
free port, the conformance app, the current user and ``autostart=false``
filled in; the test adds the control sections on a unix socket.
"""

from __future__ import annotations

import getpass
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..harness import APP, REPO_ROOT, Response, fetch, free_port, wait_for_file
from .recipes import APP_DIR, INSTALLED, recipe

BIN = Path(sys.executable).parent
SUPERVISORD, SUPERVISORCTL = str(BIN / "supervisord"), str(BIN / "supervisorctl")
SERVERS = ("gunicorn", "cheroot", "uwsgi")  # the recipe's gunicorn, anyserve's pre-fork supervisor, uWSGI's master

CONTROL = """
[unix_http_server]
file={directory}/supervisor.sock

[supervisord]
logfile={directory}/supervisord.log
pidfile={directory}/supervisord.pid
childlogdir={directory}
loglevel=info

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{directory}/supervisor.sock

"""


class Supervisor:
    def __init__(self, directory: str, proc: subprocess.Popen[bytes]) -> None:
        self.directory, self.proc = directory, proc
        self.config = f"{directory}/supervisord.conf"

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [SUPERVISORCTL, "-c", self.config, *args], capture_output=True, text=True, timeout=120, check=False
        )

    def log(self) -> str:
        return Path(self.directory, "supervisord.log").read_text()

    def wait_log(self, pattern: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.log()):
            assert time.monotonic() < deadline, f"no {pattern!r} in supervisord's log:\n{self.log()}"
            time.sleep(0.05)


@pytest.fixture(params=SERVERS)
def supervisor(request: pytest.FixtureRequest) -> Iterator[tuple[Supervisor, str]]:
    """supervisord running the recipe's program (not started yet); yields it and the program's URL."""
    server = request.param
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="as-") as directory:  # a short path for the unix socket
        program = recipe(
            "supervisord.conf",
            {
                INSTALLED: str(BIN / "anyserve"),
                "-s gunicorn": f"-s {server}",
                "127.0.0.1:8001": f"127.0.0.1:{port}",
                APP_DIR: str(REPO_ROOT),
                " myapp:app": f" {APP}",
                "user=www-data": f"user={getpass.getuser()}",
                "autostart=true": "autostart=false",
                "/var/log/myapp/anyserve.log": f"{directory}/anyserve.log",
            },
        )
        config = Path(directory, "supervisord.conf")
        config.write_text(CONTROL.format(directory=directory) + program)
        proc = subprocess.Popen(
            [SUPERVISORD, "-n", "-c", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        running = Supervisor(directory, proc)
        try:
            wait_for_file(Path(directory, "supervisor.sock"), timeout=30, what="supervisord did not start")
            yield running, f"http://127.0.0.1:{port}"
        finally:
            running.ctl("stop", "all")
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def program_pid(supervisor: Supervisor) -> int:
    result = supervisor.ctl("pid", "myapp")
    assert result.stdout.strip().isdigit() and int(result.stdout) > 0, (result.stdout, result.stderr)
    return int(result.stdout)


def test_start_stop_drains_restart(supervisor: tuple[Supervisor, str], tmp_path: Path) -> None:
    sv, url = supervisor
    started = sv.ctl("start", "myapp")
    assert started.returncode == 0 and "myapp: started" in started.stdout, (started, sv.log())
    assert fetch(url, "/echo").status == 200
    first = program_pid(sv)

    # stop with a slow request in flight: it completes, then the program exits 0.
    answer: dict[str, Response] = {}
    mark = tmp_path / "in-flight"
    client = threading.Thread(target=lambda: answer.update(slow=fetch(url, f"/slow?s=2&mark={mark}")))
    client.start()
    wait_for_file(mark, what="the slow request never reached the app")
    begun = time.monotonic()
    stopped = sv.ctl("stop", "myapp")
    waited = time.monotonic() - begun
    client.join(60)
    assert stopped.returncode == 0 and "myapp: stopped" in stopped.stdout, (stopped, sv.log())
    assert answer["slow"].status == 200 and answer["slow"].body == b"slept", answer
    sv.wait_log(r"stopped: myapp \(exit status 0\)")
    assert "SIGKILL" not in sv.log()
    assert waited > 1.0, waited  # supervisorctl stop returned once the 2 s request was done, not before

    # start and restart: served again, each time by a new process.
    assert "myapp: started" in sv.ctl("start", "myapp").stdout, sv.log()
    assert fetch(url, "/echo").status == 200
    second = program_pid(sv)
    restarted = sv.ctl("restart", "myapp")
    assert "myapp: stopped" in restarted.stdout and "myapp: started" in restarted.stdout, (restarted, sv.log())
    assert fetch(url, "/echo").status == 200
    third = program_pid(sv)
    assert len({first, second, third}) == 3

    # A TERM from anyone else: exit 0 is expected (exitcodes=0), so autorestart=unexpected leaves it stopped.
    os.kill(third, signal.SIGTERM)
    sv.wait_log(r"exited: myapp \(exit status 0; expected\)")
    time.sleep(0.5)
    status = sv.ctl("status", "myapp").stdout
    assert re.match(r"myapp\s+EXITED", status), (status, sv.log())
    assert "SIGKILL" not in sv.log()
