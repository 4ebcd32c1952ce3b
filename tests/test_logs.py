"""Logging set-up: error and access logs in files, a user's logging config, reopening."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from anyserve.errors import ConfigError
from anyserve.logs import ACCESS_LOGGER, OWN_LOGGER, configure_logging, reopen_log_files, route_server_loggers

SERVER = "anyserve-test-server"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """configure_logging changes the process's loggers: put them back afterwards."""
    names = ("", OWN_LOGGER, ACCESS_LOGGER, SERVER, f"{SERVER}.mine")
    loggers = [logging.getLogger(name or None) for name in names]
    saved = [(logger, list(logger.handlers), logger.level, logger.propagate) for logger in loggers]
    try:
        yield
    finally:
        for logger, handlers, level, propagate in saved:
            for handler in logger.handlers:
                if handler not in handlers:
                    handler.close()
            logger.handlers[:] = handlers
            logger.setLevel(level)
            logger.propagate = propagate


def flush() -> None:
    for logger in (logging.getLogger(), logging.getLogger(OWN_LOGGER), logging.getLogger(ACCESS_LOGGER)):
        for handler in logger.handlers:
            handler.flush()


def test_the_root_logger_is_left_to_the_app(tmp_path: Path) -> None:
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    configure_logging("warning", error_log=str(tmp_path / "error.log"))
    assert (list(root.handlers), root.level) == before
    assert logging.getLogger(OWN_LOGGER).propagate is False  # not a second time through the app's root handler


def test_the_servers_loggers_write_where_anyserve_does(tmp_path: Path) -> None:
    errors = tmp_path / "error.log"
    configure_logging("info", error_log=str(errors))
    route_server_loggers([SERVER], "info")
    server = logging.getLogger(SERVER)
    server.info("a banner")  # a server's chatter: only with --log-level debug
    server.warning("a problem")
    route_server_loggers([SERVER], "debug")
    server.info("a banner, debugging")
    flush()
    text = errors.read_text()
    assert "a banner\n" not in text
    assert f"[WARNING] {SERVER}: a problem" in text
    assert f"[INFO] {SERVER}: a banner, debugging" in text
    assert len(server.handlers) == 1 and server.propagate is False


def test_a_server_logger_a_log_config_configured_is_left_alone() -> None:
    mine = logging.getLogger(f"{SERVER}.mine")
    handler = logging.NullHandler()
    mine.addHandler(handler)
    route_server_loggers([f"{SERVER}.mine"], "info")
    assert mine.handlers == [handler] and mine.propagate is True


def test_with_a_log_config_anyserve_writes_through_its_root_handlers(tmp_path: Path) -> None:
    out = tmp_path / "all.log"
    config = tmp_path / "logging.json"
    handler = {"class": "logging.FileHandler", "filename": str(out), "formatter": "short"}
    config.write_text(
        json.dumps(
            {
                "formatters": {"short": {"format": "%(name)s %(message)s"}},
                "handlers": {"file": handler},
                "root": {"handlers": ["file"], "level": "INFO"},
            }
        )
    )
    configure_logging("info", log_config=str(config))
    logging.getLogger("anyserve.test").info("hello")
    for handler in logging.getLogger().handlers:
        handler.flush()
    assert out.read_text() == "anyserve.test hello\n"
    for handler in list(logging.getLogger().handlers):
        if isinstance(handler, logging.FileHandler):
            handler.close()


def test_error_and_access_logs_in_files_and_reopened_after_a_move(tmp_path: Path) -> None:
    errors, access = tmp_path / "error.log", tmp_path / "access.log"
    configure_logging("info", error_log=str(errors), access_log=str(access))
    logging.getLogger("anyserve.test").info("hello")
    logging.getLogger(ACCESS_LOGGER).info("GET / 200")
    flush()
    assert "[INFO] anyserve.test: hello" in errors.read_text()
    assert access.read_text() == "GET / 200\n"  # the access line alone, not in the error log
    assert "GET / 200" not in errors.read_text()

    access.rename(tmp_path / "access.log.1")  # what logrotate does
    errors.rename(tmp_path / "error.log.1")
    assert reopen_log_files() >= 2
    logging.getLogger(ACCESS_LOGGER).info("GET /again 200")
    flush()
    assert access.read_text() == "GET /again 200\n"
    assert (tmp_path / "access.log.1").read_text() == "GET / 200\n"
    assert errors.exists()


def test_the_access_log_is_written_whatever_the_log_level(tmp_path: Path) -> None:
    access = tmp_path / "access.log"
    configure_logging("error", access_log=str(access))
    logging.getLogger(ACCESS_LOGGER).info("line")
    flush()
    assert access.read_text() == "line\n"


def test_an_unwritable_log_file_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^--access-log: cannot open .*/nodir/a.log: No such file or directory$"):
        configure_logging("info", access_log=str(tmp_path / "nodir" / "a.log"))
    with pytest.raises(ConfigError, match=r"^--error-log: cannot open "):
        configure_logging("info", error_log=str(tmp_path))


DICT_CONFIG = {
    "formatters": {"short": {"format": "%(levelname)s %(name)s %(message)s"}},
    "handlers": {"file": {"class": "logging.FileHandler", "filename": "FILE", "formatter": "short"}},
    "loggers": {"anyserve": {"handlers": ["file"], "level": "DEBUG"}},
}


@pytest.mark.parametrize("kind", ["json", "toml", "ini"])
def test_log_config_files(tmp_path: Path, kind: str) -> None:
    out = tmp_path / "out.log"
    path = tmp_path / f"logging.{kind}"
    if kind == "json":
        config = json.loads(json.dumps(DICT_CONFIG).replace("FILE", str(out)))
        path.write_text(json.dumps(config))
    elif kind == "toml":
        path.write_text(
            '[formatters.short]\nformat = "%(levelname)s %(name)s %(message)s"\n'
            f'[handlers.file]\nclass = "logging.FileHandler"\nfilename = "{out}"\nformatter = "short"\n'
            '[loggers.anyserve]\nhandlers = ["file"]\nlevel = "DEBUG"\n'
        )
    else:
        path.write_text(
            "[loggers]\nkeys=root,anyserve\n[handlers]\nkeys=file\n[formatters]\nkeys=short\n"
            "[logger_root]\nhandlers=\n"
            "[logger_anyserve]\nhandlers=file\nlevel=DEBUG\nqualname=anyserve\n"
            f"[handler_file]\nclass=FileHandler\nargs=({str(out)!r},)\nformatter=short\n"
            "[formatter_short]\nformat=%(levelname)s %(name)s %(message)s\n"
        )
    existing = logging.getLogger("anyserve.existing")  # created before: still enabled afterwards
    configure_logging("info", log_config=str(path))
    existing.debug("from before")
    logging.getLogger("anyserve").handlers[0].flush()
    assert out.read_text() == "DEBUG anyserve.existing from before\n"
    for handler in logging.getLogger("anyserve").handlers:
        handler.close()
    logging.getLogger("anyserve").handlers.clear()
    logging.getLogger("anyserve").setLevel(logging.NOTSET)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("missing.json", None, r"^--log-config: file .*missing.json does not exist$"),
        ("bad.json", "{", r"^--log-config: .*bad.json is not valid JSON: "),
        ("bad.toml", "a = ", r"^--log-config: .*bad.toml is not valid TOML: "),
        ("list.json", "[1]", r"must hold a table"),
        ("wrong.json", '{"handlers": {"h": {"class": "no.such.Handler"}}}', r"is not a valid logging configuration: "),
        ("wrong.ini", "[loggers]\nkeys=root\n", r"^--log-config: .*wrong.ini has no \[handlers\] section with keys="),
        ("log.yaml", "version: 1\n", r"^--log-config: .*log.yaml is YAML, which anyserve does not read; write"),
        ("log.conf", "version: 1\nroot:\n", r"^--log-config: .*log.conf is not a logging configuration anyserve"),
        ("noroot.ini", "[loggers]\nkeys=app\n[handlers]\nkeys=\n[formatters]\nkeys=\n", r"must list root in"),
        ("nosection.ini", "[loggers]\nkeys=root\n[handlers]\nkeys=h\n[formatters]\nkeys=\n", r"no \[logger_root\]"),
        ("version.json", '{"version": 2}', r"has version 2; dictConfig knows version 1"),
    ],
)
def test_bad_log_config_files(tmp_path: Path, name: str, text: str | None, message: str) -> None:
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        configure_logging("info", log_config=str(path))
    assert "\n" not in str(info.value)
