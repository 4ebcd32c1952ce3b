"""--reload: restart the serving process when a source file changes.

The parent binds the listeners once and runs the server in a child process that
inherits them, so clients never see the port closed. The child watches the files
of every module it imported plus the --reload-dir trees and exits with
RELOAD_EXIT after a graceful stop when one changes; the parent starts a new
child. When a child fails (a syntax error, say) the parent waits for a change
in the app directory or the --reload-dir trees before trying again.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Iterator

from .child import python_command
from .config import Config
from .errors import EXIT_OK
from .logs import reopen_log_files_soon
from .sockets import INHERITED_FDS_ENV, bind_listeners, inherited_fds_value

log = logging.getLogger("anyserve.reload")

RELOAD_EXIT = 77
CHILD_ENV = "_ANYSERVE_RELOAD_CHILD"
POLL_INTERVAL = 0.5


def is_child() -> bool:
    return os.environ.get(CHILD_ENV) == "1"


def run_with_reloader(config: Config, argv: list[str]) -> int:
    """In the parent: bind, then run and restart children. In a child: serve and watch."""
    if is_child():
        return _serve_child(config)
    listeners = bind_listeners(config.listen, backlog=config.backlog, uds_mode=config.uds_mode)
    fds = [listener.socket.fileno() for listener in listeners]
    for fd in fds:
        os.set_inheritable(fd, True)
    env = {**os.environ, CHILD_ENV: "1", INHERITED_FDS_ENV: inherited_fds_value(listeners)}
    command = python_command("anyserve", *argv)
    stop = threading.Event()
    child: subprocess.Popen[bytes] | None = None

    def forward(signum: int, frame: object) -> None:
        # Always TERM: a Ctrl-C reaches the child too, and a second INT would
        # make it exit without waiting for its requests.
        stop.set()
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)

    def reopen_logs(signum: int, frame: object) -> None:
        reopen_log_files_soon()
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGUSR1)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    previous[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, reopen_logs)
    log.info("Reloading on changes (watching the app's modules%s)", _dirs_note(config.reload_dirs))
    try:
        while True:
            child = subprocess.Popen(command, env=env, pass_fds=fds)
            code = child.wait()
            if stop.is_set():
                return EXIT_OK if code in (0, -signal.SIGTERM, -signal.SIGINT) else code
            if code == RELOAD_EXIT:
                continue
            log.error("The server exited with code %d; waiting for a file to change to restart it", code)
            if _wait_for_change(
                lambda: [*_files_in([config.app_dir], recursive=False), *_files_in(config.reload_dirs)], stop
            ):
                continue
            return EXIT_OK
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for listener in listeners:
            listener.close()


def _serve_child(config: Config) -> int:
    from .entry import serve_in_process
    from .server import Server

    changed = threading.Event()
    stop_watching = threading.Event()

    def watch(server: Server) -> None:
        if _wait_for_change(lambda: [*_module_files(), *_files_in(config.reload_dirs)], stop_watching):
            changed.set()
            server.stop()

    def serving(server: Server) -> None:
        threading.Thread(target=watch, args=(server,), name="anyserve-reload", daemon=True).start()

    try:
        serve_in_process(config, serving=serving)
    finally:
        stop_watching.set()
    return RELOAD_EXIT if changed.is_set() else EXIT_OK


def _module_files() -> Iterator[str]:
    for module in list(sys.modules.values()):
        filename = getattr(module, "__file__", None)
        if filename and filename.endswith(".py"):
            yield filename


def _files_in(dirs: Iterable[str], recursive: bool = True) -> Iterator[str]:
    for top in dirs:
        for root, subdirs, files in os.walk(top):
            subdirs[:] = [d for d in subdirs if not d.startswith(".") and d != "__pycache__"] if recursive else []
            for name in files:
                if not name.startswith(".") and name.endswith((".py", ".ini", ".toml", ".cfg", ".json")):
                    yield os.path.join(root, name)


def _wait_for_change(files: Callable[[], Iterable[str]], stop: threading.Event) -> bool:
    """Poll modification times until a known file changes (True) or *stop* is set
    (False). Files that appear later (modules imported lazily) join the watch."""
    seen = _mtimes(files())
    while not stop.wait(POLL_INTERVAL):
        current = _mtimes(files())
        for path, mtime in current.items():
            if seen.get(path, mtime) != mtime:
                log.info("Detected a change in %s, reloading", path)
                return True
        seen.update(current)
    return False


def _mtimes(paths: Iterable[str]) -> dict[str, float]:
    result = {}
    for path in paths:
        try:
            result[path] = os.stat(path).st_mtime
        except OSError:
            pass
    return result


def _dirs_note(dirs: list[str]) -> str:
    return f" and {', '.join(dirs)}" if dirs else ""
