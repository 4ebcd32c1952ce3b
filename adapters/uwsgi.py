"""uwsgi: uWSGI's master and workers, from the ``pyuwsgi`` wheel (or a ``uwsgi`` binary on PATH).

uWSGI runs as a child process of anyserve. anyserve's listeners are handed over
the way systemd hands sockets over (descriptors 3, 4, ... with ``LISTEN_FDS``
and ``LISTEN_PID``), so uWSGI binds nothing itself and ``fd://``, unix sockets
and ``--uds-mode`` behave as on every other server. The master forks --workers
processes (--threads each); each worker loads the app from the same APP string
(the master does, once, with --preload) through :func:`worker_application`,
which runs the Lifecycle in the worker: ``started`` after the fork (uWSGI's
post-fork hook), ``tick`` from a thread, ``stopping`` at the worker's exit
(uWSGI's atexit hook).

TERM/INT to anyserve: a graceful shutdown through uWSGI's master FIFO (``q``),
each worker given --graceful-timeout to finish; HUP: the workers reloaded one
at a time (a SIGHUP to each, the next once its replacement serves) so none is
refused. ``-o protocol=uwsgi``
speaks the uwsgi protocol, for nginx's ``uwsgi_pass``.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from anyserve.config import Config, to_int, to_positive_int, to_str
from anyserve.errors import EXIT_APP, AnyserveError, Reported, ServerError, report
from anyserve.lifecycle import Lifecycle
from anyserve.loader import DeferredApp
from anyserve.notify import notify
from anyserve.sockets import Listener

from .base import STOP_MARGIN, Adapter, Capabilities, Option, WSGIApp, warn_requests_left

log = logging.getLogger("anyserve.uwsgi")
#: uWSGI's master FIFO, in the run's scratch directory.
FIFO = "master.fifo"
#: How long a worker replaced on SIGHUP may take to serve before the restart is given up.
RESTART_TIMEOUT = 60
#: How the anyserve process tells the uWSGI process what to serve (JSON).
SPEC_ENV = "_ANYSERVE_UWSGI"
#: -o protocol values. Plain http answers one request per connection, as
#: gunicorn's sync worker does: a keep-alive client would hold a worker (or a
#: thread) while it idles.
PROTOCOLS = {"http": "http", "http11": "http11", "uwsgi": "uwsgi"}
# Run in a fresh interpreter: put the inherited listeners on 3, 4, ... as
# systemd would, then become uWSGI (pyuwsgi in this process, or exec the binary,
# keeping the pid LISTEN_PID names).
LAUNCHER = """
import os, sys
fds = [int(fd) for fd in os.environ.pop("_ANYSERVE_UWSGI_FDS").split(",")]
import fcntl
moved = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3 + len(fds)) for fd in fds]  # above the targets
for fd in fds:
    os.close(fd)
for target, fd in enumerate(moved, 3):
    os.dup2(fd, target)
    os.close(fd)
os.environ["LISTEN_FDS"] = str(len(fds))
os.environ["LISTEN_PID"] = str(os.getpid())
if sys.platform.startswith("linux"):  # anyserve killed: uWSGI's master and workers go too
    import ctypes, signal
    ctypes.CDLL(None).prctl(1, int(signal.SIGINT), 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:
        sys.exit(1)
title = os.environ.pop("_ANYSERVE_UWSGI_TITLE", "")
try:
    from setproctitle import setproctitle
    setproctitle(title)
except ImportError:
    pass
binary = os.environ.pop("_ANYSERVE_UWSGI_BINARY", "")
if binary:
    os.execv(binary, [binary, *sys.argv[1:]])
import pyuwsgi
pyuwsgi.run(sys.argv[1:])
"""


class UwsgiAdapter(Adapter):
    name = "uwsgi"
    requires = ("pyuwsgi",)
    module = "pyuwsgi"
    capabilities = Capabilities(
        concurrency="pre-fork workers (--workers), each one request at a time, or --threads at once",
        concurrent=False,  # with the defaults: one worker, one thread
        keep_alive=False,  # unless -o protocol=http11
        threads=True,
        workers=True,
        unix=True,
        fd=True,
        background=False,  # its master is a process of its own
        # uWSGI's http-socket hands the app a chunked upload undecoded.
        chunked_request=False,
        # uWSGI's http-socket serves "GET / HTTX/1.1" and answers "HTTX/1.1 200 OK".
        checks_http_version=False,
    )
    options = {
        "protocol": Option(
            to_str, "what the listeners speak: http (one request per connection), http11 (keep-alive), or uwsgi"
        ),
        "harakiri": Option(to_positive_int, "seconds a request may take before its worker is killed"),
        "max_requests": Option(to_positive_int, "reload a worker after this many requests"),
        "buffer_size": Option(to_positive_int, "largest request header block in bytes (default 4096)"),
        "listen": Option(to_positive_int, "uWSGI's own listen queue check (the backlog is anyserve's --backlog)"),
        "socket_timeout": Option(to_int, "seconds a client socket may stay silent (default 4)"),
    }

    @classmethod
    def is_installed(cls) -> bool:
        return importlib.util.find_spec("pyuwsgi") is not None or shutil.which("uwsgi") is not None

    @classmethod
    def version(cls) -> str | None:
        try:
            return importlib.metadata.version("pyuwsgi")
        except importlib.metadata.PackageNotFoundError:
            pass
        binary = shutil.which("uwsgi")
        if binary is None:
            return None
        try:
            return subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    @classmethod
    def check(cls, config: Config, listeners: list[Listener] | None = None) -> dict[str, Any]:
        settings = super().check(config, listeners)
        if "protocol" in settings and settings["protocol"] not in PROTOCOLS:
            raise ServerError(
                f"invalid value for -o protocol={settings['protocol']} (server uwsgi): "
                f"expected one of {', '.join(PROTOCOLS)}"
            )
        return settings

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self._scratch: str | None = None
        self._stopping = False
        self._restarting = threading.Lock()
        self._workers = 1
        self._graceful_timeout = 30.0

    def serve(self, app: WSGIApp, listeners: list[Listener], config: Config, lifecycle: Lifecycle) -> None:
        settings = self.check(config, listeners)
        if not isinstance(config.app, str):
            raise ServerError("uwsgi loads the app in a process of its own, so it needs an APP string (module:attr)")
        if any(not isinstance(hook, str) for hook in (*config.on_start, *config.on_stop)):
            raise ServerError("uwsgi runs the hooks in a process of its own: give them as module:function strings")
        scratch = self._scratch = tempfile.mkdtemp(prefix="anyserve-uwsgi-")
        self._workers = config.workers
        self._graceful_timeout = config.graceful_timeout
        fds = [listener.socket.fileno() for listener in listeners]
        for fd in fds:
            os.set_inheritable(fd, True)
        spec = {
            "config": {name: getattr(config, name) for name in _set_options(config)},
            "urls": [listener.url() for listener in listeners],
            "described": f"uwsgi {self.version() or ''}".strip(),
            "scratch": scratch,
        }
        env = {
            # anyserve speaks to the service manager itself: READY=1 once a
            # worker serves, STOPPING=1 on TERM (uWSGI would say it's ready early).
            **{key: value for key, value in os.environ.items() if key != "NOTIFY_SOCKET"},
            SPEC_ENV: json.dumps(spec),
            "_ANYSERVE_UWSGI_FDS": ",".join(map(str, fds)),
            "_ANYSERVE_UWSGI_TITLE": f"anyserve: master [uwsgi {config.app}]",
        }
        binary = None if importlib.util.find_spec("pyuwsgi") else shutil.which("uwsgi")
        if binary:
            env["_ANYSERVE_UWSGI_BINARY"] = binary
        args = self.arguments(config, settings, os.path.join(scratch, FIFO), binary is not None)
        try:
            self._process = subprocess.Popen([sys.executable, "-c", LAUNCHER, *args], env=env, pass_fds=fds)
            threading.Thread(target=self._notify_ready, args=(scratch,), daemon=True).start()
            if self._stopping:
                self.shutdown()
            code = self._process.wait()
            if os.path.exists(os.path.join(scratch, "reported")):
                raise Reported(EXIT_APP)  # a worker said why the app did not load
            if code not in (0, -signal.SIGTERM, -signal.SIGINT) and not self._stopping:
                raise AnyserveError(f"uWSGI exited with code {code}; see its lines above")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _notify_ready(self, scratch: str) -> None:
        served = os.path.join(scratch, "served")
        while self._process is not None and self._process.poll() is None and not self._stopping:
            if os.path.exists(served):
                notify("READY=1")
                return
            time.sleep(0.05)

    @staticmethod
    def arguments(config: Config, settings: dict[str, Any], fifo: str, binary: bool) -> list[str]:
        grace = str(max(1, math.ceil(config.graceful_timeout)))
        args = [
            "--master",
            "--strict",
            "--need-app",
            "--die-on-term",
            "--master-fifo",
            fifo,
            "--processes",
            str(config.workers),
            "--enable-threads",  # the tick thread, and the app's own
            "--protocol",
            PROTOCOLS[settings.get("protocol", "http")],
            "--worker-reload-mercy",
            grace,
            "--reload-mercy",
            grace,
            "--eval",
            "from anyserve.adapters.uwsgi import worker_application\napplication = worker_application()",
            "--buffer-size",
            str(settings.get("buffer_size", 8192)),
            "--socket-timeout",
            str(settings.get("socket_timeout", 4)),
            "--no-orphans",
        ]
        if config.threads:
            args += ["--threads", str(config.threads)]
        if not (config.preload or config.user or config.group):
            args.append("--lazy-apps")  # else the master imports the app, before taking on --user
        if config.log_level != "debug":
            args.append("--disable-logging")  # uWSGI's line per request
        if settings.get("protocol", "http") == "http":
            # It closes the connection after each response: say so, or an HTTP/1.1
            # client expects it to stay open.
            args += ["--add-header", "Connection: close"]
        if "listen" in settings:
            args += ["--listen", str(settings["listen"])]
        if "harakiri" in settings:
            args += ["--harakiri", str(settings["harakiri"])]
        if "max_requests" in settings:
            args += ["--max-requests", str(settings["max_requests"])]
        # --user/--group: uWSGI's master takes them on once set up, before it forks.
        if config.user:
            args += ["--uid", str(config.user)]
        if config.group:
            args += ["--gid", str(config.group)]
        if binary:
            args += ["--plugin", "python3", "--home", sys.prefix]
        return args

    def _command(self, letter: bytes) -> bool:
        return self._scratch is not None and fifo_command(self._scratch, letter)

    def shutdown(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        # uWSGI's graceful shutdown leaves out a worker still loading the app
        # and then waits the whole reload mercy for it: let a restart under way
        # see its replacement serve first (shutdown() must not block: a thread).
        threading.Thread(target=self._stop, name="anyserve-uwsgi-stop", daemon=True).start()

    def _stop(self) -> None:
        if self._restarting.acquire(timeout=RESTART_TIMEOUT):
            self._restarting.release()
        # Likewise the workers still loading the app just after start-up.
        deadline = time.monotonic() + RESTART_TIMEOUT
        while self._process is not None and self._process.poll() is None and time.monotonic() < deadline:
            if len(self._serving_workers()) >= self._workers:
                break
            time.sleep(0.05)
        process = self._process
        if process is None or process.poll() is not None:
            return
        if self._command(b"q"):
            # uWSGI's reload mercy lets a worker in a long request run well past
            # it: at the graceful timeout, its brutal shutdown (INT).
            try:
                process.wait(self._graceful_timeout + STOP_MARGIN)
                return
            except subprocess.TimeoutExpired:
                warn_requests_left(self._graceful_timeout, None)
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGINT)

    def reopen_logs(self) -> None:
        # uWSGI keeps the workers' signals for itself: each worker watches this file.
        if self._scratch is not None:
            with open(os.path.join(self._scratch, "reopen"), "w") as marker:
                marker.write(str(time.time_ns()))

    def restart(self) -> bool:
        # uWSGI's own chain reload (FIFO "c") leaves a graceful shutdown that
        # comes while a replacement boots waiting for the whole reload mercy;
        # replacing the workers from here, one SIGHUP each, does not.
        if self._process is None or self._scratch is None or self._stopping:
            return False
        if not self._restarting.acquire(blocking=False):
            log.info("SIGHUP: a restart is already under way")
            return True
        threading.Thread(target=self._replace_workers, name="anyserve-uwsgi-restart", daemon=True).start()
        return True

    def _replace_workers(self) -> None:
        try:
            for pid in sorted(self._serving_workers()):
                if self._stopping:
                    return
                known = self._serving_workers() | {pid}
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGHUP)  # a uWSGI worker's graceful reload: the master starts another
                deadline = time.monotonic() + RESTART_TIMEOUT
                # Until the replacement serves, even when a stop comes meanwhile (see shutdown).
                while not (self._serving_workers() - known):
                    if time.monotonic() > deadline or self._process is None or self._process.poll() is not None:
                        log.error("no worker replaced pid %d within %d s; restart given up", pid, RESTART_TIMEOUT)
                        return
                    time.sleep(0.05)
        finally:
            self._restarting.release()

    def _serving_workers(self) -> set[int]:
        """Workers that loaded the app and serve: each leaves a file named by its pid."""
        pids = set()
        for name in os.listdir(self._scratch or "."):
            if name.startswith("ready-"):
                pid = int(name.removeprefix("ready-"))
                try:
                    os.kill(pid, 0)
                    pids.add(pid)
                except ProcessLookupError:
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(self._scratch or ".", name))
        return pids


def fifo_command(scratch: str, letter: bytes) -> bool:
    """Write a command to uWSGI's master FIFO (in *scratch*); False when it is not there."""
    try:
        fd = os.open(os.path.join(scratch, FIFO), os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        os.write(fd, letter)
    finally:
        os.close(fd)
    return True


def _set_options(config: Config) -> list[str]:
    from dataclasses import fields

    return [f.name for f in fields(config) if config.is_set(f.name) or f.name == "app"]


def worker_application() -> WSGIApp:
    """In the uWSGI process: load the app as anyserve would and run its Lifecycle
    in each worker. Called by uWSGI in each worker (in the master with --preload)."""
    import uwsgi  # provided by uWSGI in its processes

    from anyserve.logs import configure_logging
    from anyserve.runner import Server, log_listening
    from anyserve.supervisor import set_title

    spec = json.loads(os.environ[SPEC_ENV])
    config = Config.load(kwargs=spec["config"])
    configure_logging(
        config.log_level, error_log=config.error_log, access_log=config.access_log, log_config=config.log_config
    )
    scratch = spec["scratch"]
    try:
        server = Server(config, owns_process=True)
        app = server.app.load() if isinstance(server.app, DeferredApp) else server.app
    except AnyserveError as exc:
        # The first worker to fail says why, and when none ever served, ends uWSGI:
        # its master would start the same failing worker again and again.
        with contextlib.suppress(FileExistsError):
            os.close(os.open(os.path.join(scratch, "reported"), os.O_CREAT | os.O_EXCL))
            report(exc)
        if not os.path.exists(os.path.join(scratch, "served")):
            # A graceful shutdown through the master FIFO: the workers still
            # loading the app finish that quietly, then exit.
            with contextlib.suppress(OSError):
                fifo_command(scratch, b"q")
        os._exit(EXIT_APP)
    lifecycle = server.lifecycle
    os.environ["ANYSERVE_SERVING"] = spec["described"]
    lifecycle.subscribe("started", lambda: log_listening(spec["urls"], spec["described"], config.workers), last=True)

    logs_to_files = any(path and path != "-" for path in (config.error_log, config.access_log, config.log_config))

    def started() -> None:
        if logs_to_files:
            threading.Thread(target=_watch_reopen, args=(scratch,), name="anyserve-reopen", daemon=True).start()
        set_title("uwsgi", config.app, f"worker {uwsgi.worker_id()}")
        lifecycle.started()
        for name in ("served", f"ready-{os.getpid()}"):
            with contextlib.suppress(OSError):
                os.close(os.open(os.path.join(scratch, name), os.O_CREAT))
        stop_ticks = lifecycle.start_tick_thread()

        def at_exit() -> None:
            stop_ticks()
            lifecycle.stopping()

        uwsgi.atexit = at_exit

    if uwsgi.worker_id() > 0:
        started()  # --lazy-apps: this is the worker
    else:
        uwsgi.post_fork_hook = started  # the master, before it forks the workers
    return answering_errors(app)


def _watch_reopen(scratch: str) -> None:
    """In a uWSGI worker: reopen the log files when anyserve's process got USR1 (see reopen_logs)."""
    from anyserve.logs import reopen_log_files

    marker = os.path.join(scratch, "reopen")

    def stamp() -> float | None:
        try:
            return os.stat(marker).st_mtime_ns
        except OSError:
            return None

    seen = stamp()
    while True:
        time.sleep(0.2)
        now = stamp()
        if now != seen:
            seen = now
            reopen_log_files()


def answering_errors(app: WSGIApp) -> WSGIApp:
    """uWSGI closes the connection unanswered when the app raises: answer 500,
    and log the traceback, as every other server does."""
    errors = logging.getLogger("anyserve.uwsgi")

    def guarded(environ: dict[str, Any], start_response: Any) -> Any:
        try:
            return app(environ, start_response)
        except Exception:
            errors.exception(
                "Error in the app, answering 500: %s %s", environ.get("REQUEST_METHOD"), environ.get("PATH_INFO")
            )
            body = b"Internal Server Error"
            # No exc_info: nothing was sent yet, and uWSGI drops the body given with it.
            start_response(
                "500 Internal Server Error", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
            )
            return [body]

    return guarded
