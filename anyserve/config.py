"""Config: every option declared once, with its flag, converter, default and help.

The command line, ``anyserve.run(**options)``, TOML files (``-c FILE`` or
``[tool.anyserve]`` in pyproject.toml) and ``ANYSERVE_*`` environment variables
are all derived from the declarations below. Converters accept strings, so the
command line, files, the environment and keyword arguments share one path.
Precedence, highest first, as gunicorn's: command line, keyword arguments,
environment, file, then (for the command) ``$PORT`` and ``$WEB_CONCURRENCY``,
then the declared default. Each value keeps the name of where it came from.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import BindError, ConfigError
from .sockets import parse_bind, parse_tls_bind, same_address

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ENV_PREFIX = "ANYSERVE_"
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
#: Where an option given on the command line came from, in messages.
COMMAND_LINE = "the command line"
#: Where an option taken from the ``server.*`` keys of the app's CherryPy config came from.
CHERRYPY_CONFIG = "the app's CherryPy config"
#: ANYSERVE_* variables anyserve sets for the app to read; not options.
SET_BY_ANYSERVE = ("ANYSERVE_SERVING", "ANYSERVE_WORKER")


# --- converters: each takes a string or an already-typed value ------------------


def to_str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return value


def to_optional_str(value: Any) -> str | None:
    """A string, or None for "off" (``--no-access-log``)."""
    return None if value is None else to_str(value)


def to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected an integer")
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip())
    except ValueError:
        raise ValueError("expected an integer") from None


def to_positive_int(value: Any) -> int:
    number = to_int(value)
    if number < 1:
        raise ValueError("expected an integer of 1 or more")
    return number


def to_size(value: Any) -> int:
    """A number of bytes, 0 for no limit."""
    number = to_int(value)
    if number < 0:
        raise ValueError("expected a number of bytes of 0 or more (0: no limit)")
    return number


def to_port(value: Any) -> int:
    number = to_int(value)
    if not 0 <= number <= 65535:
        raise ValueError("expected a port number from 0 to 65535")
    return number


def to_host(value: Any) -> str:
    host = to_str(value).strip()
    # An IPv6 address has two colons or more: one colon, or one after "]", means a port.
    if "]:" in host or (host.count(":") == 1 and not host.startswith("[")):
        raise ConfigError(f"--host takes a host, not HOST:PORT; use --bind {host}")
    return host


def to_seconds(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number of seconds")
    try:
        number = float(str(value).strip().removesuffix("s")) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        raise ValueError("expected a number of seconds") from None
    if not math.isfinite(number):  # nan passes every comparison; inf overflows Event.wait()
        raise ValueError("expected a finite number of seconds")
    if number < 0:
        raise ValueError("expected a number of seconds of 0 or more")
    return number


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError("expected true or false")


def to_octal(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        try:
            number = int(str(value).strip(), 8)
        except ValueError:
            raise ValueError("expected an octal file mode such as 660") from None
    if not 0 <= number <= 0o7777:
        raise ValueError("expected an octal file mode such as 660")
    return number


def to_choice(*choices: str) -> Callable[[Any], str]:
    """A converter that accepts one of *choices*, in any case."""

    def convert(value: Any) -> str:
        text = to_str(value).strip().lower()
        if text not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return text

    return convert


to_log_level = to_choice(*LOG_LEVELS)


def to_root_path(value: Any) -> str:
    text = to_str(value).strip().rstrip("/")
    if text and not text.startswith("/"):
        raise ValueError("expected a path prefix starting with '/', such as /app")
    return text


def to_str_list(value: Any) -> list[str]:
    """A list of strings; a string is split on commas (for environment variables)."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, Iterable) and all(isinstance(item, str) for item in value):
        return list(value)
    raise ValueError("expected a list of strings")


def to_mapping(value: Any) -> dict[str, str]:
    """KEY=VALUE pairs: a table, a list of 'KEY=VALUE' strings, or 'K=V,K=V'."""
    if isinstance(value, Mapping):
        return {str(key): value[key] for key in value}
    result: dict[str, str] = {}
    for item in to_str_list(value):
        key, sep, val = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"expected KEY=VALUE, got {item!r}")
        result[key.strip()] = val.strip()
    return result


def to_environment(value: Any) -> dict[str, str]:
    """Environment variables: KEY=VALUE pairs, as :func:`to_mapping`, with string values."""
    result = {}
    for key, val in to_mapping(value).items():
        if not key or "=" in key or "\0" in key:
            raise ValueError(f"expected KEY=VALUE with a variable name as KEY, got {key!r}")
        result[key] = val if isinstance(val, str) else str(val)
    return result


def to_interval(value: Any) -> float:
    number = to_seconds(value)
    if number <= 0:
        raise ValueError("expected a number of seconds above 0")
    return number


def to_optional_bool(value: Any) -> bool | None:
    return None if value is None else to_bool(value)


def to_hooks(value: Any) -> list[Any]:
    """Hooks: 'module:func' strings (a string may list several, comma-separated) or callables."""
    items = [value] if isinstance(value, str) or callable(value) else value
    if not isinstance(items, Iterable):
        raise ValueError("expected module:func strings or callables")
    result: list[Any] = []
    for item in items:
        if callable(item):
            result.append(item)
        elif isinstance(item, str) and item.strip():
            for part in to_str_list(item):
                if ":" not in part:
                    raise ValueError(f"expected module:func, got {part!r}")
                result.append(part)
        else:
            raise ValueError("expected module:func strings or callables")
    return result


CERT_REQS = ("none", "optional", "required")


to_cert_reqs = to_choice(*CERT_REQS)


COMBINED_LOG_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'


class _AnyAtom(dict):  # type: ignore[type-arg]
    def __missing__(self, key: str) -> str:
        return "-"


def to_access_log_format(value: Any) -> str:
    text = to_str(value)
    try:
        text % _AnyAtom()
    except (TypeError, ValueError, KeyError) as exc:
        raise ValueError(f"expected a format of %(NAME)s atoms such as %(h)s %(r)s %(s)s ({exc})") from None
    return text


def to_allowed_ips(value: Any) -> str:
    """Addresses and networks (CIDR) of trusted proxies, or '*' for any, comma-separated."""
    import ipaddress

    items = to_str_list(value)
    for item in items:
        if item != "*":
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"expected IP addresses, networks such as 10.0.0.0/8, or '*'; got {item!r}") from None
    if not items:
        raise ValueError("expected IP addresses, networks such as 10.0.0.0/8, or '*'")
    return ",".join(items)


def _apps_by_key(value: Any) -> dict[str, Any]:
    if isinstance(value, Mapping):
        return {str(key): value[key] for key in value}
    return to_mapping(value)


def to_mounts(value: Any) -> dict[str, Any]:
    """PREFIX=APP pairs: each prefix starts with '/'; '/' itself is the default app."""
    result: dict[str, Any] = {}
    for prefix, app in _apps_by_key(value).items():
        prefix = prefix.strip()
        if not prefix.startswith("/"):
            raise ValueError(f"the prefix {prefix!r} must start with '/', e.g. /{prefix.lstrip('/')}={app}")
        if not (callable(app) or (isinstance(app, str) and app.strip())):
            raise ValueError(f"expected PREFIX=APP, e.g. /app0=mymod:app0; {prefix!r} names no APP")
        result[prefix.rstrip("/")] = app.strip() if isinstance(app, str) else app
    return result


def to_vhosts(value: Any) -> dict[str, Any]:
    """HOST=APP pairs: a host name without port, or *.domain for every name under it."""
    result: dict[str, Any] = {}
    for host, app in _apps_by_key(value).items():
        name = host.strip().lower()
        bare = name[2:] if name.startswith("*.") else name
        if not bare or any(char in bare for char in "/*: "):
            raise ValueError(f"expected a host name such as example.com or *.example.com, got {host!r}")
        if not (callable(app) or (isinstance(app, str) and app.strip())):
            raise ValueError(f"expected HOST=APP, e.g. example.com=mymod:app; {host!r} names no APP")
        result[name] = app.strip() if isinstance(app, str) else app
    return result


def to_name_or_id(value: Any) -> str:
    """A user or group: a name, or a numeric id (an integer in a TOML file)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return str(value)
    text = to_str(value).strip()
    if not text:
        raise ValueError("expected a name or a numeric id")
    return text


def to_app(value: Any) -> Any:
    if isinstance(value, str) or callable(value) or value is None:
        return value
    return value  # a CherryPy root object; the loader decides


# --- declarations ------------------------------------------------------------------


@dataclass(frozen=True)
class Alias:
    """Another command-line spelling of an option, as gunicorn or uvicorn write it,
    that does not simply rename a flag: ``FLAG VALUE`` gives the option *template*
    with VALUE in it (``--uds PATH`` -> ``unix:PATH``); with no *metavar*,
    ``FLAG`` alone gives it *const* (``--no-access-log``)."""

    flag: str
    help: str
    metavar: str | None = None
    template: str = "{}"
    const: Any = None


@dataclass(frozen=True)
class Setting:
    """How one option is spelled on the command line and converted from any source."""

    name: str
    convert: Callable[[Any], Any]
    help: str
    flags: tuple[str, ...] = ()
    metavar: str | None = None
    kind: str = "value"  # value | flag | append | mapping
    group: str = "server"
    aliases: tuple[Alias, ...] = ()


def option(
    default: Any,
    *flags: str,
    help: str,
    convert: Callable[[Any], Any],
    metavar: str | None = None,
    kind: str = "value",
    group: str = "server",
    aliases: tuple[Alias, ...] = (),
) -> Any:
    meta = {
        "setting": dict(
            flags=flags, help=help, convert=convert, metavar=metavar, kind=kind, group=group, aliases=aliases
        )
    }
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class Config:
    """Every option of anyserve, validated. Build one with :meth:`Config.load`."""

    app: Any = option(
        None,
        help="the WSGI application: module:attr, module:factory(args) or path/file.py[:attr]",
        convert=to_app,
        group="application",
    )
    server: str = option(
        "auto",
        "-s",
        "--server",
        metavar="NAME",
        help="server to run on (see 'anyserve list'), or module:Class; default: auto, the best installed",
        convert=to_str,
    )
    host: str | None = option(
        None,
        "-i",
        "--host",
        metavar="HOST",
        help=f"interface to listen on (default {DEFAULT_HOST}); use 0.0.0.0 or :: for all",
        convert=to_host,
        group="listeners",
    )
    port: int | None = option(
        None,
        "-p",
        "--port",
        metavar="PORT",
        help=f"TCP port (default {DEFAULT_PORT}; 0 picks a free one)",
        convert=to_port,
        group="listeners",
    )
    bind: list[str] = option(
        [],
        "-b",
        "--bind",
        metavar="ADDR",
        kind="append",
        help="listen on ADDR: HOST:PORT, [IPv6]:PORT, unix:PATH or fd://N; repeatable",
        convert=to_str_list,
        group="listeners",
        aliases=(
            Alias("--uds", "listen on the unix socket PATH: the same as -b unix:PATH", "PATH", "unix:{}"),
            Alias("--fd", "listen on the inherited descriptor N: the same as -b fd://N", "N", "fd://{}"),
        ),
    )
    backlog: int = option(
        2048,
        "--backlog",
        metavar="N",
        help="listen queue length (default 2048)",
        convert=to_positive_int,
        group="listeners",
    )
    uds_mode: int | None = option(
        None,
        "--uds-mode",
        metavar="MODE",
        help="file mode of unix sockets, in octal (e.g. 660)",
        convert=to_octal,
        group="listeners",
    )
    workers: int = option(
        1,
        "-w",
        "--workers",
        metavar="N",
        help="worker processes (default 1): the server's own where it has them (gunicorn, uwsgi), "
        "anyserve's pre-fork supervisor for the others",
        convert=to_positive_int,
        group="server",
    )
    preload: bool = option(
        False,
        "--preload",
        help="with --workers: import the app once in the parent before forking (the CherryPy engine "
        "still starts in each worker); by default each worker imports it, so SIGHUP loads new code",
        convert=to_bool,
        kind="flag",
        group="server",
    )
    threads: int | None = option(
        None,
        "-t",
        "--threads",
        metavar="N",
        help="threads per worker (default: the server's own)",
        convert=to_positive_int,
        group="server",
    )
    graceful_timeout: float = option(
        30.0,
        "--graceful-timeout",
        "--timeout-graceful-shutdown",
        metavar="SECONDS",
        help="on TERM/INT, how long in-flight requests may take to finish (default 30)",
        convert=to_seconds,
        group="server",
    )
    timeout_keep_alive: float = option(
        5.0,
        "--timeout-keep-alive",
        "--keep-alive",
        "--keepalive",
        metavar="SECONDS",
        help="close a connection that waits this long for a request (its first or the next one), "
        "or whose request head stops arriving for this long (default 5)",
        convert=to_interval,
        group="server",
    )
    options: dict[str, Any] = option(
        {},
        "-o",
        "--option",
        metavar="KEY=VALUE",
        kind="mapping",
        help="a setting of the chosen server (see 'anyserve list'); repeatable",
        convert=to_mapping,
        group="server",
    )
    max_header_size: int = option(
        0,
        "--max-header-size",
        metavar="BYTES",
        help="largest request head (request line and header fields) in bytes; larger gets 413 "
        "(default 0: the server's own limit)",
        convert=to_size,
        group="server",
    )
    max_body_size: int = option(
        0,
        "--max-body-size",
        metavar="BYTES",
        help="largest request body in bytes; a larger Content-Length gets 413 before the app runs, a larger "
        "chunked body makes the app's read fail (default 0: no limit)",
        convert=to_size,
        group="server",
    )
    factory: bool = option(
        False,
        "--factory",
        kind="flag",
        help="APP names a factory: call it with no arguments to get the app",
        convert=to_bool,
        group="application",
    )
    app_dir: str = option(
        ".",
        "--app-dir",
        metavar="DIR",
        help="directory put first on sys.path to import APP (default .)",
        convert=to_str,
        group="application",
    )
    root_path: str = option(
        "",
        "--root-path",
        metavar="PREFIX",
        help="serve under this URL prefix: it becomes SCRIPT_NAME and is taken off PATH_INFO",
        convert=to_root_path,
        group="application",
    )
    reload: bool = option(
        False,
        "--reload",
        kind="flag",
        help="restart when a source file changes (development only)",
        convert=to_bool,
        group="development",
    )
    reload_dirs: list[str] = option(
        [],
        "--reload-dir",
        metavar="DIR",
        kind="append",
        help="also watch the files in DIR for --reload; repeatable",
        convert=to_str_list,
        group="development",
    )
    reload_includes: list[str] = option(
        [],
        "--reload-include",
        metavar="GLOB",
        kind="append",
        help="with --reload, also restart when a file matching GLOB changes (e.g. '*.html'); repeatable; "
        "'*.py' always, unless excluded",
        convert=to_str_list,
        group="development",
    )
    reload_excludes: list[str] = option(
        [],
        "--reload-exclude",
        metavar="GLOB",
        kind="append",
        help="with --reload, ignore files (and directories) matching GLOB; repeatable; "
        "'.*', '.py[cod]', '.sw.*' and '~*' always, unless included",
        convert=to_str_list,
        group="development",
    )
    main_interval: float = option(
        0.1,
        "--main-interval",
        metavar="SECONDS",
        help="how often the lifecycle ticks (CherryPy's engine 'main' channel) (default 0.1)",
        convert=to_interval,
        group="lifecycle",
    )
    on_start: list[Any] = option(
        [],
        "--on-start",
        metavar="MODULE:FUNC",
        kind="append",
        help="call FUNC() in each serving process before its first request; repeatable",
        convert=to_hooks,
        group="lifecycle",
    )
    on_stop: list[Any] = option(
        [],
        "--on-stop",
        metavar="MODULE:FUNC",
        kind="append",
        help="call FUNC() in each serving process on graceful shutdown; repeatable",
        convert=to_hooks,
        group="lifecycle",
    )
    cherrypy: bool | None = option(
        None,
        "--cherrypy",
        kind="flag",
        help="drive the CherryPy engine (default: when the app is a CherryPy app); --no-cherrypy: never",
        convert=to_optional_bool,
        group="cherrypy",
    )
    cherrypy_config: str | None = option(
        None,
        "--cherrypy-config",
        metavar="FILE",
        help="a CherryPy config file: [global] to cherrypy.config, path sections to the app",
        convert=to_str,
        group="cherrypy",
    )
    # -- TLS ---------------------------------------------------------------------
    certfile: str | None = option(
        None,
        "--certfile",
        "--ssl-certfile",
        metavar="FILE",
        help="serve HTTPS with this PEM certificate (followed by its chain, if any)",
        convert=to_str,
        group="tls",
    )
    keyfile: str | None = option(
        None,
        "--keyfile",
        "--ssl-keyfile",
        metavar="FILE",
        help="the PEM private key of --certfile (default: read from the certificate file)",
        convert=to_str,
        group="tls",
    )
    keyfile_password: str | None = option(
        None,
        "--keyfile-password",
        "--ssl-keyfile-password",
        metavar="PASSWORD",
        help="the password of an encrypted --keyfile; prefer the environment variable, which ps does not show",
        convert=to_str,
        group="tls",
    )
    ca_certs: str | None = option(
        None,
        "--ca-certs",
        "--ssl-ca-certs",
        metavar="FILE",
        help="PEM certificates of the CAs that client certificates must come from (with --cert-reqs)",
        convert=to_str,
        group="tls",
    )
    cert_reqs: str = option(
        "none",
        "--cert-reqs",
        metavar="MODE",
        help="client certificates: none (default), optional (verified when sent) or required",
        convert=to_cert_reqs,
        group="tls",
    )
    ssl_adhoc: bool = option(
        False,
        "--ssl-adhoc",
        kind="flag",
        help="serve HTTPS with a self-signed certificate for localhost made at start (development only)",
        convert=to_bool,
        group="tls",
    )
    tls_bind: list[str] = option(
        [],
        "--tls-bind",
        metavar="ADDR",
        kind="append",
        help="serve TLS on this listener only (added to --bind if not there; fd://NAME names a systemd socket); "
        "repeatable; default: TLS on every listener",
        convert=to_str_list,
        group="tls",
    )
    log_level: str = option(
        "info",
        "--log-level",
        metavar="LEVEL",
        help=f"one of {', '.join(LOG_LEVELS)} (default info)",
        convert=to_log_level,
        group="logging",
    )

    access_log: str | None = option(
        None,
        "--access-log",
        "--access-logfile",
        metavar="PATH|-",
        help="write one line per request to PATH (- for stdout), in Apache's combined format by default",
        convert=to_optional_str,
        group="logging",
        aliases=(Alias("--no-access-log", "no access log (the default), whatever a file or variable says"),),
    )
    access_log_format: str = option(
        COMBINED_LOG_FORMAT,
        "--access-log-format",
        "--access-logformat",
        metavar="FORMAT",
        help="the access log line, in gunicorn's atoms: %%(h)s client, %%(r)s request line, %%(s)s status, "
        "%%(b)s bytes, %%(D)s microseconds, %%(L)s seconds, %%({header}i)s... (default: combined)",
        convert=to_access_log_format,
        group="logging",
    )
    error_log: str = option(
        "-",
        "--error-log",
        "--log-file",
        "--error-logfile",
        metavar="PATH|-",
        help="where anyserve's and the server's messages go: a file, or - for stderr (default); "
        "under --daemon also the standard streams",
        convert=to_str,
        group="logging",
    )
    log_config: str | None = option(
        None,
        "--log-config",
        metavar="FILE",
        help="configure logging from FILE after anyserve: a dictConfig in .json or .toml, else an INI fileConfig",
        convert=to_str,
        group="logging",
    )
    proxy_headers: bool = option(
        False,
        "--proxy-headers",
        kind="flag",
        help="from trusted proxies, apply Forwarded / X-Forwarded-For, -Proto, -Host, -Port, -Prefix to the environ",
        convert=to_bool,
        group="proxy",
    )
    forwarded_allow_ips: str = option(
        "127.0.0.1,::1",
        "--forwarded-allow-ips",
        metavar="ADDRS",
        help="comma-separated addresses or networks of the proxies trusted by --proxy-headers, or * for any "
        "(default 127.0.0.1,::1; unix socket peers are trusted)",
        convert=to_allowed_ips,
        group="proxy",
    )
    mount: dict[str, Any] = option(
        {},
        "--mount",
        metavar="PREFIX=APP",
        kind="mapping",
        help="serve APP under the path PREFIX (e.g. /app0=mymod:app0); repeatable; "
        "the longest prefix wins, the positional APP serves the rest",
        convert=to_mounts,
        group="application",
    )
    vhost: dict[str, Any] = option(
        {},
        "--vhost",
        metavar="HOST=APP",
        kind="mapping",
        help="serve APP to requests for HOST (e.g. example.com=mymod:app, or *.example.com); repeatable; "
        "the positional APP serves other hosts",
        convert=to_vhosts,
        group="application",
    )
    profile: str | None = option(
        None,
        "-P",
        "--profile",
        metavar="DIR",
        help="write one cProfile file per request into DIR (development only: requests then run one at a time)",
        convert=to_str,
        group="development",
    )
    pid: str | None = option(
        None,
        "--pid",
        metavar="FILE",
        help="write the serving process's id to FILE once bound, remove it on exit; a live one is refused",
        convert=to_str,
        group="process",
    )
    daemon: bool = option(
        False,
        "-D",
        "--daemon",
        kind="flag",
        help="detach (double fork); the command exits once the app is loaded and bound, non-zero if it failed",
        convert=to_bool,
        group="process",
    )
    user: str | None = option(
        None,
        "-u",
        "--user",
        metavar="USER",
        help="once bound, run as USER (a name or a uid): bind port 80 as root, then serve as nobody",
        convert=to_name_or_id,
        group="process",
    )
    group: str | None = option(
        None,
        "-g",
        "--group",
        metavar="GROUP",
        help="once bound, run as GROUP (a name or a gid); default: the primary group of --user",
        convert=to_name_or_id,
        group="process",
    )
    umask: int | None = option(
        None,
        "-m",
        "--umask",
        metavar="MODE",
        help="once bound, set the file mode creation mask, in octal (e.g. 027)",
        convert=to_octal,
        group="process",
    )
    require_non_root: bool = option(
        False,
        "--require-non-root",
        kind="flag",
        help="refuse to serve as root unless --user drops the privileges after binding",
        convert=to_bool,
        group="process",
    )
    chdir: str | None = option(
        None,
        "--chdir",
        metavar="DIR",
        help="change to DIR first: the config file, --env-file, APP and relative paths are then found there",
        convert=to_str,
        group="process",
    )
    env_file: str | None = option(
        None,
        "--env-file",
        metavar="FILE",
        help="set environment variables from FILE (KEY=VALUE lines, # comments, quotes) before the app loads; "
        "a variable already set keeps its value",
        convert=to_str,
        group="process",
    )
    env: dict[str, str] = option(
        {},
        "-e",
        "--env",
        metavar="KEY=VALUE",
        kind="mapping",
        help="set the environment variable KEY before the app loads (over --env-file and the environment); repeatable",
        convert=to_environment,
        group="process",
    )

    # -- building ------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        cli: Mapping[str, Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        file: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        *,
        process_defaults: bool = False,
        cli_flags: Mapping[str, str] | None = None,
    ) -> Config:
        """Merge the sources, highest precedence first: cli, kwargs, the environment
        (``ANYSERVE_*``), the file (*file*, else ``[tool.anyserve]`` in
        ./pyproject.toml); with *process_defaults* (the command's own process),
        ``$PORT`` and ``$WEB_CONCURRENCY`` come next, as gunicorn's defaults.
        *cli_flags*: the flag each *cli* value was given with, as sources show it."""
        env = os.environ if env is None else env
        # name -> (value, where it came from), lowest precedence first
        layers: list[dict[str, tuple[Any, str]]] = []
        if process_defaults:
            layers.append(_platform_defaults(env))
        if file is not None:
            layers.append(_labelled(os.fspath(file), *_read_table(file)))
        else:
            found = _find_pyproject()
            if found is not None:
                layers.append(_labelled(found[0], "[tool.anyserve] ", found[1]))
        layers.append({name: (value, env_var(name)) for name, value in _from_env(env).items()})
        kwargs_checked = _checked_keys(dict(kwargs or {}), "anyserve.run()")
        layers.append({name: (value, "anyserve.run()") for name, value in kwargs_checked.items()})
        layers.append({name: (value, COMMAND_LINE) for name, value in (cli or {}).items()})

        values: dict[str, Any] = {}
        origin: dict[str, str] = {}
        settings = settings_by_name()
        for layer in layers:
            # An address given here in one form replaces one a lower source gave
            # in the other (ANYSERVE_PORT does not clash with -b); within one
            # source, validate() refuses the mix.
            dropped = ("host", "port") if "bind" in layer else ("bind",) if {"host", "port"} & set(layer) else ()
            for name in dropped:
                values.pop(name, None)
                origin.pop(name, None)
            for name, (value, source) in layer.items():
                setting = settings[name]
                converted = _convert(setting, value, source)
                if setting.kind == "mapping" and name in values:
                    converted = {**values[name], **converted}
                values[name] = converted
                origin[name] = source
        config = cls(**values)
        config._origin = origin
        config._flags = {name: flag for name, flag in (cli_flags or {}).items() if origin.get(name) == COMMAND_LINE}
        config.validate()
        return config

    def validate(self) -> None:
        """Checks that involve more than one option."""
        origin = getattr(self, "_origin", {})
        if self.bind and (self.host is not None or self.port is not None):
            which = "--host" if self.host is not None else "--port"
            raise ConfigError(
                f"{which} cannot be combined with --bind (bind set in {origin.get('bind', 'the config')}, "
                f"{which.lstrip('-')} in {origin.get(which.lstrip('-'), 'the config')}); "
                "put the whole address in --bind, e.g. -b 0.0.0.0:8000"
            )
        for spec in self.listen:
            try:
                parse_bind(spec)
            except BindError as exc:
                raise ConfigError(str(exc)) from None
        if self.daemon and self.reload:
            raise ConfigError("--daemon cannot be combined with --reload; drop one of them")
        if self.reload and self.workers > 1:
            where = origin.get("workers", COMMAND_LINE)
            given = "" if where == COMMAND_LINE else f" ({self.workers} from {where})"
            raise ConfigError(f"--reload cannot be combined with --workers above 1{given}; drop one of them")
        for directory in self.reload_dirs if self.reload else ():
            if not os.path.isdir(directory):
                raise ConfigError(f"--reload-dir {directory}: no such directory")
        self._validate_tls()

    def _validate_tls(self) -> None:
        if self.ssl_adhoc and self.certfile:
            raise ConfigError(
                "--ssl-adhoc cannot be combined with --certfile: --ssl-adhoc makes a certificate of its own; "
                "drop one of them"
            )
        if self.keyfile and not self.certfile:
            raise ConfigError("--keyfile needs --certfile: give the certificate that goes with the key")
        if self.keyfile_password is not None and not self.certfile:
            raise ConfigError("--keyfile-password needs --certfile (and --keyfile, if the key is in a file of its own)")
        if not self.tls:
            for name, given in (("ca_certs", self.ca_certs), ("cert_reqs", self.cert_reqs != "none")):
                if given:
                    raise ConfigError(f"--{name.replace('_', '-')} needs TLS: add --certfile (or --ssl-adhoc)")
            if self.tls_bind:
                raise ConfigError("--tls-bind needs a certificate: add --certfile (or --ssl-adhoc)")
        if self.cert_reqs != "none" and not self.ca_certs:
            raise ConfigError(
                f"--cert-reqs {self.cert_reqs} needs --ca-certs: the CA certificates that client certificates "
                "are verified against"
            )
        for spec in self.tls_bind:
            try:
                parse_tls_bind(spec)
            except BindError as exc:
                raise ConfigError(str(exc).replace("bad listener", "bad --tls-bind", 1)) from None

    @property
    def tls(self) -> bool:
        """Whether some listener serves HTTPS."""
        return bool(self.certfile or self.ssl_adhoc)

    @property
    def tls_mixed(self) -> bool:
        """Whether HTTP and HTTPS listeners are asked for at once (as far as the addresses tell)."""
        return bool(self.tls_bind) and any(not any(_same(spec, tls) for tls in self.tls_bind) for spec in self.listen)

    def is_set(self, name: str) -> bool:
        """Whether some source gave this option, rather than its default."""
        return name in getattr(self, "_origin", {})

    def source(self, name: str) -> str | None:
        """Where the option's value came from: ``the command line``, a variable's
        name, ``FILE: KEY``...; None for a default."""
        return getattr(self, "_origin", {}).get(name)

    def sources_matching(self, prefix: str) -> dict[str, str]:
        """The options whose source starts with *prefix*, with their sources."""
        return {name: source for name, source in getattr(self, "_origin", {}).items() if source.startswith(prefix)}

    def given_as(self, name: str) -> str:
        """How a message names the option: its flag (``--threads``), or the CherryPy
        key it came from (``server.thread_pool of the app's CherryPy config``)."""
        source = self.source(name) or ""
        if source.startswith(CHERRYPY_CONFIG + " ("):
            return f"{source[len(CHERRYPY_CONFIG) + 2 : -1]} of {CHERRYPY_CONFIG}"
        return flag_of(settings_by_name()[name])

    def described_sources(self) -> list[str]:
        """One line per option that is not at its default: its value and where it came from."""
        lines = []
        for setting in settings():
            source = self.source(setting.name)
            if source is None:
                continue
            if source == COMMAND_LINE:
                flag = getattr(self, "_flags", {}).get(setting.name) or flag_of(setting)
                source = f"{'APP' if setting.name == 'app' else flag} on the command line"
            lines.append(f"{setting.name} = {_shown(setting.name, getattr(self, setting.name))} (from {source})")
        return lines

    @property
    def listen(self) -> list[str]:
        """The addresses to listen on, as --bind strings: --bind (or --host/--port),
        then the --tls-bind addresses not among them."""
        # fd://NAME only picks one of the sockets systemd passes; it binds nothing.
        extra = [spec for spec in self.tls_bind if not _is_fd_name(spec)]
        if self.bind:
            base = list(self.bind)
        elif self.host is None and self.port is None and extra:
            base = []
        else:
            host = self.host if self.host is not None else DEFAULT_HOST
            port = self.port if self.port is not None else DEFAULT_PORT
            if ":" in host and not host.startswith("["):
                host = f"[{host}]"
            base = [f"{host}:{port}"]
        for spec in extra:
            if not any(_same(spec, other) for other in base):
                base.append(spec)
        return base

    def replace(self, *, sources: Mapping[str, str] | None = None, **changes: Any) -> Config:
        """A copy with some options changed and validated again; *sources* names
        where a changed option came from (default ``Config.replace()``)."""
        settings = settings_by_name()
        origin = {name: (sources or {}).get(name, "Config.replace()") for name in changes}
        for name, value in changes.items():
            if name not in settings:
                raise ConfigError(_unknown_key_message(name, "Config.replace()"))
            changes[name] = _convert(settings[name], value, origin[name])
        new = dataclasses.replace(self, **changes)
        new._origin = {**getattr(self, "_origin", {}), **origin}
        new._flags = {name: flag for name, flag in getattr(self, "_flags", {}).items() if name not in changes}
        new.validate()
        return new


def _is_fd_name(spec: str) -> bool:
    return spec.startswith("fd://") and not spec[5:].isdigit()


def _same(a: str, b: str) -> bool:
    try:
        return same_address(a, b)
    except BindError:
        return False  # a malformed address: validate() names it


def settings() -> list[Setting]:
    """Every option, in declaration order."""
    result = []
    for f in dataclasses.fields(Config):
        meta = f.metadata.get("setting")
        if meta is not None:
            result.append(Setting(name=f.name, **meta))
    return result


def settings_by_name() -> dict[str, Setting]:
    return {s.name: s for s in settings()}


def env_var(name: str) -> str:
    return ENV_PREFIX + name.upper()


def _shown(name: str, value: Any) -> str:
    """*value* as a source line shows it: no secret (the key's password, --env values)."""
    if name == "keyfile_password" and value is not None:
        return "(hidden)"
    if name == "env":
        return ", ".join(f"{key}=..." for key in value)
    if name in ("uds_mode", "umask") and value is not None:
        return f"{value:03o}"
    if isinstance(value, dict):
        return ", ".join(f"{key}={val}" for key, val in value.items())
    if isinstance(value, list):
        return ", ".join(str(item) for item in value)
    return str(value)


def flag_of(setting: Setting) -> str:
    long = [flag for flag in setting.flags if flag.startswith("--")]
    return long[0] if long else setting.name


def _convert(setting: Setting, value: Any, source: str) -> Any:
    try:
        return setting.convert(value)
    except ValueError as exc:
        raise ConfigError(f"invalid value for {flag_of(setting)} ({source}): {value!r}: {exc}") from None


def _unknown_key_message(key: str, source: str) -> str:
    names = [s.name for s in settings()]
    close = difflib.get_close_matches(key.replace("-", "_"), names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known options: {', '.join(names)}"
    return f"unknown option {key!r} in {source}{hint}"


def _checked_keys(raw: dict[str, Any], source: str) -> dict[str, Any]:
    known = settings_by_name()
    result = {}
    for key, value in raw.items():
        name = str(key).replace("-", "_")
        if name not in known:
            raise ConfigError(_unknown_key_message(str(key), source))
        result[name] = value
    return result


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    return {s.name: env[env_var(s.name)] for s in settings() if env_var(s.name) in env}


def unknown_env_vars(env: Mapping[str, str] | None = None) -> list[str]:
    """A warning for each ``ANYSERVE_*`` variable that names no option (a misspelling,
    most likely), naming the closest option's variable."""
    env = os.environ if env is None else env
    names = [s.name for s in settings()]
    known = {env_var(option) for option in names}
    warnings = []
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX) or name in SET_BY_ANYSERVE:
            continue
        if name in known:
            continue
        close = difflib.get_close_matches(name[len(ENV_PREFIX) :].lower(), names, n=1)
        hint = f"did you mean {env_var(close[0])}?" if close else "see anyserve --help for the options' variables"
        warnings.append(f"{name} is not an anyserve option, so it is ignored; {hint}")
    return warnings


def _platform_defaults(env: Mapping[str, str]) -> dict[str, tuple[Any, str]]:
    """gunicorn's defaults from a platform's variables: ``$PORT`` binds 0.0.0.0:PORT
    (unless some source gives an address), ``$WEB_CONCURRENCY`` is the worker count."""
    layer: dict[str, tuple[Any, str]] = {}
    port = env.get("PORT", "").strip()
    if port:
        number = _convert(settings_by_name()["port"], port, "PORT")
        layer["bind"] = ([f"0.0.0.0:{number}"], "PORT")
    workers = env.get("WEB_CONCURRENCY", "").strip()
    if workers:
        layer["workers"] = (workers, "WEB_CONCURRENCY")
    return layer


def _labelled(path: str, table: str, values: Mapping[str, Any]) -> dict[str, tuple[Any, str]]:
    return {name: (value, f"{path}: {table}{name}") for name, value in values.items()}


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a TOML file: a plain anyserve.toml, or a pyproject.toml with [tool.anyserve]."""
    return _read_table(path)[1]


def _read_table(path: str | os.PathLike[str]) -> tuple[str, dict[str, Any]]:
    """The options of a TOML file, and the table they are in ("[tool.anyserve] " or "")."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {name} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {name}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {name} is not valid TOML: {exc}") from None
    table = ""
    if os.path.basename(name) == "pyproject.toml" or "tool" in data:
        data = data.get("tool", {}).get("anyserve", {})
        table = "[tool.anyserve] "
    return table, _checked_keys(data, name)


def _find_pyproject() -> tuple[str, dict[str, Any]] | None:
    path = os.path.join(os.getcwd(), "pyproject.toml")
    if not os.path.isfile(path):
        return None
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError):
        return None  # not ours to judge: only [tool.anyserve] matters and it cannot be read
    table = data.get("tool", {}).get("anyserve")
    if table is None:
        return None
    return path, _checked_keys(table, path)
