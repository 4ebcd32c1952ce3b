"""Logging set-up: one format for anyserve's loggers and the server's own, the
error log and the access log in files or on the console, a user's logging
config on top, and log files reopened on SIGUSR1 (logrotate).

The root logger and every other logger are the app's: anyserve puts no handler
on the root logger and sets no level there, so an app's ``logging.basicConfig``,
its own handlers and its INFO lines are as it made them."""

from __future__ import annotations

import _thread
import configparser
import json
import logging
import logging.config
import os
import sys
from collections.abc import Iterable
from typing import Any

from .errors import ConfigError

LOG_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S %z"
#: Apache's combined log format, in gunicorn's atoms.
COMBINED_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'
#: anyserve's own logger: every ``anyserve.*`` logger is under it.
OWN_LOGGER = "anyserve"
#: The logger the access log middleware writes to.
ACCESS_LOGGER = "anyserve.access"


def stderr_handler(level: int = logging.NOTSET) -> logging.Handler:
    """A handler writing anyserve's format to stderr, marked as anyserve's own."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT, DATE_FORMAT))
    handler.setLevel(level)
    handler._anyserve = True  # type: ignore[attr-defined]
    return handler


def has_anyserve_handler(logger: logging.Logger) -> bool:
    return any(getattr(handler, "_anyserve", False) for handler in logger.handlers)


def _handler_for(target: str, stream: Any, formatter: logging.Formatter, what: str) -> logging.Handler:
    """A handler on *stream* for ``-``, else on the file *target* (appended to)."""
    handler: logging.Handler
    if target == "-":
        handler = logging.StreamHandler(stream)
    else:
        try:
            handler = logging.FileHandler(target, encoding="utf-8")
        except OSError as exc:
            raise cannot_open(what, target, exc.strerror) from None
    handler.setFormatter(formatter)
    handler._anyserve = True  # type: ignore[attr-defined]
    return handler


def cannot_open(what: str, path: str, reason: str | None) -> ConfigError:
    """The one error for a log file (or pid file) anyserve cannot open."""
    return ConfigError(f"{what}: cannot open {path}: {reason}")


def _drop_anyserve_handlers(logger: logging.Logger) -> None:
    for handler in list(logger.handlers):
        if getattr(handler, "_anyserve", False):
            logger.removeHandler(handler)
            if isinstance(handler, logging.FileHandler):
                handler.close()


def configure_logging(
    level: str,
    *,
    error_log: str = "-",
    access_log: str | None = None,
    log_config: str | None = None,
) -> None:
    """Send anyserve's messages to the error log (stderr by default) at *level*;
    the access log lines to *access_log* (``-``: stdout); then apply the user's
    *log_config* file, which may change any of it.

    Only anyserve's loggers are touched here (the server's join them once it is
    chosen: :func:`route_server_loggers`). With a log config and no
    ``--error-log``, anyserve's messages go where that config's root logger sends them."""
    own = logging.getLogger(OWN_LOGGER)
    _drop_anyserve_handlers(own)
    if log_config is None or error_log != "-":
        formatter = logging.Formatter(LOG_FORMAT, DATE_FORMAT)
        own.addHandler(
            stderr_handler() if error_log == "-" else _handler_for(error_log, sys.stderr, formatter, "--error-log")
        )
        own.propagate = False  # not a second time through a handler the app put on the root logger
    else:
        own.propagate = True
    own.setLevel(level.upper())
    access = logging.getLogger(ACCESS_LOGGER)
    _drop_anyserve_handlers(access)
    if access_log is not None:
        access.addHandler(_handler_for(access_log, sys.stdout, logging.Formatter("%(message)s"), "--access-log"))
        access.setLevel(logging.INFO)  # asked for: not silenced by --log-level warning
        access.propagate = False  # its lines go to the access log only
    if log_config is not None:
        apply_log_config(log_config)


def server_level(level: str) -> int:
    """The level of the server's own loggers for anyserve's *level*: their warnings
    and errors; their start-up banners and per-worker chatter only with ``debug``."""
    number = logging.getLevelName(level.upper())
    return number if number <= logging.DEBUG else max(number, logging.WARNING)


class _ToAnyserve(logging.Handler):
    """Hands a server's record to anyserve's logger: its handlers, its format, its
    files; the record keeps the server's logger name."""

    def emit(self, record: logging.LogRecord) -> None:
        logging.getLogger(OWN_LOGGER).handle(record)


def route_server_loggers(names: Iterable[str], level: str) -> None:
    """Have the server's own loggers *names* write where anyserve writes, at
    :func:`server_level`, and not through the root logger (the app's). A logger
    a log config gave handlers of its own is left as that config made it."""
    for name in names:
        logger = logging.getLogger(name)
        if any(not getattr(handler, "_anyserve", False) for handler in logger.handlers):
            continue
        _drop_anyserve_handlers(logger)
        handler = _ToAnyserve()
        handler._anyserve = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.setLevel(server_level(level))
        logger.propagate = False


def apply_log_config(path: str) -> None:
    """Configure logging from *path*: a dictConfig in JSON (.json) or TOML (.toml),
    anything else an INI file for ``logging.config.fileConfig``. Loggers that
    exist already (anyserve's, the server's) stay enabled unless it says otherwise."""
    config = read_log_config(path)
    try:
        if isinstance(config, dict):
            logging.config.dictConfig(config)
        else:
            logging.config.fileConfig(config, disable_existing_loggers=False)
    except Exception as exc:  # dictConfig/fileConfig raise ValueError, KeyError, ImportError...
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"--log-config: {path} is not a valid logging configuration: {reason}") from None


def read_log_config(path: str) -> dict[str, Any] | configparser.RawConfigParser:
    """The logging configuration in *path*, read and checked as far as it can be
    without applying it (``anyserve check`` reads it too); ConfigError names the file."""
    if not os.path.isfile(path):
        raise ConfigError(f"--log-config: file {path} does not exist")
    extension = os.path.splitext(path)[1].lower()
    if extension in (".yaml", ".yml"):
        raise ConfigError(
            f"--log-config: {path} is YAML, which anyserve does not read; "
            "write the same dictConfig as JSON (.json) or TOML (.toml)"
        )
    if extension in (".json", ".toml"):
        data = _read_dict_config(path, extension)
        data.setdefault("version", 1)
        data.setdefault("disable_existing_loggers", False)
        if data["version"] != 1:
            raise ConfigError(f"--log-config: {path} has version {data['version']!r}; dictConfig knows version 1")
        return data
    return _read_ini_config(path)


def _read_ini_config(path: str) -> configparser.RawConfigParser:
    parser = configparser.ConfigParser()
    try:
        with open(path, encoding="utf-8") as fh:
            parser.read_file(fh)
    except OSError as exc:
        raise ConfigError(f"--log-config: cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"--log-config: {path} is not a text file") from None
    except configparser.MissingSectionHeaderError:
        raise ConfigError(
            f"--log-config: {path} is not a logging configuration anyserve reads: an INI file for "
            "logging.config.fileConfig (this one has no [section] header), or a dictConfig as JSON (.json) "
            "or TOML (.toml)"
        ) from None
    except configparser.Error as exc:
        reason = str(exc).splitlines()[0]
        raise ConfigError(f"--log-config: {path} is not a valid INI file: {reason}") from None
    for section in ("loggers", "handlers", "formatters"):
        if not parser.has_option(section, "keys"):
            raise ConfigError(
                f"--log-config: {path} has no [{section}] section with keys=; a logging INI file "
                "(logging.config.fileConfig) needs [loggers], [handlers] and [formatters]"
            )
    loggers = [name.strip() for name in parser.get("loggers", "keys").split(",") if name.strip()]
    if "root" not in loggers:
        raise ConfigError(f"--log-config: {path} must list root in [loggers] keys= (and have a [logger_root] section)")
    for kind in ("logger", "handler", "formatter"):
        for name in (n.strip() for n in parser.get(f"{kind}s", "keys").split(",")):
            if name and not parser.has_section(f"{kind}_{name}"):
                raise ConfigError(f"--log-config: {path} lists {kind} {name!r} but has no [{kind}_{name}] section")
    return parser


def _read_dict_config(path: str, extension: str) -> dict[str, Any]:
    try:
        if extension == ".json":
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
        else:
            from .config import tomllib

            with open(path, "rb") as fh:
                data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"--log-config: cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:  # JSONDecodeError and TOMLDecodeError are ValueErrors
        raise ConfigError(f"--log-config: {path} is not valid {extension[1:].upper()}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--log-config: {path} must hold a table (a dictConfig dictionary)")
    return data


def reopen_log_files() -> int:
    """Reopen every file a logging handler writes to (after logrotate moved it);
    return how many were reopened."""
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    seen: set[int] = set()
    count = 0
    for logger in loggers:
        for handler in getattr(logger, "handlers", ()):
            if not isinstance(handler, logging.FileHandler) or id(handler) in seen:
                continue
            seen.add(id(handler))
            with handler.lock:  # type: ignore[union-attr]
                if handler.stream is not None:
                    handler.stream.close()
                    handler.stream = handler._open()
                    count += 1
    return count


def reopen_log_files_soon() -> None:
    """Reopen the log files from a thread of its own: safe in a signal handler,
    which may have interrupted a handler holding its lock mid-write. The low-level
    start does not wait for the thread, which a green-thread server's hub, where
    its signal handlers run, cannot do (under monkey-patching it starts a green one)."""
    _thread.start_new_thread(_reopen_and_say, ())


def _reopen_and_say() -> None:
    count = reopen_log_files()
    logging.getLogger("anyserve").info("Received SIGUSR1: reopened %d log file%s", count, "" if count == 1 else "s")
