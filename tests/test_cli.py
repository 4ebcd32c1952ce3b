"""The command line: each bad input gets one line, a named exit code and no traceback.

Every rule of DESIGN.md's "Errors and bad input" runs the real ``anyserve``
command; ``main(argv)`` in-process covers the finer cases quickly.
"""

from __future__ import annotations

import ctypes
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from anyserve import __version__
from anyserve.cli import main
from anyserve.config import settings
from anyserve.errors import EXIT_APP, EXIT_BIND, EXIT_OK, EXIT_USAGE

from .harness import Running, fetch, free_port

ANYSERVE = str(Path(sys.executable).parent / "anyserve")

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
FOUR = ("cheroot", "waitress", "werkzeug", "wsgiref")

WSGI_APP = """
import os  # for the os.system case: reaching it through the app module is refused
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]

def make(greeting="ok"):
    return application

def broken_factory():
    raise ValueError("no config")

not_callable = 42
"""

RAISING = """
import json


def load_settings():
    raise RuntimeError("broken at import")


load_settings()
"""

UNINSTALLED_ADAPTER = """
from anyserve.adapters.wsgiref import WsgirefAdapter


class Missing(WsgirefAdapter):
    name = "missing"
    extra = "missing"

    @classmethod
    def is_installed(cls):
        return False
"""


#: Variables that set options (or listeners): a test gives them itself.
OPTION_VARIABLES = ("ANYSERVE_", "LISTEN_", "PORT", "WEB_CONCURRENCY")


def run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real ``anyserve ARGS`` to completion; it must not serve (bounded by the timeout)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(OPTION_VARIABLES)}
    return subprocess.run(
        [ANYSERVE, *args], cwd=cwd, env={**environ, **(env or {})}, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def site(tmp_path: Path) -> Path:
    (tmp_path / "webapp.py").write_text(WSGI_APP)
    (tmp_path / "raising.py").write_text(RAISING)
    (tmp_path / "importerror.py").write_text("import json\nimport not_a_real_dependency_q\n")
    (tmp_path / "uninstalled.py").write_text(UNINSTALLED_ADAPTER)
    return tmp_path


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port this test process listens on, so nothing else can bind it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def assert_error(result: subprocess.CompletedProcess[str], code: int, *fragments: str, traceback: bool = False) -> None:
    """Exit *code*; stderr's last line is the one-line error naming the problem."""
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines, "no error message"
    assert lines[-1].startswith("anyserve: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]
    if traceback:
        assert lines[0] == "Traceback (most recent call last):", result.stderr
    else:
        assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stdout == ""


# -- every rule of the Errors section, through the real command --------------------------------


def test_unknown_server(site: Path) -> None:
    result = run("-s", "tornadoo", "webapp", cwd=site)
    assert_error(result, EXIT_USAGE, "unknown server 'tornadoo'", "did you mean 'tornado'", "installed: cheroot")


def test_server_not_installed(site: Path) -> None:
    result = run("-s", "uninstalled:Missing", "webapp", cwd=site)
    assert_error(
        result, EXIT_USAGE, "server 'missing' is not installed; install it with: pip install 'anyserve-wsgi[missing]'"
    )


def test_adapter_that_is_not_an_adapter(site: Path) -> None:
    assert_error(run("-s", "webapp:application", "webapp", cwd=site), EXIT_USAGE, "is not an adapter")


def test_malformed_server_class(site: Path) -> None:
    assert_error(run("-s", ":Thing", "webapp", cwd=site), EXIT_USAGE, "bad -s ':Thing'")


@pytest.mark.parametrize(
    ("app", "fragment"),
    [
        ("bad app!", "bad APP string 'bad app!'"),
        ("webapp:application(", "bad APP string"),
        ("webapp:os.system('true')", "bad APP string"),
        ("webapp:make(__import__('os'))", "factory arguments must be literals"),
    ],
)
def test_bad_app_string(site: Path, app: str, fragment: str) -> None:
    assert_error(run("-s", "wsgiref", app, cwd=site), EXIT_APP, fragment)


def test_missing_module(site: Path) -> None:
    result = run("-s", "wsgiref", "nosuchmodule:app", cwd=site)
    assert_error(result, EXIT_APP, "could not import module 'nosuchmodule'", f"the working directory is {site}")


def test_missing_attribute(site: Path) -> None:
    result = run("-s", "wsgiref", "webapp:missing", cwd=site)
    assert_error(result, EXIT_APP, "module 'webapp' has no attribute 'missing'", "it has: application")


def test_missing_file(site: Path) -> None:
    assert_error(run("-s", "wsgiref", "nofile.py", cwd=site), EXIT_APP, "file nofile.py does not exist")


def test_app_dir(site: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    assert_error(run("-s", "wsgiref", "webapp:missing", cwd=elsewhere), EXIT_APP, "could not import module 'webapp'")
    result = run("-s", "wsgiref", "--app-dir", str(site), "webapp:missing", cwd=elsewhere)
    assert_error(result, EXIT_APP, "module 'webapp' has no attribute 'missing'")


def test_module_that_raises_on_import_shows_its_own_traceback(site: Path) -> None:
    result = run("-s", "wsgiref", "raising", cwd=site)
    assert_error(result, EXIT_APP, "module 'raising' raised RuntimeError on import: broken at import", traceback=True)
    lines = result.stderr.strip().splitlines()
    assert lines[-2] == "RuntimeError: broken at import"
    assert f'{site / "raising.py"}", line 9, in <module>' in result.stderr
    assert "in load_settings" in result.stderr
    assert "anyserve" not in "".join(lines[:-1])  # only the user's frames, no anyserve or importlib
    assert "importlib" not in result.stderr


def test_an_import_error_inside_the_module_is_a_raise_not_a_missing_module(site: Path) -> None:
    result = run("-s", "wsgiref", "importerror", cwd=site)
    assert_error(result, EXIT_APP, "module 'importerror' raised ModuleNotFoundError on import", traceback=True)
    assert "could not import module" not in result.stderr
    assert f'{site / "importerror.py"}", line 2' in result.stderr


def test_factory_that_raises_shows_its_traceback(site: Path) -> None:
    result = run("-s", "wsgiref", "webapp:broken_factory()", cwd=site)
    assert_error(result, EXIT_APP, "factory webapp:broken_factory() raised ValueError: no config", traceback=True)
    assert "in broken_factory" in result.stderr


def test_object_not_callable(site: Path) -> None:
    result = run("-s", "wsgiref", "webapp:not_callable", cwd=site)
    assert_error(result, EXIT_APP, "webapp:not_callable is a int object, not a WSGI application")


ASGI_AND_FACTORY = """
async def app(scope, receive, send):
    pass

def create_app():
    def application(environ, start_response):
        start_response("200 OK", [])
        return [b"ok"]
    return application
"""


@pytest.mark.parametrize("command", [[], ["check"]], ids=["serve", "check"])
def test_an_asgi_app_is_refused_at_load(site: Path, taken_port: int, command: list[str]) -> None:
    (site / "asgiapp.py").write_text(ASGI_AND_FACTORY)
    result = run(*command, "-s", "wsgiref", "-p", str(taken_port), "asgiapp:app", cwd=site)
    assert_error(result, EXIT_APP)
    assert result.stderr == (
        "anyserve: error: asgiapp:app is an ASGI application; anyserve serves WSGI "
        "(wrap it with a2wsgi, or use an ASGI server)\n"
    )


@pytest.mark.parametrize("command", [[], ["check"]], ids=["serve", "check"])
def test_a_factory_without_factory_is_refused_at_load(site: Path, taken_port: int, command: list[str]) -> None:
    (site / "asgiapp.py").write_text(ASGI_AND_FACTORY)
    result = run(*command, "-s", "wsgiref", "-p", str(taken_port), "asgiapp:create_app", cwd=site)
    assert_error(result, EXIT_APP)
    assert result.stderr == (
        "anyserve: error: asgiapp:create_app looks like a factory: add --factory or write APP as asgiapp:create_app()\n"
    )


def test_port_in_use(site: Path, taken_port: int) -> None:
    result = run("-s", "wsgiref", "-p", str(taken_port), "webapp", cwd=site)
    assert_error(result, EXIT_BIND, f"cannot listen on 127.0.0.1:{taken_port}: address already in use")


def _without_net_bind_service() -> None:
    """In the child, before exec: give up the right to bind ports below 1024
    (prctl(PR_CAPBSET_DROP, CAP_NET_BIND_SERVICE)), as any unprivileged user lacks it."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(24, 10, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_privileged_port_without_privileges(tmp_path: Path) -> None:
    # An unprivileged user runs the command as is; root runs it without the capability.
    result = subprocess.run(
        [ANYSERVE, "-s", "wsgiref", "-p", "1", "wsgiref.simple_server:demo_app"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=_without_net_bind_service if os.geteuid() == 0 else None,
    )
    assert_error(
        result,
        EXIT_BIND,
        "cannot listen on 127.0.0.1:1: permission denied; ports below 1024 need root or CAP_NET_BIND_SERVICE",
    )


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["-s", "werkzeug", "-t", "4"], "werkzeug cannot cap its threads, so it cannot honour --threads 4"),
        (["-s", "wsgiref", "-o", "timeout=3"], "unknown option -o timeout for server wsgiref; it accepts: none"),
    ],
)
def test_option_the_server_cannot_honour(site: Path, args: list[str], fragment: str) -> None:
    assert_error(run(*args, "webapp", cwd=site), EXIT_USAGE, fragment)


def test_malformed_config_file(site: Path) -> None:
    (site / "bad.toml").write_text("server = \n")
    assert_error(run("-c", "bad.toml", "webapp", cwd=site), EXIT_USAGE, "config file bad.toml is not valid TOML")


def test_unknown_o_key(site: Path) -> None:
    result = run("-s", "cheroot", "-o", "nosuch=1", "webapp", cwd=site)
    assert_error(result, EXIT_USAGE, "unknown option -o nosuch for server cheroot; it accepts: ", "max_threads")


def test_bad_o_value(site: Path) -> None:
    result = run("-s", "cheroot", "-o", "timeout=soon", "webapp", cwd=site)
    assert_error(result, EXIT_USAGE, "invalid value for -o timeout=soon (server cheroot)")


def test_bad_option_value(site: Path) -> None:
    result = run("-p", "abc", "webapp", cwd=site)
    assert_error(result, EXIT_USAGE, "invalid value for --port (the command line): 'abc': expected an integer")


def test_unknown_flag(site: Path) -> None:
    result = run("--no-such-flag", "webapp", cwd=site)
    assert_error(result, EXIT_USAGE, "unrecognized arguments: --no-such-flag", "(see anyserve --help)")


def test_no_app(tmp_path: Path) -> None:
    assert_error(run("-s", "wsgiref", cwd=tmp_path), EXIT_USAGE, "no APP given")


def test_bad_value_from_the_environment(site: Path) -> None:
    result = run("webapp", cwd=site, env={"ANYSERVE_PORT": "abc"})
    assert_error(result, EXIT_USAGE, "invalid value for --port (ANYSERVE_PORT): 'abc'")


def test_unknown_key_in_pyproject(site: Path) -> None:
    (site / "pyproject.toml").write_text("[tool.anyserve]\nprot = 8000\n")
    assert_error(run("webapp", cwd=site), EXIT_USAGE, "unknown option 'prot'", "did you mean 'port'")


def test_nothing_is_served_when_anything_is_wrong(site: Path, taken_port: int) -> None:
    """Checks run before binding: a bad -o fails as a usage error even on a port in use."""
    result = run("-s", "cheroot", "-o", "nosuch=1", "-p", str(taken_port), "webapp", cwd=site)
    assert_error(result, EXIT_USAGE, "unknown option -o nosuch")


# -- the same rules in-process, through main(argv) ---------------------------------------------------


@pytest.fixture
def in_site(site: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """main() run from the site directory; what it changes in this process is put back:
    sys.path (--app-dir), the modules it imported, the root logger it configured."""
    monkeypatch.chdir(site)
    for name in list(os.environ):
        if name.startswith("ANYSERVE_"):
            monkeypatch.delenv(name)
    path, modules = list(sys.path), set(sys.modules)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield site
    finally:
        sys.path[:] = path
        for name in set(sys.modules) - modules:
            if (getattr(sys.modules[name], "__file__", None) or "").startswith(str(site)):
                del sys.modules[name]
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.mark.parametrize(
    ("argv", "code", "fragment"),
    [
        (["-s", "nosuch", "webapp"], EXIT_USAGE, "unknown server 'nosuch'"),
        (["-s", "cheroot", "-o", "novalue", "webapp"], EXIT_USAGE, "expected KEY=VALUE, got 'novalue'"),
        (["-p", "70000", "webapp"], EXIT_USAGE, "expected a port number from 0 to 65535"),
        (["-w", "0", "webapp"], EXIT_USAGE, "invalid value for --workers"),
        (["-t", "many", "webapp"], EXIT_USAGE, "invalid value for --threads"),
        (["--backlog", "-5", "webapp"], EXIT_USAGE, "invalid value for --backlog"),
        (["--graceful-timeout", "soon", "webapp"], EXIT_USAGE, "invalid value for --graceful-timeout"),
        (["--main-interval", "0", "webapp"], EXIT_USAGE, "invalid value for --main-interval"),
        (["--timeout-keep-alive", "0", "webapp"], EXIT_USAGE, "invalid value for --timeout-keep-alive"),
        (["--keep-alive", "soon", "webapp"], EXIT_USAGE, "invalid value for --timeout-keep-alive"),
        (["--log-level", "loud", "webapp"], EXIT_USAGE, "invalid value for --log-level"),
        (["--root-path", "app", "webapp"], EXIT_USAGE, "starting with '/'"),
        (["--uds-mode", "rwx", "webapp"], EXIT_USAGE, "invalid value for --uds-mode"),
        (["-b", "127.0.0.1:1", "-p", "2", "webapp"], EXIT_USAGE, "--port cannot be combined with --bind"),
        (["-b", "127.0.0.1:1", "-i", "0.0.0.0", "webapp"], EXIT_USAGE, "--host cannot be combined with --bind"),
        (["-b", "::1:80", "webapp"], EXIT_USAGE, "put an IPv6 address in brackets"),
        (["-b", "fd://x", "webapp"], EXIT_USAGE, "fd:// must be followed by a descriptor number"),
        (["--reload", "-w", "2", "webapp"], EXIT_USAGE, "--reload cannot be combined with --workers"),
        (["-c", "nowhere.toml", "webapp"], EXIT_USAGE, "config file nowhere.toml does not exist"),
        (["-p"], EXIT_USAGE, "argument -p/--port: expected one argument"),
        (["webapp", "other"], EXIT_USAGE, "unrecognized arguments: other"),
        (["check"], EXIT_USAGE, "no APP given"),
        (["check", "webapp:missing"], EXIT_APP, "has no attribute 'missing'"),
        (["check", "-s", "werkzeug", "-t", "2", "webapp"], EXIT_USAGE, "werkzeug cannot cap its threads"),
        (["list", "extra"], EXIT_USAGE, "anyserve list takes no arguments, got extra"),
        (["serve"], EXIT_USAGE, "no APP given"),
        (
            ["-s", "wsgiref", "-p", "0", "--on-start", "webapp:nothing", "webapp"],
            EXIT_APP,
            "has no attribute 'nothing'",
        ),
    ],
)
def test_main_returns_the_exit_code_and_one_line(
    in_site: Path, capsys: pytest.CaptureFixture[str], argv: list[str], code: int, fragment: str
) -> None:
    assert main(argv) == code
    err = capsys.readouterr().err
    assert err.startswith("anyserve: error: ") and err.count("\n") == 1, err
    assert fragment in err


def test_main_bind_error(in_site: Path, taken_port: int, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-s", "wsgiref", "-p", str(taken_port), "webapp"]) == EXIT_BIND
    assert "address already in use" in capsys.readouterr().err


def test_main_app_error_details_come_before_the_line(in_site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "raising"]) == EXIT_APP
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == "Traceback (most recent call last):"
    assert err[-1] == "anyserve: error: module 'raising' raised RuntimeError on import: broken at import"


# -- what works ---------------------------------------------------------------------------------------


def test_version() -> None:
    for flag in ("-V", "--version"):
        result = run(flag)
        assert (result.returncode, result.stdout.strip(), result.stderr) == (EXIT_OK, f"anyserve {__version__}", "")


def test_help_lists_every_option() -> None:
    result = run("--help")
    assert result.returncode == EXIT_OK and result.stderr == ""
    assert result.stdout.startswith("usage: anyserve ")
    for flag in ("-V", "--version", "-c", "--config", "--no-factory", "--no-cherrypy"):
        assert flag in result.stdout
    for setting in settings():
        for flag in setting.flags:
            assert flag in result.stdout, flag
    assert "ANYSERVE_PORT" in result.stdout  # each option names its environment variable
    for command in ("anyserve list", "anyserve check"):
        assert command in result.stdout


def test_list_shows_the_servers_with_their_versions() -> None:
    from anyserve.registry import adapters

    result = run("list")
    assert result.returncode == EXIT_OK and result.stderr == "", result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["server", "version", "capabilities"]
    known = adapters()
    assert set(FOUR) <= set(known)
    for name, cls in known.items():
        (line,) = [line for line in lines if line.startswith(name + " ")]
        version = cls.version()
        assert version, name  # every registered server is installed here
        assert version in line
        assert line.endswith(", ".join(cls.capabilities.flags()))  # its capabilities follow
        # and what closes a connection after --timeout-keep-alive there
        assert cls.keep_alive_timeout_by, name
        assert f"--timeout-keep-alive: {cls.keep_alive_timeout_by}" in result.stdout, name
    assert "concurrency: thread pool" in result.stdout


def test_list_help() -> None:
    result = run("list", "--help")
    assert result.returncode == EXIT_OK and result.stdout.startswith("usage: anyserve list")


def summary_lines(output: str) -> list[str]:
    """What check prints but the option lines (where each option came from; tests/test_cli_parsing.py)."""
    return [line for line in output.splitlines() if not line.startswith("option: ")]


def test_check_loads_the_app_and_starts_nothing(site: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    # The README's example: waitress on a TCP port and a unix socket at once.
    sock = tmp_path_factory.mktemp("sock") / "app.sock"
    port = free_port()
    result = run("check", "-s", "waitress", "-b", f"127.0.0.1:{port}", "-b", f"unix:{sock}", "webapp", cwd=site)
    assert result.returncode == EXIT_OK, result.stderr
    assert summary_lines(result.stdout) == [
        "app: webapp -> webapp.application",
        f"server: waitress {_version('waitress')}, 1 worker, 4 threads (the server's default)",
        f"listen: http://127.0.0.1:{port}",
        f"listen: unix:{sock}",
        "access log: off",
        "ok: nothing was started",
    ]
    assert not sock.exists()  # bound, then released at once
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))  # free again


def test_the_readme_toml_example_serves_on_both_listeners(site: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The README's [tool.anyserve] example (waitress on a TCP port and a unix
    socket), on a free port and a socket of the test's own."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    (example,) = [block for block in readme.split("```toml\n")[1:] if "unix:/run/myapp.sock" in block]
    sock = tmp_path_factory.mktemp("sock") / "app.sock"
    toml = example.split("```")[0].replace("[tool.anyserve]\n", "").replace("myapp:application", "webapp:application")
    toml = toml.replace("0.0.0.0:8000", "127.0.0.1:0").replace("/run/myapp.sock", str(sock))
    (site / "anyserve.toml").write_text(toml)
    running = Running("waitress", ["-c", str(site / "anyserve.toml"), "--app-dir", str(site)])
    try:
        running.wait_listening()
        assert fetch(running.url, "/").body == b"ok"
        assert fetch(f"unix:{sock}", "/").body == b"ok"
    finally:
        assert running.stop() == 0, running.stderr_text()


def test_check_says_what_would_serve(site: Path, pki: Any) -> None:
    args = ["-s", "cheroot", "-w", "3", "-t", "6", "-b", "127.0.0.1:0", "--certfile", str(pki.combined)]
    args += ["--access-log", "-", "--mount", "/api=webapp:make('api')", "--vhost", "example.com=webapp:application"]
    result = run("check", *args, "webapp", cwd=site)
    assert result.returncode == EXIT_OK, result.stderr
    assert summary_lines(result.stdout) == [
        "app: webapp -> webapp.application",
        "mount: /api = webapp:make('api') -> webapp.application",
        "vhost: example.com = webapp:application -> webapp.application",
        f"server: cheroot {_version('cheroot')}, 3 workers (anyserve's supervisor), 6 threads each",
        "listen: https://127.0.0.1:0 (a free port, picked at start)",
        f"tls: {pki.combined} on every listener; client certificates: none",
        "access log: stdout, combined format",
        "ok: nothing was started",
    ]


@pytest.mark.parametrize(
    ("server", "threads"),
    [("gunicorn", "2 workers, 1 thread each (the server's default)"), ("gevent", "1 worker, greenlet per connection")],
)
def test_check_shows_the_server_s_own_threads(site: Path, server: str, threads: str) -> None:
    workers = ["-w", "2"] if server == "gunicorn" else []
    result = run("check", "-s", server, *workers, "-p", "0", "webapp", cwd=site)
    assert result.returncode == EXIT_OK, result.stderr
    assert f"server: {server} {_version(server)}, {threads}" in result.stdout


@pytest.mark.parametrize("command", [["check"], []], ids=["check", "serve"])
def test_check_refuses_what_serve_refuses(site: Path, taken_port: int, command: list[str]) -> None:
    """The same one line from check as from serve, which stops there (on a port in
    use, so that a serve that went on would fail with another line)."""
    (site / "log.yaml").write_text("version: 1\nroot:\n  level: INFO\n")
    (site / "log.conf").write_text("not an INI file\n")
    (site / "running.pid").write_text(f"{os.getpid()}\n")  # this test's process
    cases = [
        (
            ["-p", str(taken_port)],
            EXIT_BIND,
            f"cannot listen on 127.0.0.1:{taken_port}: address already in use; another process is "
            "listening there (pick another port with -p or -b)",
        ),
        (
            ["-p", str(taken_port), "--log-config", "log.yaml"],
            EXIT_USAGE,
            "--log-config: log.yaml is YAML, which anyserve does not read; write the same dictConfig as JSON "
            "(.json) or TOML (.toml)",
        ),
        (
            ["-p", str(taken_port), "--log-config", "log.conf"],
            EXIT_USAGE,
            "--log-config: log.conf is not a logging configuration anyserve reads: an INI file for "
            "logging.config.fileConfig (this one has no [section] header), or a dictConfig as JSON (.json) "
            "or TOML (.toml)",
        ),
        (
            ["-p", str(taken_port), "--access-log", "nodir/access.log"],
            EXIT_USAGE,
            "--access-log: cannot open nodir/access.log: No such file or directory",
        ),
        (
            ["-p", str(taken_port), "--pid", "running.pid"],
            EXIT_USAGE,
            f"--pid: {site / 'running.pid'} names process {os.getpid()}, which is running; stop it first, "
            "or remove the file if that process is not anyserve",
        ),
        (
            ["--host", "0.0.0.0:8180"],
            EXIT_USAGE,
            "--host takes a host, not HOST:PORT; use --bind 0.0.0.0:8180",
        ),
    ]
    for args, code, message in cases:
        result = run(*command, "-s", "wsgiref", *args, "webapp", cwd=site)
        assert_error(result, code)
        assert result.stderr == f"anyserve: error: {message}\n", args


def test_check_binds_as_serve_does(site: Path, pki: Any) -> None:
    """What only the bound listeners tell: --tls-bind naming none of them."""
    args = ["-s", "cheroot", "-b", "127.0.0.1:0", "--certfile", str(pki.combined), "--tls-bind", "fd://secure"]
    result = run("check", *args, "webapp", cwd=site)
    assert_error(result, EXIT_USAGE, "--tls-bind fd://secure names none of the listeners")


def test_serve_starts_with_the_summary_check_prints(site: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    sock = tmp_path_factory.mktemp("sock") / "app.sock"
    args = ["-s", "waitress", "-t", "2", "-b", f"unix:{sock}", "--access-log", "-", "webapp"]
    checked = run("check", "-b", "127.0.0.1:0", *args, cwd=site)
    assert checked.returncode == EXIT_OK, checked.stderr
    running = Running("waitress", ["-b", "127.0.0.1:0", "--app-dir", str(site), *args])
    try:
        running.wait_listening()
        started = running.wait_for_output(r"access log: ")
    finally:
        running.stop()
    logged = [line.split("] anyserve: ", 1)[1] for line in started.splitlines() if "] anyserve: " in line]
    expected = summary_lines(checked.stdout)[:-1]  # without "ok: nothing was started"
    expected = [
        f"Listening on {running.url}"
        if line.startswith("listen: http://")
        else line.replace("listen: ", "Listening on ")
        for line in expected
    ]
    assert logged == expected, started
    assert "Press Ctrl-C" not in started  # not on a terminal


def test_check_picks_the_server_auto_would(site: Path) -> None:
    result = run("check", "-p", "0", "webapp:make('x')", cwd=site)
    assert result.returncode == EXIT_OK, result.stderr
    assert "server: cheroot " in result.stdout


def test_serve_is_the_default_command(site: Path, taken_port: int) -> None:
    for args in (["serve"], []):
        result = run(*args, "-s", "wsgiref", "-p", str(taken_port), "webapp", cwd=site)
        assert_error(result, EXIT_BIND, "address already in use")  # parsed, loaded, then refused the port


def _version(distribution: str) -> str:
    import importlib.metadata

    return importlib.metadata.version(distribution)


@pytest.mark.parametrize("command", [["--help"], ["list"], ["-V"]])
def test_help_and_list_import_no_server(command: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "anyserve", *command], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == EXIT_OK, result.stderr
    imported = {
        line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")
    }
    assert "anyserve.cli" in imported  # the parse below sees the imports
    top_level = {name.split(".")[0] for name in imported}
    assert not top_level & set(SERVER_PACKAGES), sorted(top_level & set(SERVER_PACKAGES))


def test_python_m_anyserve_is_the_same_command() -> None:
    result = subprocess.run([sys.executable, "-m", "anyserve", "-V"], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == f"anyserve {__version__}"
