"""anyserve's own child processes (the --reload child, anyserve bench's servers and load
generator, uWSGI's launcher) import the installed anyserve even when the working directory
holds a folder of that name, as `python -m anyserve` there would not."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from anyserve import __version__
from anyserve.child import python_command
from anyserve.errors import EXIT_OK

from .harness import Running, run_anyserve

APP = """
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"{text}"]
"""


@pytest.fixture(params=["folder", "package"])
def project(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """A working directory with a folder named anyserve next to the app: an empty one
    (which an editable install's anyserve loses to), or a package of the project's own
    (which any installed anyserve loses to)."""
    (tmp_path / "anyserve").mkdir()
    if request.param == "package":
        (tmp_path / "anyserve" / "__init__.py").write_text('"""Not the server."""\n')
    (tmp_path / "site_app.py").write_text(APP.format(text="one"))
    return tmp_path


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


def test_the_child_command_imports_the_installed_anyserve(project: Path) -> None:
    if (project / "anyserve" / "__init__.py").exists():
        # What it guards against: `python -m anyserve` there imports the project's package.
        plain = subprocess.run([sys.executable, "-m", "anyserve", "-V"], cwd=project, capture_output=True, text=True)
        assert plain.returncode != 0 and str(project / "anyserve") in plain.stderr
    child = subprocess.run(python_command("anyserve", "-V"), cwd=project, capture_output=True, text=True, timeout=60)
    assert (child.returncode, child.stdout, child.stderr) == (0, f"anyserve {__version__}\n", "")


def test_reload_serves_and_restarts(project: Path) -> None:
    running = Running("wsgiref", ["--reload", "-b", "127.0.0.1:0", "site_app:app"], cwd=project)
    try:
        running.wait_listening()
        assert get(running.url) == b"one"
        (project / "site_app.py").write_text(APP.format(text="two"))
        deadline = time.monotonic() + 20
        while get(running.url) != b"two":
            assert time.monotonic() < deadline, running.stderr_text()
            time.sleep(0.05)
        assert running.stop() == 0
        assert "Error" not in running.stderr_text()
    finally:
        running.stop()


def test_bench(project: Path) -> None:
    out = project / "out.json"
    result = run_anyserve(
        "bench", "-s", "wsgiref", "--duration", "0.5s", "--warmup", "0", "--repeat", "1", "--generator", "builtin",
        "--json", str(out), "site_app:app", cwd=project,
    )  # fmt: skip
    assert result.returncode == EXIT_OK, result.stdout + result.stderr
    [run] = json.loads(out.read_text())["runs"]
    assert (run["server"], run["status"]) == ("wsgiref", "ok") and run["requests"] > 0


def test_uwsgi_launcher(project: Path) -> None:
    running = Running("uwsgi", ["-b", "127.0.0.1:0", "site_app:app"], cwd=project)
    try:
        running.wait_listening()
        assert get(running.url) == b"one"
    finally:
        assert running.stop() == 0
