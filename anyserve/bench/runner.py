"""Run the plan: each server x scenario x concurrency, interleaved across repeats.

Every run starts the server as its own process with the real ``anyserve``
command (``python -m anyserve serve -s NAME ...``, the code ``anyserve serve``
runs), times it to its first successful answer, warms it up, measures it while
sampling its processes with psutil, and stops it with SIGTERM. A server that
cannot start, or answers with an error, is recorded as failed and the run goes on.
"""

from __future__ import annotations

import http.client
import itertools
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..child import python_command
from ..errors import EXIT_BIND
from .load import Generator, LoadError, LoadResult, pin_to
from .scenarios import Scenario

SAMPLE_INTERVAL = 0.1
STOP_TIMEOUT = 15.0
#: Above this share of one core used by other processes during a run, the machine was not quiet.
NOISY_SHARE = 0.1


@dataclass
class Plan:
    """What to run; every server gets the same scenarios, options and generator."""

    servers: list[str]
    scenarios: list[Scenario]
    concurrency: list[int]
    duration: float
    warmup: float
    repeat: int
    generator: Generator
    #: Options passed to every server, as ``anyserve serve`` takes them (-w, -t, -o, --app-dir ...).
    server_args: list[str] = field(default_factory=list)
    server_cpus: list[int] | None = None
    client_cpus: list[int] | None = None
    start_timeout: float = 30.0
    cwd: str = "."
    #: How many times a run during which the machine was not quiet is measured again.
    retry_noisy: int = 0

    def total_runs(self) -> int:
        return len(self.servers) * len(self.scenarios) * len(self.concurrency) * self.repeat

    def order(self) -> list[tuple[Scenario, int, int, str]]:
        """(scenario, concurrency, repeat, server): servers interleaved within each repeat (A B C A B C ...)."""
        return [
            (scenario, concurrency, repeat, server)
            for scenario, concurrency in itertools.product(self.scenarios, self.concurrency)
            for repeat in range(1, self.repeat + 1)
            for server in self.servers
        ]


@dataclass
class Run:
    """One server measured once on one scenario at one concurrency."""

    server: str
    scenario: str
    concurrency: int
    repeat: int
    status: str = "ok"  # ok | errors (non-2xx or socket errors seen) | failed (nothing measured)
    error: str | None = None
    startup_s: float | None = None
    server_rss_peak_bytes: int | None = None
    server_cpu_s: float | None = None
    other_cpu_s: float | None = None
    #: Measured while the machine was busy, and measured again (kept in the JSON, left out of the summary).
    discarded: bool = False
    load: LoadResult | None = None

    @property
    def noisy(self) -> bool:
        """Other processes used more than NOISY_SHARE of a core during the run."""
        if self.load is None or not self.other_cpu_s or not self.load.duration_s:
            return False
        return self.other_cpu_s > NOISY_SHARE * self.load.duration_s

    def as_dict(self) -> dict[str, Any]:
        data = {key: value for key, value in vars(self).items() if key != "load"}
        data["noisy"] = self.noisy
        if self.load is not None:
            data.update(self.load.as_dict())
        return data


class RunFailed(Exception):
    """The server could not be measured; the message says why, in one line."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_command(server: str, port: int, scenario: Scenario, server_args: Sequence[str]) -> list[str]:
    """The ``anyserve serve`` command line of one run; no access log, so no server pays for one."""
    args = ["serve", "-s", server, "-b", f"127.0.0.1:{port}", "--log-level", "warning", *server_args, scenario.app]
    return python_command("anyserve", *args)


class ServerProcess:
    """One started server: its process, its stderr, a probe for its first answer and a stop that always ends it."""

    def __init__(self, command: list[str], cwd: str, cpus: Sequence[int] | None) -> None:
        self._stderr = tempfile.TemporaryFile()
        self.started_at = time.perf_counter()
        self.proc = subprocess.Popen(
            command,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            preexec_fn=pin_to(cpus),
        )

    def stderr_text(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def failure(self) -> str:
        """Why the process ended, in one line: its own error line, else the last line of its traceback."""
        lines = [line.strip() for line in self.stderr_text().splitlines() if line.strip()]
        for line in reversed(lines):
            if line.startswith("anyserve: error:"):
                return line.removeprefix("anyserve: error:").strip()
        tail = lines[-1] if lines else "no output"
        return f"exited with code {self.proc.returncode}: {tail}"

    def wait_first_answer(self, port: int, scenario: Scenario, timeout: float) -> float:
        """Seconds from the start to the first 2xx/3xx answer to the scenario's request."""
        deadline = self.started_at + timeout
        body = scenario.body() if scenario.body_size else None
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RunFailed(self.failure())
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=max(0.5, deadline - time.perf_counter()))
            try:
                conn.request(scenario.method, scenario.path, body=body)
                response = conn.getresponse()
                response.read()
            except (ConnectionRefusedError, ConnectionResetError):
                time.sleep(0.01)
                continue
            except (OSError, http.client.HTTPException) as exc:
                raise RunFailed(f"no HTTP answer to {scenario.method} {scenario.path}: {exc}") from None
            finally:
                conn.close()
            if not 200 <= response.status < 400:
                raise RunFailed(f"answered {response.status} {response.reason} to {scenario.method} {scenario.path}")
            return time.perf_counter() - self.started_at
        raise RunFailed(f"no answer within {timeout:g} s")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within STOP_TIMEOUT."""
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
        except BaseException:  # Ctrl-C while it drains: leave nothing behind
            self.kill()
            raise
        finally:
            self._stderr.close()

    def kill(self) -> None:
        """SIGKILL the server and every process it started, and reap it."""
        if self.proc.poll() is not None:
            return
        import psutil

        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            children = []
        self.proc.kill()
        for child in children:
            try:
                child.kill()
            except psutil.Error:
                pass
        self.proc.wait()


class Sampler:
    """Peak RSS and CPU seconds of a process and all its children, sampled from a thread."""

    def __init__(self, pid: int, interval: float = SAMPLE_INTERVAL) -> None:
        import psutil

        self._psutil = psutil
        try:
            self._root = psutil.Process(pid)
        except psutil.Error:
            raise RunFailed("the server exited right after its first answer") from None
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="anyserve-bench-sampler", daemon=True)
        self._known: dict[int, Any] = {}
        self.peak_rss = 0
        self._cpu_start: dict[int, float] = {}
        self._cpu_last: dict[int, float] = {}

    def _processes(self) -> list[Any]:
        try:
            found = [self._root, *self._root.children(recursive=True)]
        except self._psutil.Error:
            return []
        for proc in found:  # keep one Process object per pid, so psutil caches what it can
            self._known.setdefault(proc.pid, proc)
        return [self._known[proc.pid] for proc in found]

    def _sample(self) -> None:
        rss = 0
        for proc in self._processes():
            try:
                with proc.oneshot():
                    rss += proc.memory_info().rss
                    times = proc.cpu_times()
            except self._psutil.Error:
                continue
            cpu = times.user + times.system
            self._cpu_start.setdefault(proc.pid, cpu)
            self._cpu_last[proc.pid] = cpu
        self.peak_rss = max(self.peak_rss, rss)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def _machine_busy(self) -> float:
        """CPU seconds the machine spent on processes other than this bench, so far.

        Interrupt time is left out: most of it is the loopback traffic being measured."""
        times = self._psutil.cpu_times()
        own = self._psutil.Process().cpu_times()
        busy = times.user + getattr(times, "nice", 0.0) + times.system + getattr(times, "steal", 0.0)
        return busy - own.user - own.system

    def start(self) -> None:
        self._sample()
        self._busy_start = self._machine_busy()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        self.machine_busy_s = self._machine_busy() - self._busy_start

    @property
    def cpu_seconds(self) -> float:
        """CPU time the processes used between start() and stop()."""
        return sum(self._cpu_last[pid] - self._cpu_start[pid] for pid in self._cpu_last)


def measure(
    server: str,
    scenario: Scenario,
    concurrency: int,
    repeat: int,
    plan: Plan,
    generator: Generator | None = None,
    command: Callable[[int], list[str]] | None = None,
) -> Run:
    """Start *server*, wait for its first answer, warm it up, measure it, stop it.

    *command* (port -> argv) starts something else than ``anyserve serve`` the
    same way, e.g. a server started by hand, for a comparison."""
    run = Run(server, scenario.name, concurrency, repeat)
    generator = generator or plan.generator
    if command is None:

        def command(port: int) -> list[str]:
            return server_command(server, port, scenario, plan.server_args)

    for attempt in range(2):  # a port taken between choosing it and binding it gets one more try
        port = free_port()
        process = ServerProcess(command(port), plan.cwd, plan.server_cpus)
        try:
            run.startup_s = process.wait_first_answer(port, scenario, plan.start_timeout)
            url = f"http://127.0.0.1:{port}{scenario.path}"
            if plan.warmup > 0:
                generator.run(url, scenario, concurrency, plan.warmup)
            sampler = Sampler(process.proc.pid)
            sampler.start()
            try:
                run.load = generator.run(url, scenario, concurrency, plan.duration)
            finally:
                sampler.stop()
            if process.proc.poll() is not None:
                raise RunFailed(f"the server exited during the run: {process.failure()}")
            run.server_rss_peak_bytes = sampler.peak_rss
            run.server_cpu_s = round(sampler.cpu_seconds, 3)
            # CPU the rest of the machine used meanwhile: other work competing with what is measured.
            run.other_cpu_s = round(max(0.0, sampler.machine_busy_s - sampler.cpu_seconds - run.load.client_cpu_s), 3)
        except RunFailed as exc:
            if process.proc.returncode == EXIT_BIND and attempt == 0:
                continue
            run.status, run.error, run.load = "failed", str(exc), None
        except LoadError as exc:
            run.status, run.error, run.load = "failed", f"load generator: {exc}", None
        except BaseException:  # Ctrl-C: no graceful drain of requests a killed client left behind
            process.kill()
            raise
        finally:
            process.stop()
        break
    if run.load is not None:
        if run.load.requests == 0:
            run.status, run.error = "failed", "no request completed"
        elif run.load.errors:
            run.status = "errors"
            run.error = _describe_errors(run.load)
    return run


def measure_quietly(retries: int, *args: Any, **kwargs: Any) -> list[Run]:
    """measure(), again up to *retries* times while the machine was busy during the
    run: every run taken, the busy ones first (marked discarded), the one kept last."""
    runs = [measure(*args, **kwargs)]
    while runs[-1].noisy and len(runs) <= retries:
        runs[-1].discarded = True
        runs.append(measure(*args, **kwargs))
    return runs


def _describe_errors(load: LoadResult) -> str:
    parts = [f"{load.non_2xx} non-2xx/3xx"] if load.non_2xx else []
    parts += [f"{count} {kind}" for kind, count in load.socket_errors.items() if count]
    return "errors: " + ", ".join(parts)


def run_plan(
    plan: Plan,
    on_start: Callable[[str, Scenario, int, int], None] | None = None,
    on_run: Callable[[Run], None] | None = None,
    on_skip: Callable[[str, Scenario, int, int], None] | None = None,
    runs: list[Run] | None = None,
) -> list[Run]:
    """Every run of the plan, in its interleaved order. A server that failed to start on a
    scenario is not started again for that scenario and concurrency (its error would not change).

    Runs are appended to *runs* as they end, so an interrupted caller keeps the finished ones."""
    runs = [] if runs is None else runs
    failed: set[tuple[str, str, int]] = set()
    for scenario, concurrency, repeat, server in plan.order():
        key = (server, scenario.name, concurrency)
        if key in failed:
            if on_skip:
                on_skip(server, scenario, concurrency, repeat)
            continue
        if on_start:
            on_start(server, scenario, concurrency, repeat)
        *discarded, run = measure_quietly(plan.retry_noisy, server, scenario, concurrency, repeat, plan)
        runs += discarded
        if run.status == "failed":
            failed.add(key)
        runs.append(run)
        if on_run:
            on_run(run)
    return runs


def available_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
