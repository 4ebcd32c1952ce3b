"""Config: one declaration per option, converted the same from every source."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from anyserve.config import (
    Config,
    env_var,
    flag_of,
    read_config_file,
    settings,
    settings_by_name,
    unknown_env_vars,
)
from anyserve.errors import ConfigError

NAMES = [s.name for s in settings()]


@pytest.fixture(autouse=True)
def _no_pyproject(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Config.load reads ./pyproject.toml: run every test from an empty directory."""
    monkeypatch.chdir(tmp_path)


def load(**sources: Any) -> Config:
    sources.setdefault("env", {})
    return Config.load(**sources)


# -- the declarations ----------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_every_default_passes_its_own_converter(name: str) -> None:
    setting = settings_by_name()[name]
    default = getattr(Config(), name)
    if default is not None:  # None means "not set": the server's or anyserve's own default applies
        assert setting.convert(default) == default


@pytest.mark.parametrize("name", [s.name for s in settings() if s.kind in ("value", "flag")])
def test_every_scalar_default_survives_a_trip_through_the_environment(name: str) -> None:
    default = getattr(Config(), name)
    if default is not None:
        assert getattr(load(env={env_var(name): str(default)}), name) == default


def test_every_option_has_help_a_flag_and_an_environment_variable() -> None:
    for setting in settings():
        assert setting.help, setting.name
        assert env_var(setting.name) == "ANYSERVE_" + setting.name.upper()
        if setting.name != "app":
            assert flag_of(setting).startswith("--"), setting.name


def test_fields_and_settings_agree() -> None:
    assert [f.name for f in dataclasses.fields(Config)] == NAMES


# -- converters: strings and typed values in, bad values out with the option named ----

GOOD = [
    ("app", "pkg.mod:app", "pkg.mod:app"),
    ("app", print, print),
    ("server", "cheroot", "cheroot"),
    ("server", "mymod:MyAdapter", "mymod:MyAdapter"),
    ("host", "0.0.0.0", "0.0.0.0"),
    ("port", "8080", 8080),
    ("port", 0, 0),
    ("port", " 65535 ", 65535),
    ("bind", "127.0.0.1:1,unix:/tmp/x.sock", ["127.0.0.1:1", "unix:/tmp/x.sock"]),
    ("bind", ("[::1]:0",), ["[::1]:0"]),
    ("backlog", "64", 64),
    ("backlog", 1, 1),
    ("max_header_size", "8192", 8192),
    ("max_body_size", 0, 0),
    ("uds_mode", "660", 0o660),
    ("uds_mode", "0o600", 0o600),
    ("uds_mode", 0o600, 0o600),
    ("workers", " 3 ", 3),
    ("workers", 2, 2),
    ("threads", "8", 8),
    ("threads", 1, 1),
    ("graceful_timeout", "2.5", 2.5),
    ("graceful_timeout", "10s", 10.0),
    ("graceful_timeout", 0, 0.0),
    ("timeout_keep_alive", "0.5", 0.5),
    ("timeout_keep_alive", "75s", 75.0),
    ("timeout_keep_alive", 2, 2.0),
    ("options", ["a=1", "b = two"], {"a": "1", "b": "two"}),
    ("options", "a=1,b=x=y", {"a": "1", "b": "x=y"}),
    ("options", {"a": 1}, {"a": 1}),
    ("factory", "true", True),
    ("factory", False, False),
    ("app_dir", "src", "src"),
    ("root_path", "/app/", "/app"),
    ("root_path", "/", ""),
    ("preload", "yes", True),
    ("preload", False, False),
    ("reload", "yes", True),
    ("reload", "off", False),
    ("reload", 1, True),
    ("reload_dirs", "a,b", ["a", "b"]),
    ("reload_dirs", ["a"], ["a"]),
    ("reload_includes", "*.html,*.css", ["*.html", "*.css"]),
    ("reload_excludes", ["node_modules"], ["node_modules"]),
    ("main_interval", "0.5", 0.5),
    ("main_interval", 2, 2.0),
    ("on_start", "m:f,n:g", ["m:f", "n:g"]),
    ("on_start", [print], [print]),
    ("on_stop", "m:f", ["m:f"]),
    ("cherrypy", "false", False),
    ("cherrypy", True, True),
    ("cherrypy_config", "site.conf", "site.conf"),
    ("log_level", "DEBUG", "debug"),
    ("log_level", "warning", "warning"),
    ("certfile", "site.pem", "site.pem"),
    ("keyfile", "site.key", "site.key"),
    ("keyfile_password", "s3cret", "s3cret"),
    ("ca_certs", "ca.pem", "ca.pem"),
    ("cert_reqs", "REQUIRED", "required"),
    ("cert_reqs", "optional", "optional"),
    ("ssl_adhoc", "true", True),
    ("tls_bind", ":8443,fd://web", [":8443", "fd://web"]),
    ("access_log", "-", "-"),
    ("access_log", "/var/log/app/access.log", "/var/log/app/access.log"),
    ("access_log_format", '%(h)s "%(r)s" %(s)s %(D)s', '%(h)s "%(r)s" %(s)s %(D)s'),
    ("access_log_format", "%({x-request-id}i)s %(L)s", "%({x-request-id}i)s %(L)s"),
    ("error_log", "errors.log", "errors.log"),
    ("log_config", "logging.toml", "logging.toml"),
    ("proxy_headers", "on", True),
    ("forwarded_allow_ips", "*", "*"),
    ("forwarded_allow_ips", "10.0.0.0/8, 192.168.1.1,::1", "10.0.0.0/8,192.168.1.1,::1"),
    ("forwarded_allow_ips", ["10.1.2.3"], "10.1.2.3"),
    ("mount", ["/app0=m:app0", "/app1/=m:app1"], {"/app0": "m:app0", "/app1": "m:app1"}),
    ("mount", {"/": "m:default", "/x": "m:x(a=1)"}, {"": "m:default", "/x": "m:x(a=1)"}),
    ("vhost", ["Company.com=m:app1", "*.home.net=m:app2"], {"company.com": "m:app1", "*.home.net": "m:app2"}),
    ("vhost", {"example.org": "m:app"}, {"example.org": "m:app"}),
    ("profile", "profiles", "profiles"),
    ("pid", "/run/app.pid", "/run/app.pid"),
    ("daemon", "yes", True),
    ("user", "nobody", "nobody"),
    ("user", "65534", "65534"),
    ("user", 65534, "65534"),
    ("group", 0, "0"),
    ("group", "nogroup", "nogroup"),
    ("umask", "027", 0o27),
    ("umask", 0o22, 0o22),
    ("require_non_root", "true", True),
    ("chdir", "/srv/app", "/srv/app"),
    ("env_file", ".env", ".env"),
    ("env", ["A=1", "B=x=y"], {"A": "1", "B": "x=y"}),
    ("env", {"A": 1, "B": "two"}, {"A": "1", "B": "two"}),
    ("env", "A=1,B=2", {"A": "1", "B": "2"}),
    ("access_log", None, None),
]

#: What an option needs beside it to pass validation (e.g. --keyfile needs --certfile).
NEEDS: dict[str, dict[str, Any]] = {
    "keyfile": {"certfile": "site.pem"},
    "keyfile_password": {"certfile": "site.pem"},
    "ca_certs": {"certfile": "site.pem"},
    "cert_reqs": {"certfile": "site.pem", "ca_certs": "ca.pem"},
    "tls_bind": {"certfile": "site.pem"},
}


def test_every_option_has_good_values_below() -> None:
    assert {name for name, _, _ in GOOD} == set(NAMES)


@pytest.mark.parametrize(("name", "raw", "value"), GOOD)
def test_converters_take_strings_and_values(name: str, raw: object, value: object) -> None:
    assert getattr(load(kwargs={**NEEDS.get(name, {}), name: raw}), name) == value


BAD = [
    ("server", 5, "expected a string"),
    ("host", 127, "expected a string"),
    ("port", "http", "expected an integer"),
    ("port", True, "expected an integer"),
    ("port", "8000.5", "expected an integer"),
    ("port", -1, "from 0 to 65535"),
    ("port", 65536, "from 0 to 65535"),
    ("bind", 8000, "expected a list of strings"),
    ("bind", ["::1:80"], "put an IPv6 address in brackets"),
    ("backlog", "0", "1 or more"),
    ("max_body_size", "-1", "0 or more"),
    ("max_header_size", "4k", "expected an integer"),
    ("uds_mode", "rw", "octal file mode"),
    ("uds_mode", "99", "octal file mode"),
    ("uds_mode", 0o10000, "octal file mode"),
    ("workers", "0", "1 or more"),
    ("workers", "two", "expected an integer"),
    ("threads", 0, "1 or more"),
    ("graceful_timeout", "-1", "0 or more"),
    ("graceful_timeout", "soon", "expected a number of seconds"),
    ("graceful_timeout", "nan", "finite"),
    ("graceful_timeout", True, "expected a number of seconds"),
    ("timeout_keep_alive", "0", "above 0"),
    ("timeout_keep_alive", "-1", "0 or more"),
    ("timeout_keep_alive", "forever", "expected a number of seconds"),
    ("options", ["novalue"], "expected KEY=VALUE"),
    ("options", "=1", "expected KEY=VALUE"),
    ("factory", "maybe", "expected true or false"),
    ("app_dir", 1, "expected a string"),
    ("root_path", "app", "starting with '/'"),
    ("preload", "sometimes", "expected true or false"),
    ("reload", "maybe", "expected true or false"),
    ("reload", 2, "expected true or false"),
    ("reload_dirs", [1], "expected a list of strings"),
    ("reload_includes", [1], "expected a list of strings"),
    ("reload_excludes", 5, "expected a list of strings"),
    ("main_interval", 0, "above 0"),
    ("main_interval", "inf", "finite"),
    ("on_start", "nocolon", "expected module:func"),
    ("on_stop", 5, "expected module:func strings or callables"),
    ("cherrypy", "perhaps", "expected true or false"),
    ("cherrypy_config", ["a"], "expected a string"),
    ("log_level", "loud", "expected one of critical, error, warning, info, debug"),
    ("certfile", 1, "expected a string"),
    ("keyfile", ["k"], "expected a string"),
    ("keyfile_password", 5, "expected a string"),
    ("ca_certs", 1, "expected a string"),
    ("cert_reqs", "always", "expected one of none, optional, required"),
    ("ssl_adhoc", "maybe", "expected true or false"),
    ("tls_bind", 8443, "expected a list of strings"),
    ("access_log", 1, "expected a string"),
    ("access_log_format", "%s %s", "expected a format of %(NAME)s atoms"),
    ("access_log_format", "%(h)d", "expected a format of %(NAME)s atoms"),
    ("error_log", ["a"], "expected a string"),
    ("log_config", 2, "expected a string"),
    ("proxy_headers", "maybe", "expected true or false"),
    ("forwarded_allow_ips", "10.0.0.300", "expected IP addresses, networks such as 10.0.0.0/8"),
    ("forwarded_allow_ips", "", "expected IP addresses"),
    ("mount", ["app0=m:app0"], "the prefix 'app0' must start with '/', e.g. /app0=m:app0"),
    ("mount", ["/app0="], "names no APP"),
    ("vhost", ["exa mple.com=m:app"], "expected a host name"),
    ("vhost", ["example.com:80=m:app"], "expected a host name"),
    ("profile", 3, "expected a string"),
    ("pid", 1, "expected a string"),
    ("daemon", "later", "expected true or false"),
    ("user", ["a"], "expected a string"),
    ("user", " ", "expected a name or a numeric id"),
    ("group", -1, "expected a string"),
    ("umask", "u=rwx", "octal file mode"),
    ("require_non_root", "sometimes", "expected true or false"),
    ("chdir", 1, "expected a string"),
    ("env_file", ["a"], "expected a string"),
    ("env", ["NOVALUE"], "expected KEY=VALUE"),
    ("env", {"A=B": "1"}, "with a variable name as KEY"),
]


def test_every_option_but_app_has_bad_values_below() -> None:
    assert {name for name, _, _ in BAD} == set(NAMES) - {"app"}  # the loader judges APP


@pytest.mark.parametrize(("name", "raw", "message"), BAD)
def test_bad_values_name_the_option_the_value_and_what_is_accepted(name: str, raw: object, message: str) -> None:
    flag = flag_of(settings_by_name()[name])
    with pytest.raises(ConfigError) as info:
        load(kwargs={name: raw})
    text = str(info.value)
    if name != "bind":  # a malformed address is judged by the listener parser: it names the address
        assert text.startswith(f"invalid value for {flag} (anyserve.run()): {raw!r}: "), text
    assert message in text


@pytest.mark.parametrize(
    ("source", "shown"),
    [
        ("cli", "the command line"),
        ("kwargs", "anyserve.run()"),
        ("file", "anyserve.toml"),
        ("env", "ANYSERVE_PORT"),
    ],
)
def test_a_bad_value_names_its_source(tmp_path: Path, source: str, shown: str) -> None:
    path = tmp_path / "anyserve.toml"
    path.write_text('port = "abc"\n')
    sources: dict[str, Any] = {
        "cli": {"cli": {"port": "abc"}},
        "kwargs": {"kwargs": {"port": "abc"}},
        "file": {"file": path},
        "env": {"env": {"ANYSERVE_PORT": "abc"}},
    }[source]
    with pytest.raises(ConfigError, match=r"invalid value for --port \((.*)\): 'abc': expected an integer") as info:
        load(**sources)
    assert shown in str(info.value)


# -- precedence: command line > anyserve.run() kwargs > environment > TOML file > default --

SOURCES = ("cli", "kwargs", "env", "file")


@pytest.mark.parametrize("winner", [*SOURCES, "default"])
def test_precedence(tmp_path: Path, winner: str) -> None:
    """Each source gives threads a value of its own; the highest present wins."""
    values = {"cli": 1, "kwargs": 2, "env": 3, "file": 4}
    present = SOURCES[SOURCES.index(winner) :] if winner != "default" else ()
    path = tmp_path / "anyserve.toml"
    path.write_text(f"threads = {values['file']}\n" if "file" in present else "")
    config = Config.load(
        cli={"threads": str(values["cli"])} if "cli" in present else {},
        kwargs={"threads": values["kwargs"]} if "kwargs" in present else {},
        file=path,
        env={"ANYSERVE_THREADS": str(values["env"])} if "env" in present else {},
    )
    assert config.threads == values.get(winner)
    assert config.is_set("threads") == (winner != "default")
    shown = {"cli": "the command line", "kwargs": "anyserve.run()", "env": "ANYSERVE_THREADS"}
    shown["file"] = f"{path}: threads"
    assert config.source("threads") == shown.get(winner)


def test_precedence_across_several_options(tmp_path: Path) -> None:
    config_file = tmp_path / "anyserve.toml"
    config_file.write_text('server = "waitress"\nthreads = 3\nbacklog = 100\nlog_level = "debug"\n')
    env = {
        "ANYSERVE_SERVER": "wsgiref",
        "ANYSERVE_THREADS": "1",
        "ANYSERVE_BACKLOG": "7",
    }
    config = Config.load(cli={"server": "cheroot"}, kwargs={"threads": 5}, file=config_file, env=env)
    assert config.server == "cheroot"  # the command line wins
    assert config.threads == 5  # then keyword arguments
    assert config.backlog == 7  # then the environment
    assert config.log_level == "debug"  # then the file
    assert config.graceful_timeout == 30.0  # then the default
    assert not config.is_set("graceful_timeout")


def test_environment_variables_of_other_programs_are_ignored() -> None:
    env = {"ANYSERVE_SERVING": "cheroot 11", "ANYSERVE_NOSUCH": "1", "PORT": "1", "ANYSERVE_PORT": "9000"}
    assert load(env=env).port == 9000


def test_lists_and_mappings_from_the_environment() -> None:
    config = load(env={"ANYSERVE_BIND": "127.0.0.1:1, unix:/tmp/a.sock", "ANYSERVE_OPTIONS": "a=1,b=2"})
    assert config.bind == ["127.0.0.1:1", "unix:/tmp/a.sock"]
    assert config.options == {"a": "1", "b": "2"}


def test_os_environ_is_the_default_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANYSERVE_WORKERS", "3")
    assert Config.load().workers == 3


# -- -o mappings are merged, key by key, across sources ------------------------------


def test_options_merge_across_every_source(tmp_path: Path) -> None:
    config_file = tmp_path / "anyserve.toml"
    config_file.write_text('[options]\na = "file"\nb = "file"\n')
    config = Config.load(
        cli={"options": ["d=cli", "e=cli"]},
        kwargs={"options": {"c": "kwargs", "d": "kwargs"}},
        file=config_file,
        env={"ANYSERVE_OPTIONS": "b=env,c=env"},
    )
    assert config.options == {"a": "file", "b": "env", "c": "kwargs", "d": "cli", "e": "cli"}


def test_repeated_o_on_the_command_line() -> None:
    assert load(cli={"options": ["a=1", "a=2", "b=3"]}).options == {"a": "2", "b": "3"}


# -- TOML files ---------------------------------------------------------------------


def test_a_toml_file_with_every_kind_of_value(tmp_path: Path) -> None:
    path = tmp_path / "anyserve.toml"
    path.write_text(
        'app = "site:app"\n'
        'server = "waitress"\n'
        'bind = ["127.0.0.1:0", "unix:/tmp/site.sock"]\n'
        "uds_mode = 0o660\n"
        "threads = 8\n"
        "graceful-timeout = 2.5\n"
        "reload = false\n"
        'on_start = ["site:warm_up"]\n'
        "[options]\n"
        "connection_limit = 50\n"
    )
    config = load(file=path)
    assert config.app == "site:app"
    assert config.server == "waitress"
    assert config.bind == ["127.0.0.1:0", "unix:/tmp/site.sock"]
    assert (config.uds_mode, config.threads, config.graceful_timeout) == (0o660, 8, 2.5)
    assert config.reload is False and config.is_set("reload")
    assert config.on_start == ["site:warm_up"]
    assert config.options == {"connection_limit": 50}


def test_pyproject_in_the_working_directory(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n\n[tool.anyserve]\nserver = "waitress"\n')
    config = load()
    assert config.server == "waitress"
    assert config.is_set("server")


def test_pyproject_sits_below_kwargs_and_the_environment(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.anyserve]\nthreads = 3\nworkers = 3\nbacklog = 6\n")
    config = load(kwargs={"threads": 2}, env={"ANYSERVE_WORKERS": "4"})
    assert (config.threads, config.workers, config.backlog) == (2, 4, 6)
    assert config.source("backlog") == f"{tmp_path / 'pyproject.toml'}: [tool.anyserve] backlog"


def test_pyproject_without_our_table_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n[tool.other]\nport = 1\n')
    assert not load().is_set("port")


def test_a_malformed_pyproject_that_we_were_not_asked_to_read_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[project\n")
    assert load().server == "auto"


def test_unknown_key_in_the_pyproject_table(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.anyserve]\nwokers = 2\n")
    with pytest.raises(ConfigError, match=r"unknown option 'wokers' in .*pyproject.toml; did you mean 'workers'\?"):
        load()


def test_a_file_given_with_c_replaces_the_pyproject(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.anyserve]\nthreads = 3\nworkers = 3\n")
    path = tmp_path / "anyserve.toml"
    path.write_text("threads = 5\n")
    config = load(file=path)
    assert (config.threads, config.workers) == (5, 1)


def test_pyproject_given_with_c_reads_its_table(tmp_path: Path) -> None:
    path = tmp_path / "pyproject.toml"
    path.write_text("[tool.anyserve]\nport = 9000\n[tool.other]\nport = 1\n")
    assert read_config_file(path) == {"port": 9000}


def test_dashes_and_underscores_in_files(tmp_path: Path) -> None:
    path = tmp_path / "anyserve.toml"
    path.write_text('root-path = "/x"\ngraceful_timeout = 3\n')
    config = load(file=path)
    assert (config.root_path, config.graceful_timeout) == ("/x", 3.0)


def test_unknown_keys_in_a_file_are_refused_with_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "anyserve.toml"
    path.write_text("thread = 4\n")
    with pytest.raises(ConfigError, match=r"unknown option 'thread' in .*anyserve.toml; did you mean 'threads'\?"):
        load(file=path)


def test_unknown_keys_in_kwargs_are_refused_with_a_hint() -> None:
    with pytest.raises(ConfigError, match=r"unknown option 'prot' in anyserve.run\(\); did you mean 'port'\?"):
        load(kwargs={"prot": 1})
    with pytest.raises(ConfigError, match=r"unknown option 'graceful-timout' .*did you mean 'graceful_timeout'\?"):
        load(kwargs={"graceful-timout": 1})


def test_an_unknown_key_like_nothing_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown option 'zzzzzz' in anyserve.run\(\); known options: app, server"):
        load(kwargs={"zzzzzz": 1})


def test_malformed_toml(tmp_path: Path) -> None:
    path = tmp_path / "anyserve.toml"
    path.write_text("port = = 1\n")
    with pytest.raises(ConfigError, match=r"config file .*anyserve.toml is not valid TOML: .*line 1"):
        load(file=path)


def test_missing_and_unreadable_config_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config file .*nowhere.toml does not exist"):
        load(file=tmp_path / "nowhere.toml")
    with pytest.raises(ConfigError, match="cannot read config file"):
        load(file=tmp_path)  # a directory


# -- options that involve each other -------------------------------------------------


@pytest.mark.parametrize("other", ["host", "port"])
def test_bind_with_host_or_port_is_refused(other: str) -> None:
    value = {"host": "0.0.0.0", "port": "2"}[other]
    with pytest.raises(ConfigError, match=f"--{other} cannot be combined with --bind") as info:
        load(cli={"bind": ["127.0.0.1:1"], other: value})
    assert "put the whole address in --bind" in str(info.value)


def test_the_refusal_says_where_each_came_from() -> None:
    # Only one source giving both forms is refused; across sources the higher one wins.
    with pytest.raises(ConfigError, match=r"bind set in ANYSERVE_BIND, host in ANYSERVE_HOST"):
        load(env={"ANYSERVE_HOST": "0.0.0.0", "ANYSERVE_BIND": "127.0.0.1:1"})


def test_reload_with_workers_is_refused() -> None:
    with pytest.raises(ConfigError, match="--reload cannot be combined with --workers above 1"):
        load(kwargs={"reload": True, "workers": 2})


@pytest.mark.parametrize(
    ("options", "listen"),
    [
        ({}, ["127.0.0.1:8000"]),
        ({"port": 0}, ["127.0.0.1:0"]),
        ({"host": "0.0.0.0"}, ["0.0.0.0:8000"]),
        ({"host": "::1", "port": 0}, ["[::1]:0"]),
        ({"host": "::"}, ["[::]:8000"]),
        ({"host": "[::1]", "port": 1}, ["[::1]:1"]),
        ({"bind": ["unix:/tmp/a", ":80", "fd://3"]}, ["unix:/tmp/a", ":80", "fd://3"]),
    ],
)
def test_listen(options: dict[str, Any], listen: list[str]) -> None:
    assert load(kwargs=options).listen == listen


def test_is_set_and_replace() -> None:
    config = load(kwargs={"port": 1})
    assert config.is_set("port") and not config.is_set("host")
    changed = config.replace(port="2")
    assert changed.port == 2 and config.port == 1
    assert changed.is_set("port")
    with pytest.raises(ConfigError, match=r"unknown option 'nosuch' in Config\.replace"):
        config.replace(nosuch=1)
    with pytest.raises(ConfigError, match="invalid value for --port"):
        config.replace(port="x")


def test_an_address_from_a_higher_source_replaces_the_other_form() -> None:
    env = {"ANYSERVE_PORT": "9000", "ANYSERVE_HOST": "0.0.0.0"}
    assert Config.load(cli={"bind": ["unix:/tmp/a.sock"]}, env=env).listen == ["unix:/tmp/a.sock"]
    assert Config.load(cli={"port": "9001"}, env={"ANYSERVE_BIND": "127.0.0.1:1"}).listen == ["127.0.0.1:9001"]


def test_bad_hook_names_the_hook() -> None:
    from anyserve.errors import AppLoadError
    from anyserve.loader import load_callable

    with pytest.raises(AppLoadError, match="could not import module 'nosuch_hook_mod' of --on-start hook"):
        load_callable("nosuch_hook_mod:f", "--on-start hook")


# -- $PORT and $WEB_CONCURRENCY, for the command's own process -----------------------------


def test_port_and_web_concurrency_are_the_commands_defaults() -> None:
    platform = {"PORT": "5000", "WEB_CONCURRENCY": "3"}
    config = load(env=platform, process_defaults=True)
    assert (config.listen, config.workers) == (["0.0.0.0:5000"], 3)
    assert (config.source("bind"), config.source("workers")) == ("PORT", "WEB_CONCURRENCY")
    # the Python API serves in a program of its own: they are not its defaults
    config = load(env=platform)
    assert (config.listen, config.workers) == (["127.0.0.1:8000"], 1)


@pytest.mark.parametrize(
    ("sources", "listen"),
    [
        ({"env": {"ANYSERVE_PORT": "1"}}, ["127.0.0.1:1"]),
        ({"env": {"ANYSERVE_HOST": "::1"}}, ["[::1]:8000"]),
        ({"cli": {"bind": ["unix:/tmp/a.sock"]}}, ["unix:/tmp/a.sock"]),
        ({"kwargs": {"port": 2}}, ["127.0.0.1:2"]),
        ({"env": {"EMPTY": ""}}, ["0.0.0.0:5000"]),
    ],
)
def test_any_address_replaces_the_port_variables(sources: dict[str, Any], listen: list[str]) -> None:
    sources["env"] = {"PORT": "5000", **sources.get("env", {})}
    assert load(**sources, process_defaults=True).listen == listen


def test_an_empty_port_variable_is_unset() -> None:
    assert load(env={"PORT": " ", "WEB_CONCURRENCY": ""}, process_defaults=True).listen == ["127.0.0.1:8000"]


# -- where each option came from ---------------------------------------------------------


def test_described_sources_name_the_flag_the_variable_and_the_file_key(tmp_path: Path) -> None:
    path = tmp_path / "anyserve.toml"
    path.write_text('root-path = "/x"\nkeyfile_password = "secret"\ncertfile = "site.pem"\n')
    config = Config.load(
        cli={"port": "9000", "env": ["TOKEN=secret"]},
        cli_flags={"port": "-p"},
        file=path,
        env={"ANYSERVE_UMASK": "027", "ANYSERVE_MOUNT": "/a=m:a"},
    )
    assert config.described_sources() == [
        "port = 9000 (from -p on the command line)",
        f"root_path = /x (from {path}: root_path)",
        f"certfile = site.pem (from {path}: certfile)",
        f"keyfile_password = (hidden) (from {path}: keyfile_password)",
        "mount = /a=m:a (from ANYSERVE_MOUNT)",
        "umask = 027 (from ANYSERVE_UMASK)",
        "env = TOKEN=... (from --env on the command line)",
    ]


def test_unknown_variables_are_named_with_the_closest_option() -> None:
    env = {
        "ANYSERVE_PROT": "1",
        "ANYSERVE_port": "1",
        "ANYSERVE_ZZZZZZ": "1",
        "ANYSERVE_PORT": "1",
        "ANYSERVE_SERVING": "cheroot 11",  # set by anyserve for the app
        "OTHER_PROT": "1",
    }
    assert unknown_env_vars(env) == [
        "ANYSERVE_PROT is not an anyserve option, so it is ignored; did you mean ANYSERVE_PORT?",
        "ANYSERVE_ZZZZZZ is not an anyserve option, so it is ignored; see anyserve --help for the options' variables",
        "ANYSERVE_port is not an anyserve option, so it is ignored; did you mean ANYSERVE_PORT?",
    ]
