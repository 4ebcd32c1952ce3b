"""uwsgi: uWSGI's master and workers, from the ``pyuwsgi`` wheel (or a ``uwsgi`` binary on PATH).

uWSGI runs as a child process of anyserve (``launcher.py``). anyserve's
listeners are handed over the way systemd hands sockets over (descriptors 3, 4,
... with ``LISTEN_FDS`` and ``LISTEN_PID``), so uWSGI binds nothing itself and
``fd://``, unix sockets and ``--uds-mode`` behave as on every other server. The
master forks --workers processes (--threads each); each worker loads the app
from the same APP string (the master does, once, with --preload) and runs the
Lifecycle (``worker.py``).

The stop: uWSGI's master answers TERM and INT with its brutal shutdown, so they
are blocked in it and in its workers (``master.py``), whichever process they
reach. anyserve stops the master with QUIT; the master passes INT to each
worker, which turns it, as a TERM or INT of its own, into its graceful stop
(finish the requests, run the exit hooks). At --graceful-timeout anyserve
kills what is left. HUP: the workers reloaded one at a time (a SIGHUP to each,
the next once its replacement serves) so none is refused. ``-o
protocol=uwsgi`` speaks the uwsgi protocol, for nginx's ``uwsgi_pass``.

uWSGI's own lines (its start-up banner, its notices) reach anyserve through a
pipe and are logged as the logger ``uwsgi``: shown with ``--log-level debug``,
those that report a problem as warnings. Python's stderr in uWSGI's processes
(anyserve's messages, the app's) is anyserve's own stderr (``master.py``).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import json
import logging
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from typing import IO, Any

from anyserve.child import python_command
from anyserve.config import Config, to_choice, to_int, to_positive_int
from anyserve.errors import AnyserveError, Reported, ServerError
from anyserve.lifecycle import Lifecycle
from anyserve.notify import notify
from anyserve.process import resolve_identity
from anyserve.sockets import Listener
from anyserve.workers import BootReports, process_title

from ..base import Adapter, Capabilities, Deviations, Option, WSGIApp
from ..draining import StopRace
from .worker import SPEC_ENV, fifo_command

log = logging.getLogger("anyserve.uwsgi")
#: uWSGI's own lines, as anyserve relays them.
uwsgi_log = logging.getLogger("uwsgi")
#: Where Python's stderr goes in uWSGI's processes: a descriptor of anyserve's stderr.
STDERR_ENV = "_ANYSERVE_UWSGI_STDERR"
#: uWSGI's lines that report a problem (the rest is its banner and notices).
PROBLEM = re.compile(r"HARAKIRI|DAMN|!!!|\berror\b|unable to|cannot|fatal|no app loaded|segmentation", re.IGNORECASE)
#: Its notice, repeated at each of its steps, that it runs as root: anyserve's
#: --user and --require-non-root are the way to act on that.
AS_ROOT = re.compile(r"running (uWSGI )?as root")
#: What the anyserve process tells the launcher: the listeners' descriptors, the
#: process title, and a uwsgi binary to exec instead of pyuwsgi.
FDS_ENV = "_ANYSERVE_UWSGI_FDS"
TITLE_ENV = "_ANYSERVE_UWSGI_TITLE"
BINARY_ENV = "_ANYSERVE_UWSGI_BINARY"
#: uWSGI's master FIFO, in the run's scratch directory.
FIFO = "master.fifo"
#: How long a worker replaced on SIGHUP may take to serve before the restart is given up.
RESTART_TIMEOUT = 60
#: -o protocol values. Plain http answers one request per connection, as
#: gunicorn's sync worker does: a keep-alive client would hold a worker (or a
#: thread) while it idles.
PROTOCOLS = {"http": "http", "http11": "http11", "uwsgi": "uwsgi"}


class UwsgiAdapter(Adapter):
    name = "uwsgi"
    requires = ("pyuwsgi",)
    module = "pyuwsgi"
    capabilities = Capabilities(
        default_threads=1,
        concurrency="pre-fork workers (--workers), each one request at a time, or --threads at once",
        threads=True,
        workers=True,
        unix=True,
        fd=True,
        background=False,  # its master is a process of its own
    )
    deviations = Deviations(
        one_request_at_a_time=True,  # with the defaults: one worker, one thread
        no_keep_alive=True,  # unless -o protocol=http11
        # uWSGI's http-socket hands the app a chunked upload undecoded.
        no_chunked_request=True,
        # uWSGI's http-socket serves "GET / HTTX/1.1" and answers "HTTX/1.1 200 OK".
        any_http_version=True,
        # ...and closes, unanswered, a request head whose lines end in a bare LF.
        waits_on_bare_lf=True,
        # ...and likewise one with a header line that is not a field (no colon).
        bad_header_line_unanswered=True,
        # It ends a connection whose request did not come in time without a word.
        silent_request_timeout=True,
    )
    keep_alive_timeout_by = "uWSGI's --socket-timeout (whole seconds: idle, and each read of a request)"
    loggers = ("uwsgi",)
    options = {
        "protocol": Option(
            to_choice(*PROTOCOLS),
            "what the listeners speak: http (one request per connection), http11 (keep-alive), or uwsgi",
        ),
        "harakiri": Option(to_positive_int, "seconds a request may take before its worker is killed"),
        "max_requests": Option(to_positive_int, "reload a worker after this many requests"),
        "buffer_size": Option(to_positive_int, "largest request header block in bytes (default 4096)"),
        "listen": Option(to_positive_int, "uWSGI's own listen queue check (the backlog is anyserve's --backlog)"),
        "socket_timeout": Option(to_int, "seconds a client socket may stay silent (default: --timeout-keep-alive)"),
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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._process: subprocess.Popen[bytes] | None = None
        self._reports: BootReports | None = None
        self._scratch: str | None = None
        self._race = StopRace()
        self._restarting = threading.Lock()
        self._lifecycle: Lifecycle | None = None

    def serve(self, app: WSGIApp, listeners: list[Listener], lifecycle: Lifecycle) -> None:
        config, settings = self.config, self.settings
        self._lifecycle = lifecycle
        if self._race.requested:
            return
        if not isinstance(config.app, str):
            raise ServerError("uwsgi loads the app in a process of its own, so it needs an APP string (module:attr)")
        if any(not isinstance(hook, str) for hook in (*config.on_start, *config.on_stop)):
            raise ServerError("uwsgi runs the hooks in a process of its own: give them as module:function strings")
        reports = self._reports = BootReports()
        identity = resolve_identity(config)
        if identity is not None:  # uWSGI's master takes it on before it forks the workers
            reports.allow(identity.uid, identity.gid)
        scratch = self._scratch = reports.path
        fds = [listener.socket.fileno() for listener in listeners]
        for fd in fds:
            os.set_inheritable(fd, True)
        python_stderr = os.dup(sys.stderr.fileno())
        spec = {
            "config": {name: getattr(config, name) for name in _set_options(config)},
            "described": f"uwsgi {self.version() or ''}".strip(),
            "reports": reports.path,
            "fifo": os.path.join(scratch, FIFO),
            "reopen": os.path.join(scratch, "reopen"),
        }
        env = {
            # anyserve speaks to the service manager itself: READY=1 once a
            # worker serves, STOPPING=1 on TERM (uWSGI would say it's ready early).
            **{key: value for key, value in os.environ.items() if key != "NOTIFY_SOCKET"},
            SPEC_ENV: json.dumps(spec),
            FDS_ENV: ",".join(map(str, fds)),
            STDERR_ENV: str(python_stderr),
            TITLE_ENV: process_title("uwsgi", config.app, "master"),
        }
        binary = None if importlib.util.find_spec("pyuwsgi") else shutil.which("uwsgi")
        if binary:
            env[BINARY_ENV] = binary
        args = self.arguments(config, settings, spec["fifo"], binary is not None)
        launcher = python_command("anyserve.adapters.uwsgi.launcher")
        try:
            try:
                self._process = subprocess.Popen(
                    [*launcher, *args], env=env, pass_fds=[*fds, python_stderr], stderr=subprocess.PIPE
                )
            finally:
                os.close(python_stderr)
            assert self._process.stderr is not None
            last: deque[str] = deque(maxlen=20)
            relay = threading.Thread(
                target=_relay, args=(self._process.stderr, last), name="anyserve-uwsgi-log", daemon=True
            )
            relay.start()
            threading.Thread(target=self._notify_ready, daemon=True).start()
            if not self._race.ready(self._process):  # shutdown() came while it started
                self._stop_soon()
            code = self._process.wait()
            relay.join(5)
            reported = reports.reported()
            if reported is not None:
                raise Reported(reported)  # a worker said why the app did not load
            if code not in (0, -signal.SIGKILL) and not self._race.requested:
                if not uwsgi_log.isEnabledFor(logging.INFO):
                    for line in last:  # the lines that were not shown
                        uwsgi_log.warning("%s", line)
                raise AnyserveError(f"uWSGI exited with code {code}; see its lines above")
        finally:
            reports.close()

    def _notify_ready(self) -> None:
        notified = False
        while self._process is not None and self._process.poll() is None and not self._race.requested:
            if self._reports is not None and not notified and self._reports.ever_served():
                notify("READY=1")
                notified = True
            if self._reports is not None and len(self._reports.serving_pids()) >= self.config.workers:
                self.workers_serve()  # once: "Listening on", from this process
                return
            time.sleep(0.05)

    @staticmethod
    def arguments(config: Config, settings: dict[str, Any], fifo: str, binary: bool) -> list[str]:
        grace = max(1, math.ceil(config.graceful_timeout))
        args = [
            "--master",
            "--strict",
            "--need-app",
            "--master-fifo",
            fifo,
            "--processes",
            str(config.workers),
            "--enable-threads",  # the tick thread, and the app's own
            "--protocol",
            PROTOCOLS[settings.get("protocol", "http")],
            # anyserve ends a stop at --graceful-timeout itself; uWSGI's own
            # bound comes later, should anyserve be gone.
            "--worker-reload-mercy",
            str(grace + 5),
            "--reload-mercy",
            str(grace + 5),
            "--shared-import",
            "anyserve.adapters.uwsgi.master",
            "--eval",
            "from anyserve.adapters.uwsgi.worker import application\napplication = application()",
            "--buffer-size",
            str(settings.get("buffer_size", 8192)),
            "--socket-timeout",
            str(settings.get("socket_timeout", math.ceil(config.timeout_keep_alive))),
            "--no-orphans",
            # Its output comes to anyserve through a pipe: with anyserve gone, uWSGI's
            # own SIGPIPE warning, written to that pipe, would raise SIGPIPE again,
            # for ever, instead of letting the stop go on.
            "--ignore-sigpipe",
        ]
        if config.threads:
            args += ["--threads", str(config.threads)]
        if not (config.preload or config.user or config.group):
            args.append("--lazy-apps")  # else the master imports the app, before taking on --user
        args.append("--disable-logging")  # no line per request of its own (Adapter.loggers)
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

    #: Set in a uWSGI worker (worker.py), where the app's stop of its engine stops
    #: this worker gracefully; uWSGI's master replaces it, as any worker that ends.
    in_worker = False

    def shutdown(self) -> None:
        if self.in_worker:
            os.kill(os.getpid(), signal.SIGTERM)  # taken by the worker's stop thread
            return
        first, process = self._race.request()
        if first and process is not None:
            self._stop_soon()

    def _stop_soon(self) -> None:
        # uWSGI's stop leaves out a worker still loading the app and then waits
        # for it: let a restart under way see its replacement serve first
        # (shutdown() must not block: a thread).
        threading.Thread(target=self._stop, name="anyserve-uwsgi-stop", daemon=True).start()

    def _stop(self) -> None:
        deadline = time.monotonic() + self.config.graceful_timeout
        if self._restarting.acquire(timeout=RESTART_TIMEOUT):
            self._restarting.release()
        # Likewise the workers still loading the app just after start-up.
        booted_by = time.monotonic() + RESTART_TIMEOUT
        while self._process is not None and self._process.poll() is None and time.monotonic() < booted_by:
            if self._reports is None or len(self._reports.serving_pids()) >= self.config.workers:
                break
            time.sleep(0.05)
        process = self._process
        if process is None or process.poll() is not None:
            return
        # The master's stop: INT to each worker, which stops gracefully (worker.py).
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGQUIT)
        while time.monotonic() < deadline:
            try:
                process.wait(0.05)
                return
            except subprocess.TimeoutExpired:
                # A byte no command uses wakes the master's loop: it sees a worker
                # that ended now, not at its next round a second later.
                fifo_command(os.path.join(self._scratch or ".", FIFO), b".")
        if self._lifecycle is not None:
            self._lifecycle.cut(self.config.graceful_timeout, None)
        for pid in [*_children(process.pid), process.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def reopen_logs(self) -> None:
        # uWSGI keeps the workers' signals for itself: each worker watches this file.
        if self._scratch is not None:
            with open(os.path.join(self._scratch, "reopen"), "w") as marker:
                marker.write(str(time.time_ns()))

    def restart(self) -> bool:
        # uWSGI's own chain reload (FIFO "c") leaves a stop that comes while a
        # replacement boots waiting for the whole reload mercy; replacing the
        # workers from here, one SIGHUP each, does not.
        if self._process is None or self._reports is None or self._race.requested:
            return False
        if not self._restarting.acquire(blocking=False):
            log.info("SIGHUP: a restart is already under way")
            return True
        threading.Thread(target=self._replace_workers, name="anyserve-uwsgi-restart", daemon=True).start()
        return True

    def _replace_workers(self) -> None:
        assert self._reports is not None
        serving = self._reports.serving_pids
        try:
            for pid in sorted(serving()):
                if self._race.requested:
                    return
                known = serving() | {pid}
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGHUP)  # a uWSGI worker's graceful reload: the master starts another
                deadline = time.monotonic() + RESTART_TIMEOUT
                # Until the replacement serves, even when a stop comes meanwhile (see shutdown).
                while not (serving() - known):
                    if time.monotonic() > deadline or self._process is None or self._process.poll() is not None:
                        log.error("no worker replaced pid %d within %d s; restart given up", pid, RESTART_TIMEOUT)
                        return
                    time.sleep(0.05)
        finally:
            self._restarting.release()


def _relay(stream: IO[bytes], last: deque[str]) -> None:
    """Log uWSGI's lines as they come (the logger ``uwsgi``), keeping the last ones."""
    with stream:
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace").rstrip()
            if not line:
                continue
            last.append(line)
            problem = PROBLEM.search(line) and not AS_ROOT.search(line)
            uwsgi_log.log(logging.WARNING if problem else logging.INFO, "%s", line)


def _children(pid: int) -> list[int]:
    """The child processes of *pid* (uWSGI's workers of its master), from /proc."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(child) for child in fh.read().split()]
    except OSError:
        return []


def _set_options(config: Config) -> list[str]:
    from dataclasses import fields

    return [f.name for f in fields(config) if config.is_set(f.name) or f.name == "app"]
