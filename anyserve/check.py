"""``anyserve check``: every check ``anyserve serve`` makes, short of serving.

The options (read already), the files serve would write (the pid file, the
error and access logs, without creating them) and read (the --log-config
file), the user to serve as, the app and the plan, the listeners (bound and
released at once) and what the server refuses on them. Each mistake raises
the error serve would raise; otherwise :func:`check` returns the summary of
what would be served.
"""

from __future__ import annotations

import errno
import os

from .config import Config
from .logs import cannot_open, read_log_config
from .plan import bind, prepare
from .process import PidFile, resolve_identity
from .summary import summary


def check(config: Config) -> list[str]:
    """Check *config* as serve would, serving nothing; return what would be served."""
    if config.pid:
        PidFile(config.pid).check()
    for target, what in ((config.error_log, "--error-log"), (config.access_log, "--access-log")):
        if target is not None and target != "-":
            check_appendable(target, what)
    if config.log_config is not None:
        read_log_config(config.log_config)
    resolve_identity(config)
    plan = prepare(config, checking=True)
    listeners = bind(plan)
    try:
        return summary(plan, listeners, serving=False)
    finally:
        for listener in listeners:
            listener.close()


def check_appendable(path: str, what: str) -> None:
    """Raise the error opening *path* to append to it would raise, without creating it."""
    if os.path.isdir(path):
        problem = errno.EISDIR
    elif os.path.exists(path):
        problem = 0 if os.access(path, os.W_OK) else errno.EACCES
    else:
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            problem = errno.ENOENT
        else:
            problem = 0 if os.access(directory, os.W_OK | os.X_OK) else errno.EACCES
    if problem:
        raise cannot_open(what, path, os.strerror(problem))
