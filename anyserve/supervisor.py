"""Pre-fork workers for the servers that have no process model of their own.

The parent binds the listeners and forks ``--workers`` processes that each run
the adapter on the inherited sockets; the kernel spreads the connections over
them. The parent serves nothing. It

- imports the app only with ``--preload`` (each worker does otherwise, so
  nothing the app starts at import time, a thread say, exists before a fork,
  and SIGHUP loads new code); the CherryPy engine always starts in the workers;
- replaces a worker that dies, at once after a long life, with growing pauses
  when workers keep dying young, and says why each one ended;
- on TERM/INT asks every worker to stop gracefully and waits up to
  ``--graceful-timeout`` (plus a grace second) before killing what is left; a
  second INT kills at once;
- on HUP replaces the workers one at a time, each only once its replacement
  serves, so no request is refused; a replacement that fails to boot ends the
  restart and the old workers go on;
- on TTIN adds a worker, on TTOU removes one (never the last).

A worker says over a pipe when it serves. If no worker ever served, a boot
failure ends anyserve with the first failing worker's own error line and exit
code (:class:`anyserve.workers.BootReports`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NoReturn

from .errors import EXIT_FAILURE, AnyserveError, Reported
from .logs import reopen_log_files_soon
from .notify import notify
from .plan import Plan
from .server import Server, log_listening
from .signals import serve_until_signalled
from .sockets import Listener
from .workers import BootReports, die_with_parent, process_title, set_process_title

log = logging.getLogger("anyserve.supervisor")

READY = b"R"
#: A worker that lived this long before dying is replaced at once.
HEALTHY_AFTER = 5.0
MAX_PAUSE = 10.0
#: How long a HUP replacement may take to serve before the restart is given up.
BOOT_TIMEOUT = 60.0
PARENT_SIGNALS = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGCHLD,
    signal.SIGUSR1,
)


@dataclass
class Worker:
    number: int
    pid: int
    pipe: int  # read end: READY once it serves
    born: float = field(default_factory=time.monotonic)
    ready: bool = False
    retiring: bool = False  # asked to stop by the supervisor
    replaces: int | None = None  # pid of the worker it takes over from (HUP)


class Supervisor:
    """Fork ``--workers`` workers on the bound listeners, keep them alive, stop them gracefully."""

    def __init__(
        self, plan: Plan, listeners: list[Listener], *, serving: Callable[[Server], object] | None = None
    ) -> None:
        self.plan = plan
        self.config = plan.config
        self.listeners = listeners
        self.serving = serving  # in each worker, with its Server
        self.target = self.config.workers
        self.workers: dict[int, Worker] = {}
        self.signals: deque[int] = deque()
        self.interrupts = 0
        self.ever_served = False
        self.announced = False
        self.pause = 0.0
        self.respawn_at = 0.0
        self.hup_queue: list[int] = []  # old workers still to be replaced
        self._wake_r = self._wake_w = -1
        self.reports = BootReports()
        self.pid = os.getpid()
        self.described = plan.adapter.described()

    # -- the parent ------------------------------------------------------------------

    def run(self) -> None:
        set_process_title(process_title(self.plan.adapter.name, self.config.app, "master"))
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in PARENT_SIGNALS}
        try:
            for number in range(1, self.target + 1):
                self.spawn(number)
            self.loop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for listener in self.listeners:
                listener.close()
            self.reports.close()

    def _on_signal(self, signum: int, frame: object) -> None:
        if signum == signal.SIGINT:
            self.interrupts += 1
            if self.interrupts > 1:
                self.kill_all(signal.SIGKILL)
                log.warning("Second interrupt: workers killed without waiting for their requests")
                os._exit(1)
        self.signals.append(signum)
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b".")

    def loop(self) -> None:
        while True:
            pipes = {worker.pipe: worker for worker in self.workers.values() if worker.pipe >= 0}
            try:
                readable, _, _ = select.select([self._wake_r, *pipes], [], [], 0.5)
            except InterruptedError:  # pragma: no cover - Python retries since 3.5
                readable = []
            if self._wake_r in readable:
                os.read(self._wake_r, 4096)
            for fd in readable:
                if fd in pipes:
                    self.read_report(pipes[fd])
            self.reap()
            while self.signals:
                signum = self.signals.popleft()
                if signum in (signal.SIGTERM, signal.SIGINT):
                    self.stop(signum)
                    return
                if signum == signal.SIGHUP:
                    self.restart_all()
                elif signum == signal.SIGTTIN:
                    self.target += 1
                    log.info("SIGTTIN: one more worker (%d)", self.target)
                elif signum == signal.SIGTTOU:
                    self.remove_one()
                elif signum == signal.SIGUSR1:  # logrotate: every process reopens its log files
                    reopen_log_files_soon()
                    self.kill_all(signal.SIGUSR1)
            self.advance_restart()
            self.keep_count()

    def spawn(self, number: int, replaces: int | None = None) -> Worker:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the worker process (its coverage is not collected)
            os.close(read_end)
            self.worker_main(number, write_end)
        os.close(write_end)
        worker = Worker(number, pid, read_end, replaces=replaces)
        self.workers[pid] = worker
        return worker

    def read_report(self, worker: Worker) -> None:
        try:
            data = os.read(worker.pipe, 65536)
        except OSError:
            data = b""
        if not data:
            os.close(worker.pipe)
            worker.pipe = -1
            return
        if data.startswith(READY) and not worker.ready:
            worker.ready = True
            self.ever_served = True
            self.pause = 0.0
            log.info("Worker %d (pid %d) serving", worker.number, worker.pid)
            if worker.replaces is not None and worker.replaces in self.workers:
                self.retire(self.workers[worker.replaces], "replaced after SIGHUP")
            if not self.announced and sum(w.ready for w in self.workers.values()) >= self.target:
                self.announced = True
                log_listening([listener.url() for listener in self.listeners], self.described, self.target, owner=True)
                notify("READY=1")

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:  # no child left: no worker either
                self.workers.clear()
                return
            if pid == 0:
                return
            worker = self.workers.pop(pid, None)
            if worker is None:
                continue
            if worker.pipe >= 0:
                os.close(worker.pipe)
                worker.pipe = -1
            self.ended(worker, status)

    def ended(self, worker: Worker, status: int) -> None:
        code = os.waitstatus_to_exitcode(status)
        how = f"exit code {code}" if code >= 0 else f"signal {signal.Signals(-code).name}"
        if worker.retiring:
            quiet = code in (0, -signal.SIGTERM)
            (log.info if quiet else log.warning)("Worker %d (pid %d) stopped (%s)", worker.number, worker.pid, how)
            return
        if not worker.ready and not self.ever_served:
            # The first workers cannot boot: the others would fail alike.
            for other in self.workers.values():
                other.retiring = True
            self.kill_all(signal.SIGTERM)
            self.wait_all(self.config.graceful_timeout)
            reported = self.reports.reported()
            if reported is not None:
                raise Reported(reported)  # the worker said why, above
            raise AnyserveError(f"worker {worker.number} exited before serving ({how}); see the lines above")
        if not worker.ready and worker.replaces is not None:
            log.error(
                "Worker %d (pid %d) failed to boot during the SIGHUP restart (%s): the restart is given up and the "
                "old workers go on serving",
                worker.number,
                worker.pid,
                how,
            )
            self.hup_queue.clear()
            return
        lived = time.monotonic() - worker.born
        self.pause = 0.0 if lived >= HEALTHY_AFTER else min(max(self.pause * 2, 0.5), MAX_PAUSE)
        self.respawn_at = time.monotonic() + self.pause
        log.error(
            "Worker %d (pid %d) died after %.1f s (%s); %s",
            worker.number,
            worker.pid,
            lived,
            how,
            f"starting another in {self.pause:.1f} s" if self.pause else "starting another",
        )

    def keep_count(self) -> None:
        """Start a worker for each number from 1 to the target that none has."""
        if time.monotonic() < self.respawn_at:
            return
        taken = {w.number for w in self.workers.values() if not w.retiring}
        for number in range(1, self.target + 1):
            if number not in taken:
                self.spawn(number)

    def retire(self, worker: Worker, why: str) -> None:
        if worker.retiring:
            return
        worker.retiring = True
        log.info("Stopping worker %d (pid %d): %s", worker.number, worker.pid, why)
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.pid, signal.SIGTERM)

    def remove_one(self) -> None:
        if self.target <= 1:
            log.warning("SIGTTOU: one worker left; it stays")
            return
        self.target -= 1
        live = [w for w in self.workers.values() if not w.retiring]
        if len(live) > self.target:
            self.retire(max(live, key=lambda w: w.number), f"SIGTTOU (down to {self.target})")

    def restart_all(self) -> None:
        if self.hup_queue:
            log.info("SIGHUP: a restart is already under way")
            return
        if self.plan.site is not None:
            log.info("SIGHUP: restarting the workers one at a time (with --preload they keep the code loaded at start)")
        else:
            log.info("SIGHUP: restarting the workers one at a time")
        self.hup_queue = sorted((w.pid for w in self.workers.values() if not w.retiring), reverse=True)

    def advance_restart(self) -> None:
        if not self.hup_queue:
            return
        pending = [w for w in self.workers.values() if w.replaces is not None and not w.ready]
        if pending:
            worker = pending[0]
            if time.monotonic() - worker.born > BOOT_TIMEOUT:
                log.error(
                    "Worker %d took over %.0f s to boot; the SIGHUP restart is given up", worker.number, BOOT_TIMEOUT
                )
                self.retire(worker, "too slow to boot")
                self.hup_queue.clear()
            return
        while self.hup_queue:
            old = self.workers.get(self.hup_queue.pop())
            if old is not None and not old.retiring:
                self.spawn(old.number, replaces=old.pid)
                return

    def stop(self, signum: int) -> None:
        notify("STOPPING=1")
        timeout = self.config.graceful_timeout
        log.info(
            "Received %s: stopping the workers gracefully (in-flight requests have %ss)",
            signal.Signals(signum).name,
            timeout,
        )
        for worker in list(self.workers.values()):
            worker.retiring = True
        self.kill_all(signal.SIGTERM)
        # Each worker enforces the timeout itself; the second is for its exit.
        if not self.wait_all(timeout + 1.0):
            log.warning("Workers still running after %ss: killed", timeout)
            self.kill_all(signal.SIGKILL)
            self.wait_all(5.0)
        log.info("Stopped")

    def kill_all(self, signum: int) -> None:
        for pid in list(self.workers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def wait_all(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.workers:
            self.reap()
            if not self.workers:
                break
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    # -- a worker --------------------------------------------------------------------

    def worker_main(self, number: int, pipe: int) -> NoReturn:  # pragma: no cover - runs in the child
        code = 0
        try:
            for sig in PARENT_SIGNALS:
                signal.signal(sig, signal.SIG_DFL)
            os.close(self._wake_r)
            os.close(self._wake_w)
            for worker in self.workers.values():
                if worker.pipe >= 0:
                    os.close(worker.pipe)
            die_with_parent(signal.SIGTERM, parent=self.pid)
            set_process_title(process_title(self.plan.adapter.name, self.config.app, f"worker {number}"))
            server = Server.in_worker(self.plan, self.listeners)

            def ready() -> None:
                self.reports.served()
                os.write(pipe, READY)

            server.lifecycle.subscribe("started", ready, last=True)
            if self.serving is not None:
                self.serving(server)
            serve_until_signalled(server, worker=True)
        except AnyserveError as exc:
            code = self.reports.failed(exc)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else EXIT_FAILURE
        except BaseException:
            traceback.print_exc()
            code = EXIT_FAILURE
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
        os._exit(code)
