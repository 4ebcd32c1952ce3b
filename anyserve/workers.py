"""What every worker process shares, whoever forks it: anyserve's supervisor,
gunicorn's arbiter or uWSGI's master.

- :class:`BootReports`: how the workers tell anyserve's process how their start
  went. The first worker that cannot load the app says why (one
  ``anyserve: error:`` line, not one per worker) and anyserve ends with that
  error's exit code; the others exit quietly.
- :func:`die_with_parent`: a worker, or a server's master, ends with the process
  that started it.
- :func:`set_process_title`: ``anyserve: worker 2 [tornado app:wsgi]`` in ps and top.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
from typing import Any

from .errors import AnyserveError, report

log = logging.getLogger("anyserve.workers")

#: How the directory of the reports reaches processes that anyserve did not fork itself.
REPORTS_ENV = "_ANYSERVE_BOOT_REPORTS"


class BootReports:
    """A directory the workers write to: ``served`` once one serves, ``ready-PID``
    for each serving worker, ``reported`` with the exit code of the first failure."""

    def __init__(self, path: str | None = None) -> None:
        self.owner = path is None
        self.path = path if path is not None else tempfile.mkdtemp(prefix="anyserve-workers-")

    def allow(self, uid: int, gid: int) -> None:
        """Let workers that take on this user and group (--user, --group) report."""
        os.chown(self.path, uid, gid)

    # -- in a worker ---------------------------------------------------------------

    def served(self) -> None:
        """This worker serves."""
        for name in ("served", f"ready-{os.getpid()}"):
            with contextlib.suppress(OSError):
                os.close(os.open(os.path.join(self.path, name), os.O_CREAT | os.O_WRONLY, 0o600))

    def failed(self, exc: AnyserveError) -> int:
        """This worker cannot start: say why, and return the exit code it should
        end with. Of workers booting together, before any served, only the first
        says why; one that fails once others serve (a restart) always does."""
        if self.ever_served():
            return report(exc)
        try:
            fd = os.open(os.path.join(self.path, "reported"), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            return exc.exit_code  # another worker has said it
        except OSError:
            return report(exc)
        try:
            os.write(fd, str(exc.exit_code).encode())
        finally:
            os.close(fd)
        return report(exc)

    # -- in anyserve's process -----------------------------------------------------

    def reported(self) -> int | None:
        """The exit code of the failure a worker reported, if one did."""
        try:
            with open(os.path.join(self.path, "reported")) as fh:
                text = fh.read().strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else 1

    def ever_served(self) -> bool:
        return os.path.exists(os.path.join(self.path, "served"))

    def serving_pids(self) -> set[int]:
        """Workers that loaded the app, serve and are still alive."""
        pids = set()
        for name in os.listdir(self.path):
            if not name.startswith("ready-"):
                continue
            pid = int(name.removeprefix("ready-"))
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self.path, name))
                continue
            except PermissionError:  # alive, under the user the workers took on
                pass
            pids.add(pid)
        return pids

    def close(self) -> None:
        if self.owner:
            shutil.rmtree(self.path, ignore_errors=True)


def die_with_parent(signum: int = signal.SIGTERM, parent: int | None = None) -> None:
    """Have the kernel send *signum* to this process when its parent dies (Linux).

    *parent*: the pid of the parent it was forked by, if known: one that died
    before this call is caught too."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    parent = os.getppid() if parent is None else parent
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(pr_set_pdeathsig, int(signum), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    except (OSError, AttributeError) as exc:
        log.debug("prctl(PR_SET_PDEATHSIG) unavailable: %s", exc)
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os.kill(os.getpid(), signum)


def process_title(server: str, app: Any, role: str) -> str:
    """``anyserve: worker 2 [tornado app:wsgi]``."""
    shown = app if isinstance(app, str) else getattr(app, "__qualname__", type(app).__qualname__)
    return f"anyserve: {role} [{server} {shown}]"


def set_process_title(title: str) -> None:
    """Show *title* in ps and top, when setproctitle is installed."""
    if not title:
        return
    try:
        from setproctitle import setproctitle
    except ImportError:
        return
    setproctitle(title)
