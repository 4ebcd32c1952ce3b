"""The command line as gunicorn and uvicorn users type it: no abbreviated flags,
a "did you mean" for a flag or command it does not know, their spellings of
anyserve's options, $PORT and $WEB_CONCURRENCY, the order of the sources and
where each option came from. Each case runs the real ``anyserve`` command."""

from __future__ import annotations

import grp
import os
import pwd
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from anyserve.errors import EXIT_APP, EXIT_OK, EXIT_USAGE

from .harness import Running, fetch, free_port
from .test_cli import WSGI_APP, assert_error, run

#: An app that answers with the environment variables the tests set.
ENV_APP = """
import os

def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    names = ("GREETING", "FROM_FILE", "QUOTED", "KEPT", "EXTRA")
    return [" ".join(f"{name}={os.environ.get(name)!r}" for name in names).encode()]
"""

ENV_FILE = """\
# the app's settings
export GREETING=from the file
FROM_FILE = "two words" # a comment
QUOTED='a # kept \\n as written'
KEPT=from the file

"""


@pytest.fixture
def site(tmp_path: Path) -> Path:
    (tmp_path / "webapp.py").write_text(WSGI_APP)
    (tmp_path / "envapp.py").write_text(ENV_APP)
    return tmp_path


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path, for unix sockets (their paths are limited to ~100 bytes)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="as-") as name:
        yield Path(name)


def check_lines(result: Any) -> list[str]:
    assert result.returncode == EXIT_OK, result.stderr
    return result.stdout.splitlines()


def unix_get(path: Path, target: str = "/") -> bytes:
    """GET *target* over the unix socket at *path*; the body."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(20)
        sock.connect(str(path))
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") or head.startswith(b"HTTP/1.0 200"), head
    return body


# -- no abbreviations ------------------------------------------------------------------------------


def test_uds_is_not_an_abbreviation_of_uds_mode(site: Path, short_dir: Path) -> None:
    path = short_dir / "u.sock"
    lines = check_lines(run("check", "--uds", str(path), "webapp", cwd=site))
    assert f"listen: unix:{path}" in lines
    assert f"option: bind = unix:{path} (from --uds on the command line)" in lines


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--ssl"], "unrecognized argument --ssl: HTTPS is --certfile FILE [--keyfile FILE], or --ssl-adhoc"),
        (["--work", "2"], "unrecognized argument --work: did you mean --workers?"),
        (["--graceful", "3"], "unrecognized argument --graceful: did you mean --graceful-timeout?"),
    ],
)
def test_a_flag_is_never_abbreviated(site: Path, args: list[str], fragment: str) -> None:
    assert_error(run("check", *args, "webapp", cwd=site), EXIT_USAGE, fragment, "(see anyserve check --help)")


def test_bench_flags_are_not_abbreviated_either() -> None:
    result = run("bench", "--serv", "cheroot", "--duration", "nonsense")
    assert_error(result, EXIT_USAGE, "unrecognized argument --serv: did you mean --server?", "anyserve bench --help")


# -- did you mean ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--wokers", "2"], "unrecognized argument --wokers: did you mean --workers?"),
        (["--log-levle=debug"], "unrecognized argument --log-levle: did you mean --log-level?"),
        # gunicorn's
        (["--timeout", "30"], "--timeout: anyserve has no worker timeout of its own (gunicorn's): -o timeout=N"),
        (["-k", "gevent"], "-k: anyserve spells it -s/--server NAME"),
        (["--worker-class", "gevent"], "--worker-class: anyserve spells it -s/--server NAME"),
        (["--max-requests", "1000"], "-o max_requests=N under gunicorn and uwsgi"),
        (["--check-config"], "--check-config: anyserve check [OPTIONS] APP"),
        # uvicorn's
        (["--ssl-cert-reqs", "2"], "--ssl-cert-reqs: anyserve spells it --cert-reqs none|optional|required"),
        (["--interface", "wsgi"], "--interface: anyserve serves WSGI applications"),
        # waitress-serve's
        (["--listen", "127.0.0.1:1"], "--listen: anyserve spells it -b/--bind HOST:PORT"),
        (["--url-prefix", "/x"], "--url-prefix: anyserve spells it --root-path PREFIX"),
    ],
)
def test_an_unknown_flag_gets_the_flag_meant(site: Path, args: list[str], fragment: str) -> None:
    assert_error(run(*args, "webapp", cwd=site), EXIT_USAGE, fragment, "(see anyserve --help)")


def test_an_unknown_flag_like_none_is_named_alone(site: Path) -> None:
    result = run("--zzzz", "webapp", cwd=site)
    assert_error(result, EXIT_USAGE, "unrecognized arguments: --zzzz (see anyserve --help)")


def test_a_misspelled_command(site: Path) -> None:
    assert_error(run("chek", "webapp", cwd=site), EXIT_USAGE, "unknown command 'chek': did you mean 'anyserve check'?")
    # Alone, the word is an APP first: the module is looked for, then the command offered.
    assert_error(
        run("lsit", cwd=site),
        EXIT_APP,
        "could not import module 'lsit'",
        "; or did you mean the command 'anyserve list'?",
    )
    result = run("-s", "wsgiref", "check", "webapp", cwd=site)
    assert_error(result, EXIT_USAGE, "'check' is a command and comes first: anyserve check [OPTIONS] APP")


@pytest.mark.parametrize("command", [[], ["check"]])
def test_uvicorns_access_log_switch_does_not_swallow_the_app(site: Path, command: list[str]) -> None:
    fragment = (
        "--access-log takes a PATH (or - for stdout), and 'webapp:application' looks like an APP "
        "(uvicorn's --access-log is a switch, anyserve's takes a value): write --access-log - webapp:application"
    )
    assert_error(run(*command, "--access-log", "webapp:application", cwd=site), EXIT_USAGE, fragment)
    # Also when a config file names the app, so that nothing is left missing.
    (site / "pyproject.toml").write_text('[tool.anyserve]\napp = "webapp"\n')
    assert_error(run(*command, "--access-log", "webapp:application", cwd=site), EXIT_USAGE, fragment)


# -- gunicorn's and uvicorn's spellings --------------------------------------------------------------


def test_gunicorn_and_uvicorn_spellings_set_anyserve_options(site: Path, short_dir: Path, pki: Any) -> None:
    user = pwd.getpwuid(os.geteuid()).pw_name
    group = grp.getgrgid(os.getegid()).gr_name
    (site / ".env").write_text("A=1\n")
    path = short_dir / "app.sock"
    result = run(
        "check",
        *["--uds", str(path), "--timeout-graceful-shutdown", "5", "--keep-alive", "3", "--access-logfile", "-"],
        *["--access-logformat", "%(h)s %(s)s", "--error-logfile", "-", "-D", "-m", "027", "-u", user, "-g", group],
        *["--ssl-certfile", str(pki.cert), "--ssl-keyfile", str(pki.key), "--ssl-keyfile-password", "secret"],
        *["--ssl-ca-certs", str(pki.ca), "--chdir", str(site), "--env-file", ".env", "-e", "B=2", "--env", "C=3"],
        "webapp",
    )
    lines = check_lines(result)
    for line in (
        f"listen: unix:{path} (TLS)",
        f"tls: {pki.cert} on every listener; client certificates: none",
        f"option: bind = unix:{path} (from --uds on the command line)",
        "option: graceful_timeout = 5.0 (from --timeout-graceful-shutdown on the command line)",
        "option: timeout_keep_alive = 3.0 (from --keep-alive on the command line)",
        "option: access_log = - (from --access-logfile on the command line)",
        "option: access_log_format = %(h)s %(s)s (from --access-logformat on the command line)",
        "option: error_log = - (from --error-logfile on the command line)",
        "option: daemon = True (from -D on the command line)",
        "option: umask = 027 (from -m on the command line)",
        f"option: user = {user} (from -u on the command line)",
        f"option: group = {group} (from -g on the command line)",
        f"option: certfile = {pki.cert} (from --ssl-certfile on the command line)",
        f"option: keyfile = {pki.key} (from --ssl-keyfile on the command line)",
        "option: keyfile_password = (hidden) (from --ssl-keyfile-password on the command line)",
        f"option: ca_certs = {pki.ca} (from --ssl-ca-certs on the command line)",
        f"option: chdir = {site} (from --chdir on the command line)",
        "option: env_file = .env (from --env-file on the command line)",
        "option: env = B=..., C=... (from --env on the command line)",  # values may be secrets
    ):
        assert line in lines, "\n".join(lines)


def test_no_access_log_wins_over_a_variable(site: Path) -> None:
    result = run("check", "--no-access-log", "webapp", cwd=site, env={"ANYSERVE_ACCESS_LOG": "-"})
    assert "option: access_log = None (from --no-access-log on the command line)" in check_lines(result)


def test_env_env_file_chdir_and_uds_when_serving(site: Path, short_dir: Path) -> None:
    (site / ".env").write_text(ENV_FILE)
    path = short_dir / "app.sock"
    args = ["--chdir", str(site), "--env-file", ".env", "-e", "GREETING=from --env", "--env", "EXTRA=x=1"]
    running = Running("wsgiref", [*args, "--uds", str(path), "envapp"], env={"KEPT": "from outside"})
    try:
        running.wait_for_output(rf"Listening on unix:{re.escape(str(path))}")
        assert unix_get(path) == (
            b"GREETING='from --env' FROM_FILE='two words' QUOTED='a # kept \\\\n as written' "
            b"KEPT='from outside' EXTRA='x=1'"
        )
    finally:
        running.stop()


def test_fd_serves_an_inherited_socket(site: Path) -> None:
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.set_inheritable(True)
        fd = listening.fileno()
        running = Running("wsgiref", ["--chdir", str(site), "--fd", str(fd), "webapp"], pass_fds=(fd,))
        try:
            running.wait_listening()
            assert fetch(f"http://127.0.0.1:{listening.getsockname()[1]}", "/").body == b"ok"
        finally:
            running.stop()


@pytest.mark.parametrize(
    ("env_file", "fragment"),
    [
        ("A=1\nnot a setting\n", "--env-file .env, line 2: expected KEY=VALUE, got 'not a setting'"),
        ("A='unterminated\n", "--env-file .env, line 1: expected KEY=VALUE"),
        (None, "--env-file: the file .env does not exist"),
    ],
)
def test_a_bad_env_file(site: Path, env_file: str | None, fragment: str) -> None:
    if env_file is not None:
        (site / ".env").write_text(env_file)
    assert_error(run("check", "--env-file", ".env", "webapp", cwd=site), EXIT_USAGE, fragment)


def test_a_missing_chdir(site: Path) -> None:
    result = run("check", "--chdir", "nowhere", "webapp", cwd=site)
    assert_error(result, EXIT_USAGE, "--chdir: the directory nowhere does not exist")


def test_chdir_comes_before_the_pyproject(site: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """As gunicorn's: the config file is looked for in the directory --chdir names."""
    (site / "pyproject.toml").write_text("[tool.anyserve]\nthreads = 3\n")
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    lines = check_lines(run("check", "--chdir", str(site), "webapp", cwd=elsewhere))
    assert f"option: threads = 3 (from {site / 'pyproject.toml'}: [tool.anyserve] threads)" in lines


# -- $PORT and $WEB_CONCURRENCY ---------------------------------------------------------------


def test_port_and_web_concurrency_as_gunicorn(site: Path) -> None:
    # check binds what it names, so every port here is a free one.
    port, other, third = free_port(), free_port(), free_port()
    platform = {"PORT": str(port), "WEB_CONCURRENCY": "3"}
    lines = check_lines(run("check", "-s", "waitress", "webapp", cwd=site, env=platform))
    assert f"listen: http://0.0.0.0:{port}" in lines
    assert f"option: bind = 0.0.0.0:{port} (from PORT)" in lines
    assert "option: workers = 3 (from WEB_CONCURRENCY)" in lines
    # Any address from a source of anyserve's replaces $PORT's; -w replaces $WEB_CONCURRENCY.
    lines = check_lines(run("check", "-s", "waitress", "-p", str(other), "-w", "2", "webapp", cwd=site, env=platform))
    assert f"listen: http://127.0.0.1:{other}" in lines
    assert "option: workers = 2 (from -w on the command line)" in lines
    env = {**platform, "ANYSERVE_HOST": "127.0.0.1", "ANYSERVE_PORT": str(third)}
    lines = check_lines(run("check", "webapp", cwd=site, env=env))
    assert f"listen: http://127.0.0.1:{third}" in lines
    result = run("check", "webapp", cwd=site, env={"PORT": "http"})
    assert_error(result, EXIT_USAGE, "invalid value for --port (PORT): 'http': expected an integer")
    result = run("check", "--reload", "webapp", cwd=site, env={"WEB_CONCURRENCY": "4"})
    assert_error(result, EXIT_USAGE, "--reload cannot be combined with --workers above 1 (4 from WEB_CONCURRENCY)")


def test_port_binds_all_interfaces_when_serving(site: Path) -> None:
    port = free_port()
    running = Running("wsgiref", ["--chdir", str(site), "webapp"], env={"PORT": str(port)})
    try:
        running.wait_listening()
        assert running.url == f"http://0.0.0.0:{port}"
        assert fetch(f"http://127.0.0.1:{port}", "/").body == b"ok"
    finally:
        running.stop()


# -- precedence and where each option came from ----------------------------------------------------


def test_the_environment_wins_over_the_pyproject(site: Path) -> None:
    in_file, in_env, on_line = free_port(), free_port(), free_port()
    (site / "pyproject.toml").write_text(f"[tool.anyserve]\nport = {in_file}\nthreads = 3\n")
    lines = check_lines(run("check", "webapp", cwd=site, env={"ANYSERVE_PORT": str(in_env)}))
    assert f"listen: http://127.0.0.1:{in_env}" in lines
    assert f"option: port = {in_env} (from ANYSERVE_PORT)" in lines
    assert f"option: threads = 3 (from {site / 'pyproject.toml'}: [tool.anyserve] threads)" in lines
    lines = check_lines(run("check", "-p", str(on_line), "webapp", cwd=site, env={"ANYSERVE_PORT": str(in_env)}))
    assert f"listen: http://127.0.0.1:{on_line}" in lines


def test_check_names_each_source(site: Path) -> None:
    (site / "anyserve.toml").write_text('server = "waitress"\nbacklog = 64\n[options]\nconnection_limit = 50\n')
    result = run(
        "check",
        *["-c", "anyserve.toml", "-t", "2", "webapp"],
        cwd=site,
        env={"ANYSERVE_LOG_LEVEL": "warning", "ANYSERVE_BACKLOG": "32"},
    )
    assert check_lines(result)[-7:] == [
        "option: app = webapp (from APP on the command line)",
        "option: server = waitress (from anyserve.toml: server)",
        "option: backlog = 32 (from ANYSERVE_BACKLOG)",
        "option: threads = 2 (from -t on the command line)",
        "option: options = connection_limit=50 (from anyserve.toml: options)",
        "option: log_level = warning (from ANYSERVE_LOG_LEVEL)",
        "ok: nothing was started",
    ]


def test_serving_at_debug_logs_the_sources_and_the_threads(site: Path) -> None:
    (site / "pyproject.toml").write_text("[tool.anyserve]\nport = 5001\nthreads = 3\n")
    port = free_port()
    env = {"ANYSERVE_PORT": str(port), "ANYSERVE_LOG_LEVEL": "debug", "ANYSERVE_THREDS": "4"}
    running = Running("wsgiref", ["--chdir", str(site), "webapp"], env=env)
    try:
        running.wait_listening()
        assert running.url == f"http://127.0.0.1:{port}"
        text = running.stderr_text()
    finally:
        running.stop()
    assert f"Option port = {port} (from ANYSERVE_PORT)" in text
    assert f"Option threads = 3 (from {site / 'pyproject.toml'}: [tool.anyserve] threads)" in text
    assert "Option server = wsgiref (from -s on the command line)" in text
    assert "ANYSERVE_THREDS is not an anyserve option, so it is ignored; did you mean ANYSERVE_THREADS?" in text
    assert re.search(r"server: wsgiref [^,]+, 1 worker, 3 threads\n", text), text


def test_a_misspelled_variable_is_named_with_the_option_meant(site: Path) -> None:
    env = {"ANYSERVE_PROT": "9000", "ANYSERVE_WORKERS": "1", "ANYSERVE_BIND": "127.0.0.1:0"}
    result = run("check", "webapp", cwd=site, env=env)
    assert result.returncode == EXIT_OK, result.stderr
    assert result.stderr.splitlines() == [
        "anyserve: warning: ANYSERVE_PROT is not an anyserve option, so it is ignored; did you mean ANYSERVE_PORT?"
    ]
    assert "9000" not in result.stdout


def test_a_bad_value_names_the_variable(site: Path) -> None:
    result = run("check", "webapp", cwd=site, env={"WEB_CONCURRENCY": "many"})
    assert_error(result, EXIT_USAGE, "invalid value for --workers (WEB_CONCURRENCY): 'many': expected an integer")
    (site / "pyproject.toml").write_text('[tool.anyserve]\nport = "http"\n')
    result = run("check", "webapp", cwd=site)
    assert_error(result, EXIT_USAGE, "invalid value for --port (", "pyproject.toml: [tool.anyserve] port): 'http'")
