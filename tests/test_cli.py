"""The command line: each bad input gets one line, a named exit code and no traceback."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from anyserve import __version__
from anyserve.errors import EXIT_APP, EXIT_BIND, EXIT_OK, EXIT_USAGE

from .conftest import run_anyserve

SERVER_PACKAGES = (
    "cheroot",
    "waitress",
    "werkzeug",
    "cherrypy",
    "tornado",
    "twisted",
    "gevent",
    "gunicorn",
    "eventlet",
)

WSGI_APP = """
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
not_callable = 42
"""


@pytest.fixture
def site(tmp_path: Path) -> Path:
    (tmp_path / "webapp.py").write_text(WSGI_APP)
    (tmp_path / "raising.py").write_text("import json\nraise RuntimeError('broken at import')\n")
    (tmp_path / "uninstalled.py").write_text(
        "from anyserve.adapters.wsgiref import WsgirefAdapter\n"
        "class Missing(WsgirefAdapter):\n"
        "    name = 'missing'\n"
        "    extra = 'missing'\n"
        "    @classmethod\n"
        "    def is_installed(cls):\n"
        "        return False\n"
    )
    return tmp_path


def assert_error(result: subprocess.CompletedProcess[str], code: int, *fragments: str, traceback: bool = False) -> None:
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines, "no error message"
    assert lines[-1].startswith("anyserve: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]
    if traceback:
        assert "Traceback" in result.stderr
    else:
        assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr


def test_unknown_server(site: Path) -> None:
    result = run_anyserve("-s", "tornadoo", "webapp", cwd=site)
    assert_error(result, EXIT_USAGE, "unknown server 'tornadoo'", "did you mean 'tornado'", "installed:")


def test_server_not_installed(site: Path) -> None:
    result = run_anyserve("-s", "uninstalled:Missing", "webapp", cwd=site)
    assert_error(result, EXIT_USAGE, "'missing' is not installed", "pip install 'anyserve[missing]'")


def test_adapter_that_is_not_an_adapter(site: Path) -> None:
    result = run_anyserve("-s", "webapp:application", "webapp", cwd=site)
    assert_error(result, EXIT_USAGE, "is not an adapter")


@pytest.mark.parametrize(
    ("app", "code", "fragment"),
    [
        ("bad app!", EXIT_APP, "bad APP string"),
        ("webapp:application(", EXIT_APP, "bad APP string"),
        ("nosuchmodule:app", EXIT_APP, "could not import module 'nosuchmodule'"),
        ("webapp:missing", EXIT_APP, "module 'webapp' has no attribute 'missing'"),
        ("webapp:not_callable", EXIT_APP, "not a WSGI application"),
        ("webapp:application(__import__('os'))", EXIT_APP, "factory arguments must be literals"),
        ("nofile.py", EXIT_APP, "file nofile.py does not exist"),
    ],
)
def test_bad_app(site: Path, app: str, code: int, fragment: str) -> None:
    assert_error(run_anyserve("-s", "wsgiref", app, cwd=site), code, fragment)


def test_module_that_raises_on_import_shows_its_traceback(site: Path) -> None:
    result = run_anyserve("-s", "wsgiref", "raising", cwd=site)
    assert_error(result, EXIT_APP, "module 'raising' raised RuntimeError on import: broken at import", traceback=True)
    assert 'raising.py", line 2' in result.stderr
    assert "anyserve/loader.py" not in result.stderr  # only the user's frames


def test_port_in_use(site: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_anyserve("-s", "wsgiref", "-p", str(port), "webapp", cwd=site)
    assert_error(result, EXIT_BIND, f"cannot listen on 127.0.0.1:{port}", "address already in use")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["-s", "werkzeug", "-t", "4"], "werkzeug cannot cap its threads"),
        (["-s", "cheroot", "-w", "2"], "cheroot has no worker processes of its own"),
        (["-s", "cheroot", "-o", "nosuch=1"], "unknown option -o nosuch for server cheroot"),
        (["-s", "cheroot", "-o", "timeout=soon"], "invalid value for -o timeout=soon"),
        (["-s", "cheroot", "-o", "novalue"], "expected KEY=VALUE"),
        (["-p", "abc"], "invalid value for --port"),
        (["-p", "70000"], "from 0 to 65535"),
        (["-w", "0"], "invalid value for --workers"),
        (["--log-level", "loud"], "invalid value for --log-level"),
        (["--root-path", "app"], "starting with '/'"),
        (["-b", "127.0.0.1:1", "-p", "2"], "--port cannot be combined with --bind"),
        (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        (["--reload", "-w", "2", "-s", "wsgiref"], "--reload cannot be combined with --workers"),
    ],
)
def test_bad_options(site: Path, args: list[str], fragment: str) -> None:
    assert_error(run_anyserve(*args, "webapp", cwd=site), EXIT_USAGE, fragment)


def test_no_app() -> None:
    assert_error(run_anyserve("-s", "wsgiref"), EXIT_USAGE, "no APP given")


def test_malformed_config_file(site: Path) -> None:
    (site / "bad.toml").write_text("server = \n")
    assert_error(run_anyserve("-c", "bad.toml", "webapp", cwd=site), EXIT_USAGE, "bad.toml is not valid TOML")


def test_unknown_key_in_config_file(site: Path) -> None:
    (site / "anyserve.toml").write_text("prot = 8000\n")
    result = run_anyserve("-c", "anyserve.toml", "webapp", cwd=site)
    assert_error(result, EXIT_USAGE, "unknown option 'prot'", "did you mean 'port'")


def test_missing_config_file(site: Path) -> None:
    assert_error(run_anyserve("-c", "nowhere.toml", "webapp", cwd=site), EXIT_USAGE, "nowhere.toml does not exist")


def test_bad_listener(site: Path) -> None:
    result = run_anyserve("-s", "wsgiref", "-b", "::1:80", "webapp", cwd=site)
    assert_error(result, EXIT_USAGE, "put an IPv6 address in brackets")


def test_version() -> None:
    result = run_anyserve("-V")
    assert (result.returncode, result.stdout.strip()) == (EXIT_OK, f"anyserve {__version__}")


def test_help_lists_the_options() -> None:
    result = run_anyserve("--help")
    assert result.returncode == EXIT_OK
    for flag in (
        "--server",
        "--host",
        "--port",
        "--bind",
        "--workers",
        "--threads",
        "--factory",
        "--app-dir",
        "--root-path",
        "--reload",
        "--log-level",
        "--option",
        "--config",
        "--graceful-timeout",
    ):
        assert flag in result.stdout


def test_list_shows_every_server_with_its_version() -> None:
    from anyserve.registry import adapters

    result = run_anyserve("list")
    assert result.returncode == EXIT_OK, result.stderr
    for name, cls in adapters().items():
        line = next(line for line in result.stdout.splitlines() if line.startswith(name + " "))
        assert (cls.version() or "not installed") in line


def test_check_loads_and_starts_nothing(site: Path) -> None:
    result = run_anyserve("check", "-s", "waitress", "webapp", cwd=site)
    assert result.returncode == EXIT_OK, result.stderr
    assert "webapp.application" in result.stdout
    assert "waitress" in result.stdout
    assert "nothing was started" in result.stdout


def test_check_reports_bad_input_too(site: Path) -> None:
    assert_error(run_anyserve("check", "webapp:missing", cwd=site), EXIT_APP, "has no attribute 'missing'")


@pytest.mark.parametrize("command", [["--help"], ["list"]])
def test_help_and_list_import_no_server(command: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "anyserve", *command], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == EXIT_OK
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in result.stderr.splitlines() if "|" in line}
    assert not imported & set(SERVER_PACKAGES), sorted(imported & set(SERVER_PACKAGES))


def test_python_m_anyserve_is_the_same_command() -> None:
    result = subprocess.run([sys.executable, "-m", "anyserve", "-V"], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == f"anyserve {__version__}"


def test_main_returns_exit_codes(
    site: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from anyserve.cli import main

    monkeypatch.chdir(site)
    assert main(["-s", "nosuch", "webapp"]) == EXIT_USAGE
    assert re.match(r"anyserve: error: unknown server 'nosuch'", capsys.readouterr().err)
