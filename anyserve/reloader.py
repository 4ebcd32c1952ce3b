"""--reload: restart the serving process when a watched file changes.

The parent binds the listeners once and runs the server in a child process that
inherits them, so clients never see the port closed. The parent watches the app
directory and the --reload-dir trees through the system's change notifications
(watchfiles) for files that match --reload-include and not --reload-exclude;
new and deleted files count too. On a change it tells the child through a pipe,
the child stops gracefully and the parent starts a new one. A child that fails
(a syntax error, say) is started again on the next change. A child whose
parent is gone (the pipe closed) stops too.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePath

import watchfiles

from .child import python_command
from .config import Config
from .errors import EXIT_OK
from .logs import reopen_log_files_soon
from .sockets import INHERITED_FDS_ENV, bind_listeners, inherited_fds_value

log = logging.getLogger("anyserve.reload")

#: In a child: the descriptor on which the parent asks it to stop for a reload.
RELOAD_FD_ENV = "_ANYSERVE_RELOAD_FD"
#: uvicorn's defaults, so that its users' patterns mean the same here.
DEFAULT_INCLUDES = ("*.py",)
DEFAULT_EXCLUDES = (".*", ".py[cod]", ".sw.*", "~*")
#: How many changed paths one "Detected a change" line names.
NAMED_PATHS = 3


def is_child() -> bool:
    return RELOAD_FD_ENV in os.environ


def run_with_reloader(config: Config, argv: list[str]) -> int:
    """In the parent: bind, then run and restart children. In a child: serve until told to stop."""
    if is_child():
        return _serve_child(config)
    return Reloader(config, argv).run()


class ChangeFilter:
    """Which changed files restart the server: those that match an include pattern
    and no exclude pattern.

    Patterns are globs matched from the right, as :meth:`pathlib.PurePath.match`
    does (``*.html``, ``templates/*.html``). An exclude pattern also matches the
    directories between a watched directory and the file, so ``.*`` leaves out
    ``.git`` and ``.venv`` and ``node_modules`` all of that tree. A default
    include is dropped when it is excluded by name, a default exclude when it is
    included by name; a file included by its plain name (``.env``) is never
    excluded."""

    def __init__(self, roots: Iterable[Path], includes: Iterable[str] = (), excludes: Iterable[str] = ()) -> None:
        includes, excludes = list(includes), list(excludes)
        # Deepest first: a file is judged from the nearest watched directory above it.
        self.roots = sorted(roots, key=lambda root: len(root.parts), reverse=True)
        self.includes = [*(pattern for pattern in DEFAULT_INCLUDES if pattern not in excludes), *includes]
        self.excludes = [*(pattern for pattern in DEFAULT_EXCLUDES if pattern not in includes), *excludes]

    def __call__(self, change: object, path: str) -> bool:
        """watchfiles' filter: whether this change counts."""
        return self.matches(path)

    def matches(self, path: str | os.PathLike[str]) -> bool:
        file = PurePath(path)
        included = [pattern for pattern in self.includes if file.match(pattern)]
        if not included:
            return False
        if any(not _is_glob(pattern) for pattern in included):
            return True
        root = next((root for root in self.roots if root in file.parents), None)
        below_root = [folder for folder in file.parents if root is not None and root in folder.parents]
        return not any(candidate.match(pattern) for pattern in self.excludes for candidate in (file, *below_root))


def _is_glob(pattern: str) -> bool:
    return any(char in pattern for char in "*?[")


def watched_dirs(config: Config) -> list[Path]:
    """The app directory and the --reload-dir trees, absolute, those that exist."""
    found: list[Path] = []
    for folder in (config.app_dir, *config.reload_dirs):
        path = Path(folder).resolve()
        if path.is_dir() and path not in found:
            found.append(path)
    return found


def _outermost(dirs: Sequence[Path]) -> list[Path]:
    """*dirs* without those inside another: one recursive watch covers them."""
    return [path for path in dirs if not any(other in path.parents for other in dirs)]


class Reloader:
    """The parent: holds the listeners, runs one child at a time, watches the files."""

    def __init__(self, config: Config, argv: list[str]) -> None:
        self.config = config
        self.command = python_command("anyserve", *argv)
        self.dirs = watched_dirs(config)
        self.filter = ChangeFilter(self.dirs, config.reload_includes, config.reload_excludes)
        self.stopping = threading.Event()
        self.wake = threading.Event()  # a change, or a signal to stop
        self.lock = threading.Lock()  # the watcher thread and the main thread: changed, notice
        self.changed = False
        self.notice: int | None = None  # the write end of the running child's pipe
        self.child: subprocess.Popen[bytes] | None = None

    def run(self) -> int:
        config = self.config
        listeners = bind_listeners(config.listen, backlog=config.backlog, uds_mode=config.uds_mode)
        fds = [listener.socket.fileno() for listener in listeners]
        for fd in fds:
            os.set_inheritable(fd, True)
        env = {**os.environ, INHERITED_FDS_ENV: inherited_fds_value(listeners)}
        previous = {sig: signal.signal(sig, self._forward) for sig in (signal.SIGTERM, signal.SIGINT)}
        previous[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, self._reopen_logs)
        _quiet_watchfiles()
        watcher = threading.Thread(target=self._watch, name="anyserve-reload", daemon=True)
        watcher.start()
        log.info(
            "Reloading on changes to %s under %s",
            ", ".join(self.filter.includes) or "nothing",
            ", ".join(map(str, self.dirs)),
        )
        try:
            while True:
                code = self._run_child(env, fds)
                if self.stopping.is_set():
                    return EXIT_OK if code in (0, -signal.SIGTERM, -signal.SIGINT) else code
                if self.changed:
                    continue
                log.error("The server exited with code %d; waiting for a file to change to restart it", code)
                if not self._wait_for_change():
                    return EXIT_OK
        finally:
            self.stopping.set()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for listener in listeners:
                listener.close()
            watcher.join(5)

    def _run_child(self, env: dict[str, str], fds: list[int]) -> int:
        """Start a child, wait for its end; return its exit code."""
        read_end, write_end = os.pipe()
        try:
            with self.lock:
                self.changed = False
                self.child = subprocess.Popen(
                    self.command, env={**env, RELOAD_FD_ENV: str(read_end)}, pass_fds=(*fds, read_end)
                )
                self.notice = write_end
        finally:
            os.close(read_end)
        if self.stopping.is_set():  # a signal came while it started
            self.child.terminate()
        try:
            return self.child.wait()
        finally:
            with self.lock:
                self.notice = None
                os.close(write_end)

    def _wait_for_change(self) -> bool:
        """Block until a file changes (True) or a signal asks to stop (False)."""
        while True:
            self.wake.clear()
            if self.stopping.is_set():
                return False
            if self.changed:
                return True
            self.wake.wait()

    def _watch(self) -> None:
        for changes in watchfiles.watch(
            *_outermost(self.dirs), watch_filter=self.filter, stop_event=self.stopping, raise_interrupt=False
        ):
            paths = sorted({path for _, path in changes})
            more = f" and {len(paths) - NAMED_PATHS} more" if len(paths) > NAMED_PATHS else ""
            log.info("Detected a change in %s%s, reloading", ", ".join(paths[:NAMED_PATHS]), more)
            with self.lock:
                self.changed = True
                if self.notice is not None:
                    try:
                        os.write(self.notice, b"\n")
                    except OSError:  # the child is gone already
                        pass
            self.wake.set()

    def _forward(self, signum: int, frame: object) -> None:
        # Always TERM: a Ctrl-C reaches the child too, and a second INT would
        # make it exit without waiting for its requests.
        self.stopping.set()
        self.wake.set()
        child = self.child
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)

    def _reopen_logs(self, signum: int, frame: object) -> None:
        reopen_log_files_soon()
        child = self.child
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGUSR1)


def _quiet_watchfiles() -> None:
    """watchfiles says "1 change detected" at INFO; anyserve names the files itself."""
    watchfiles_log = logging.getLogger("watchfiles")
    if watchfiles_log.level == logging.NOTSET:
        watchfiles_log.setLevel(logging.WARNING)


def _serve_child(config: Config) -> int:
    from .entry import serve_in_process
    from .server import Server

    notice = int(os.environ.pop(RELOAD_FD_ENV))
    os.set_inheritable(notice, False)  # the app's own subprocesses have no part in it

    def wait_for_reload(server: Server) -> None:
        try:
            os.read(notice, 1)  # a change; or nothing, the parent gone
        except OSError:
            return
        server.stop()

    def serving(server: Server) -> None:
        threading.Thread(target=wait_for_reload, args=(server,), name="anyserve-reload", daemon=True).start()

    serve_in_process(config, serving=serving)
    return EXIT_OK
