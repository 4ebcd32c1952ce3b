"""Starts uWSGI's master for anyserve: ``python -m anyserve.adapters.uwsgi.launcher ARGS``.

The anyserve process passes its listeners' descriptors (``_ANYSERVE_UWSGI_FDS``).
Here they move to 3, 4, ... with ``LISTEN_FDS`` and ``LISTEN_PID`` set, as
systemd hands sockets over, so uWSGI binds nothing itself; then this process
becomes uWSGI: pyuwsgi runs in it, or it execs a ``uwsgi`` binary, keeping the
pid ``LISTEN_PID`` names. ARGS are uWSGI's own.
"""

from __future__ import annotations

import fcntl
import os
import signal
import sys

from anyserve.adapters.uwsgi import BINARY_ENV, FDS_ENV, STDERR_ENV, TITLE_ENV
from anyserve.workers import die_with_parent, set_process_title

SD_LISTEN_FDS_START = 3


def place_listeners(fds: list[int]) -> None:
    """Put *fds* on 3, 4, ... and say so in LISTEN_FDS/LISTEN_PID."""
    # First above the targets, so that moving one does not close another.
    moved = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, SD_LISTEN_FDS_START + len(fds)) for fd in fds]
    for fd in fds:
        os.close(fd)
    for target, fd in enumerate(moved, SD_LISTEN_FDS_START):
        os.dup2(fd, target)  # inheritable, as uWSGI wants it
        os.close(fd)
    os.environ["LISTEN_FDS"] = str(len(fds))
    os.environ["LISTEN_PID"] = str(os.getpid())


def keep_python_stderr(above: int) -> None:
    """Move the descriptor of anyserve's stderr (for Python's stderr in uWSGI's
    processes, master.py) to *above* or higher, out of the listeners' way."""
    fd = int(os.environ[STDERR_ENV])
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD, above)  # inheritable: a uwsgi binary is exec'd
    os.close(fd)
    os.environ[STDERR_ENV] = str(moved)


def main(argv: list[str]) -> None:
    fds = [int(fd) for fd in os.environ.pop(FDS_ENV).split(",")]
    keep_python_stderr(SD_LISTEN_FDS_START + len(fds))
    place_listeners(fds)
    # anyserve killed: its master's stop, which ends the workers gracefully.
    die_with_parent(signal.SIGQUIT)
    set_process_title(os.environ.pop(TITLE_ENV, ""))
    binary = os.environ.pop(BINARY_ENV, "")
    if binary:
        os.execv(binary, [binary, *argv])
    import pyuwsgi

    pyuwsgi.run(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
