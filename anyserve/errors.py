"""Errors a user can cause. The CLI prints ``str(exc)`` alone, with no traceback."""

from __future__ import annotations

import sys
from typing import TextIO

# Exit codes of the ``anyserve`` command.
EXIT_OK = 0
EXIT_FAILURE = 1  # the server failed while running
EXIT_USAGE = 2  # bad option, config file or server choice
EXIT_APP = 3  # the application could not be loaded
EXIT_BIND = 4  # a listener could not be bound

#: The name anyserve is installed under (``pip install anyserve-wsgi``): the name
#: ``anyserve`` on the package index belongs to another project. The import name
#: and the command stay ``anyserve``.
DISTRIBUTION = "anyserve-wsgi"


def install_hint(*extras: str) -> str:
    """The pip command that installs anyserve with *extras*, e.g. ``pip install 'anyserve-wsgi[tornado]'``."""
    return f"pip install '{DISTRIBUTION}[{','.join(extras)}]'" if extras else f"pip install {DISTRIBUTION}"


class AnyserveError(Exception):
    """Base class: a problem with the user's input, reported as one line."""

    exit_code = EXIT_FAILURE


class ConfigError(AnyserveError):
    """An option, its value or a config file is wrong."""

    exit_code = EXIT_USAGE


class ServerError(AnyserveError):
    """The chosen server is unknown, not installed, or cannot honour an option."""

    exit_code = EXIT_USAGE


class Unsupported(ServerError):
    """The chosen server lacks a capability the options need (a unix socket, TLS ...).

    The registry adds which servers have it to the message."""

    def __init__(self, message: str, capability: str) -> None:
        super().__init__(message)
        self.capability = capability


class AppLoadError(AnyserveError):
    """The APP string is malformed or does not name a WSGI application."""

    exit_code = EXIT_APP

    def __init__(self, message: str, details: str | None = None) -> None:
        super().__init__(message)
        #: The traceback of an exception the user's module raised, shown under the message.
        self.details = details


class BindError(AnyserveError):
    """A listening socket could not be created."""

    exit_code = EXIT_BIND


class Reported(AnyserveError):
    """A failure already reported on stderr (by a worker process): exit with its code, print nothing more."""

    def __init__(self, exit_code: int) -> None:
        super().__init__("")
        self.exit_code = exit_code


def report(exc: AnyserveError, stream: TextIO | None = None) -> int:
    """Write *exc* as the one ``anyserve: error:`` line (after the user's traceback
    when their module raised); return the exit code it calls for."""
    stream = stream if stream is not None else sys.stderr
    details = getattr(exc, "details", None)
    if details:
        stream.write(details)
    stream.write(f"anyserve: error: {exc}\n")
    stream.flush()
    return exc.exit_code
