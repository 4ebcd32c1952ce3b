"""Config: one declaration per option, converted the same from every source."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from anyserve.config import Config, env_var, read_config_file, settings
from anyserve.errors import ConfigError


def test_every_default_passes_its_own_converter() -> None:
    defaults = Config()
    for setting in settings():
        default = getattr(defaults, setting.name)
        if default is not None:
            assert setting.convert(default) == default, setting.name


def test_every_option_has_help_and_an_environment_variable() -> None:
    for setting in settings():
        assert setting.help, setting.name
        assert env_var(setting.name) == "ANYSERVE_" + setting.name.upper()
        if setting.name != "app":
            assert any(flag.startswith("--") for flag in setting.flags), setting.name


def test_fields_and_settings_agree() -> None:
    assert [f.name for f in dataclasses.fields(Config)] == [s.name for s in settings()]


@pytest.mark.parametrize(
    ("name", "raw", "value"),
    [
        ("port", "8080", 8080),
        ("port", 0, 0),
        ("workers", " 3 ", 3),
        ("graceful_timeout", "2.5", 2.5),
        ("graceful_timeout", "10s", 10.0),
        ("reload", "yes", True),
        ("reload", "off", False),
        ("uds_mode", "660", 0o660),
        ("uds_mode", 0o600, 0o600),
        ("bind", "127.0.0.1:1,unix:/tmp/x.sock", ["127.0.0.1:1", "unix:/tmp/x.sock"]),
        ("options", ["a=1", "b = two"], {"a": "1", "b": "two"}),
        ("options", {"a": 1}, {"a": 1}),
        ("log_level", "DEBUG", "debug"),
        ("root_path", "/app/", "/app"),
        ("on_start", "m:f,n:g", ["m:f", "n:g"]),
        ("cherrypy", "false", False),
    ],
)
def test_converters_take_strings_and_values(name: str, raw: object, value: object) -> None:
    assert getattr(Config.load(kwargs={name: raw}, env={}), name) == value


@pytest.mark.parametrize(
    ("name", "raw", "message"),
    [
        ("port", "http", r"invalid value for --port \(anyserve.run\(\)\): 'http': expected an integer"),
        ("port", True, "expected an integer"),
        ("threads", 0, "expected an integer of 1 or more"),
        ("reload", "maybe", "expected true or false"),
        ("uds_mode", "rw", "octal file mode"),
        ("main_interval", 0, "above 0"),
        ("on_start", "nocolon", "expected module:func"),
    ],
)
def test_bad_values_name_the_option(name: str, raw: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Config.load(kwargs={name: raw}, env={})


def test_precedence_cli_kwargs_file_env(tmp_path: Path) -> None:
    config_file = tmp_path / "anyserve.toml"
    config_file.write_text('server = "waitress"\nthreads = 3\nbacklog = 100\n')
    env = {
        "ANYSERVE_SERVER": "wsgiref",
        "ANYSERVE_THREADS": "1",
        "ANYSERVE_BACKLOG": "7",
        "ANYSERVE_LOG_LEVEL": "debug",
    }
    config = Config.load(cli={"server": "cheroot"}, kwargs={"threads": 5}, file=config_file, env=env)
    assert config.server == "cheroot"  # the command line wins
    assert config.threads == 5  # then keyword arguments
    assert config.backlog == 100  # then the file
    assert config.log_level == "debug"  # then the environment
    assert config.graceful_timeout == 30.0  # then the default


def test_options_merge_across_sources(tmp_path: Path) -> None:
    config_file = tmp_path / "anyserve.toml"
    config_file.write_text("[options]\na = 1\nb = 2\n")
    config = Config.load(cli={"options": ["b=3", "c=4"]}, file=config_file, env={})
    assert config.options == {"a": 1, "b": "3", "c": "4"}


def test_pyproject_in_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n\n[tool.anyserve]\nserver = "waitress"\n')
    monkeypatch.chdir(tmp_path)
    assert Config.load(env={}).server == "waitress"


def test_pyproject_given_with_c_reads_its_table(tmp_path: Path) -> None:
    path = tmp_path / "pyproject.toml"
    path.write_text("[tool.anyserve]\nport = 9000\n[tool.other]\nport = 1\n")
    assert read_config_file(path) == {"port": 9000}


def test_dashes_and_underscores_in_files(tmp_path: Path) -> None:
    path = tmp_path / "anyserve.toml"
    path.write_text('root-path = "/x"\ngraceful_timeout = 3\n')
    config = Config.load(file=path, env={})
    assert (config.root_path, config.graceful_timeout) == ("/x", 3.0)


def test_unknown_keys_are_refused_with_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "anyserve.toml"
    path.write_text("thread = 4\n")
    with pytest.raises(ConfigError, match=r"unknown option 'thread' in .*anyserve.toml; did you mean 'threads'\?"):
        Config.load(file=path, env={})
    with pytest.raises(ConfigError, match=r"unknown option 'prot' in anyserve.run\(\); did you mean 'port'\?"):
        Config.load(kwargs={"prot": 1}, env={})


def test_malformed_toml(tmp_path: Path) -> None:
    path = tmp_path / "anyserve.toml"
    path.write_text("port = = 1\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        Config.load(file=path, env={})


def test_bind_with_host_or_port_is_refused() -> None:
    with pytest.raises(ConfigError, match="--port cannot be combined with --bind"):
        Config.load(kwargs={"bind": ["127.0.0.1:1"]}, cli={"port": "2"}, env={})


def test_malformed_bind_is_a_usage_error() -> None:
    with pytest.raises(ConfigError, match="put an IPv6 address in brackets"):
        Config.load(kwargs={"bind": ["::1:80"]}, env={})


def test_listen() -> None:
    assert Config.load(env={}).listen == ["127.0.0.1:8000"]
    assert Config.load(kwargs={"host": "::1", "port": 0}, env={}).listen == ["[::1]:0"]
    assert Config.load(kwargs={"bind": ["unix:/tmp/a", ":80"]}, env={}).listen == ["unix:/tmp/a", ":80"]


def test_is_set_and_replace() -> None:
    config = Config.load(kwargs={"port": 1}, env={})
    assert config.is_set("port") and not config.is_set("host")
    changed = config.replace(port="2")
    assert changed.port == 2 and config.port == 1
    with pytest.raises(ConfigError):
        config.replace(nosuch=1)
