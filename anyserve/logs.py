"""Logging set-up: one format on stderr for anyserve and every server's own logger."""

from __future__ import annotations

import logging
import sys

LOG_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S %z"


def stderr_handler(level: int = logging.NOTSET) -> logging.Handler:
    """A handler writing anyserve's format to stderr, marked as anyserve's own."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT, DATE_FORMAT))
    handler.setLevel(level)
    handler._anyserve = True  # type: ignore[attr-defined]
    return handler


def has_anyserve_handler(logger: logging.Logger) -> bool:
    return any(getattr(handler, "_anyserve", False) for handler in logger.handlers)


def configure_logging(level: str) -> None:
    """Send anyserve's and every server's loggers to stderr at *level*."""
    root = logging.getLogger()
    if not has_anyserve_handler(root):
        root.addHandler(stderr_handler())
    root.setLevel(level.upper())
