"""Process control pieces: the pid file, user and group resolution, the API's refusal."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

import anyserve
from anyserve.config import Config
from anyserve.errors import ConfigError
from anyserve.process import PidFile, read_env_file, resolve_identity


def app(environ: dict[str, object], start_response: object) -> list[bytes]:
    return [b""]


def test_pid_file_written_checked_and_removed(tmp_path: Path) -> None:
    path = tmp_path / "app.pid"
    pid_file = PidFile(str(path))
    pid_file.check()  # no file: nothing to refuse
    pid_file.write()
    assert path.read_text() == f"{os.getpid()}\n"
    assert not list(tmp_path.glob("*.tmp"))
    pid_file.remove()
    assert not path.exists()


def test_a_stale_pid_file_is_replaced_and_a_live_one_refused(tmp_path: Path) -> None:
    path = tmp_path / "app.pid"
    gone = subprocess.Popen(["true"])
    gone.wait()
    path.write_text(f"{gone.pid}\n")
    PidFile(str(path)).write()
    assert path.read_text() == f"{os.getpid()}\n"
    path.write_text("1\n")  # init: always alive
    with pytest.raises(ConfigError, match=r"names process 1, which is running"):
        PidFile(str(path)).check()


def test_a_pid_file_that_names_another_process_now_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "app.pid"
    pid_file = PidFile(str(path))
    pid_file.write()
    path.write_text("12345\n")  # a newer instance wrote it since
    pid_file.remove()
    assert path.read_text() == "12345\n"


def test_resolve_identity() -> None:
    assert resolve_identity(Config()) is None
    if os.geteuid() == 0:
        identity = resolve_identity(Config(user="nobody"))
        assert identity is not None and identity.uid == 65534 and identity.name == "nobody"
        assert resolve_identity(Config(user="12345")) == type(identity)(12345, 0, None)  # an id with no name
    else:
        with pytest.raises(ConfigError, match="--user needs root"):
            resolve_identity(Config(user="nobody"))
    with pytest.raises(ConfigError, match="there is no user 'no-such-user-q'"):
        resolve_identity(Config(user="no-such-user-q"))


@pytest.mark.parametrize(
    "option",
    [
        {"pid": "x.pid"},
        {"daemon": True},
        {"user": "nobody"},
        {"umask": "022"},
        {"chdir": "/"},
        {"env": {"A": "1"}},
        {"env_file": ".env"},
    ],
)
def test_the_python_api_refuses_the_process_options(option: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match=r"^anyserve.serving\(\) serves in the calling program"):
        with anyserve.serving(app, server="wsgiref", **option):
            pass
    with pytest.raises(ConfigError, match=r"^anyserve.run\(\) serves in the calling program"):
        anyserve.run(app, server="wsgiref", **option)


def test_env_file(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text(
        "# comment\n"
        "\n"
        "PLAIN=value with spaces   \n"
        "export EXPORTED=1\n"
        "SPACED = x # a comment\n"
        "HASH=a#b\n"
        "EMPTY=\n"
        "SINGLE='$HOME \\n # as written'\n"
        'DOUBLE="line\\nbreak \\"quoted\\" # inside"  # outside\n'
        "URL=postgres://u:p@h/db?x=1\n"
    )
    assert read_env_file(str(path)) == {
        "PLAIN": "value with spaces",
        "EXPORTED": "1",
        "SPACED": "x",
        "HASH": "a#b",
        "EMPTY": "",
        "SINGLE": "$HOME \\n # as written",
        "DOUBLE": 'line\nbreak "quoted" # inside',
        "URL": "postgres://u:p@h/db?x=1",
    }


@pytest.mark.parametrize("line", ["no equals sign", "1ABC=digit first", "A='open", 'A="x" trailing', "=1"])
def test_env_file_lines_that_are_refused(tmp_path: Path, line: str) -> None:
    path = tmp_path / ".env"
    path.write_text(f"OK=1\n{line}\n")
    with pytest.raises(ConfigError, match=rf"^--env-file {path}, line 2: expected KEY=VALUE, got "):
        read_env_file(str(path))
