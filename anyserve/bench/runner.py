"""Run the plan: each server x scenario x concurrency x connection mode, interleaved across repeats.

Every series starts the server as its own process with the real ``anyserve``
command (``python -m anyserve serve -s NAME ...``, the code ``anyserve serve``
runs), times it to its first successful answer, warms it up, measures it while
sampling its processes with psutil (closed loop once; open loop at each rate in
turn, a sweep until it saturates), takes one answer's status and body hash,
and stops it with SIGTERM. A server that cannot start, or answers with an
error, is recorded as failed and the run goes on.
"""

from __future__ import annotations

import hashlib
import http.client
import itertools
import math
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from ..child import python_command
from ..errors import EXIT_BIND
from .load import Generator, LoadError, LoadResult, pin_to
from .loadgen import DRAIN as DRAIN_S
from .scenarios import SCENARIOS, Scenario

SAMPLE_INTERVAL = 0.1
STOP_TIMEOUT = 15.0
#: Above this share of one core used by other processes during a run, the machine was not quiet.
NOISY_SHARE = 0.1
#: Open loop: a server answering less than this share of the requests/s asked for is saturated.
ACHIEVED_SHARE = 0.95
#: The steps of ``--rate sweep`` within each power of ten (about x1.4 each).
SWEEP_STEPS = (1.0, 1.5, 2.0, 3.0, 5.0, 7.0)
#: What a run costs besides its warm-up and measured time (start-up, first answer, stop), for estimates.
RUN_OVERHEAD_S = 1.5


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
    #: Each run once per connection mode: "keep-alive", "close".
    connections: list[str] = field(default_factory=lambda: ["keep-alive"])
    #: Open loop: the requests/s to send at, each measured in turn on one start of the server; None: closed loop.
    rates: list[float] | None = None
    #: Open loop, ``--rate sweep``: rates raised from this one (SWEEP_STEPS) until the server saturates.
    sweep_from: float | None = None
    #: Open loop: a run whose p99 is above this is over budget (saturated, for a sweep).
    latency_budget_ms: float = 50.0
    #: A sweep goes no higher than the load generator's own ceiling, per connection mode, once measured.
    ceiling: dict[str, float] = field(default_factory=dict)

    @property
    def open_loop(self) -> bool:
        return self.rates is not None or self.sweep_from is not None

    def rates_of_series(self, connection: str = "keep-alive") -> list[float | None]:
        """The rates one start of a server is measured at: [None] for a closed loop; a sweep's whole
        ladder, up to the generator's ceiling with this connection mode."""
        if self.sweep_from is not None:
            return sweep_rates(self.sweep_from, self.ceiling.get(connection) or 1e6)
        return list(self.rates) if self.rates is not None else [None]

    def total_runs(self) -> int:
        """The runs of the plan; for a sweep, the most it can make (each server's stops where it saturates)."""
        series = len(self.servers) * len(self.scenarios) * len(self.concurrency) * self.repeat
        return series * sum(len(self.rates_of_series(connection)) for connection in self.connections)

    def estimate_seconds(self) -> float:
        """About how long the plan takes (for a sweep, at most)."""
        starts = len(self.servers) * len(self.scenarios) * len(self.concurrency) * self.repeat * len(self.connections)
        return starts * (RUN_OVERHEAD_S + self.warmup) + self.total_runs() * self.duration

    def order(self) -> list[tuple[Scenario, int, int, str]]:
        """(scenario, concurrency, repeat, server): servers interleaved within each repeat (A B C A B C ...)."""
        return [(s, c, r, server) for s, c, _, r, server in self.series()]

    def series(self) -> list[tuple[Scenario, int, str, int, str]]:
        """(scenario, concurrency, connection, repeat, server): each one start of a server, measured at
        every rate of the series; servers interleaved within each repeat (A B C A B C ...)."""
        return [
            (scenario, concurrency, connection, repeat, server)
            for scenario, concurrency, connection in itertools.product(
                self.scenarios, self.concurrency, self.connections
            )
            for repeat in range(1, self.repeat + 1)
            for server in self.servers
        ]


def sweep_rates(start: float, highest: float) -> list[float]:
    """Rates from *start* up to *highest*, on SWEEP_STEPS in each power of ten: 100, 150, 200, 300, 500, 700, 1000..."""
    rates = [float(start)]
    decade = 10.0 ** math.floor(math.log10(start))
    while rates[-1] < highest:
        steps = [decade * step for step in SWEEP_STEPS if decade * step > rates[-1] * 1.0001]
        if steps:
            rates.append(steps[0])
        else:
            decade *= 10
    if len(rates) > 1 and rates[-1] > highest:
        rates.pop()
    return rates


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
    connection: str = "keep-alive"
    #: Open loop: the requests/s asked for; None for a closed loop.
    rate: float | None = None
    #: The server options this run adds to the plan's (``--tune``: "-w 2 -t 16"), as a label.
    variant: str = ""
    #: Open loop: why the server could not take this rate (p99 over budget, errors, too few answers); None if it did.
    saturated: str | None = None
    #: Status and SHA-256 of the body of one answer after the run: what the app said.
    fingerprint: str | None = None

    @property
    def noisy(self) -> bool:
        """Other processes used more than NOISY_SHARE of a core during the run."""
        if self.load is None or not self.other_cpu_s or not self.load.duration_s:
            return False
        return self.other_cpu_s > NOISY_SHARE * self.load.duration_s

    @property
    def client_bound(self) -> str | None:
        """Open loop: why the load generator, not the server, set the pace; None when it kept the rate."""
        return self.load.client_bound if self.load is not None else None

    def as_dict(self) -> dict[str, Any]:
        data = {key: value for key, value in vars(self).items() if key != "load"}
        data["noisy"] = self.noisy
        data["client_bound"] = self.client_bound
        if self.load is not None:
            data.update(self.load.as_dict())
        return data


def saturation(load: LoadResult, budget_ms: float) -> str | None:
    """Why an open-loop run shows the server saturated at its rate, in a few words; None when it kept up."""
    if load.target_rate is None:
        return None
    if load.errors:
        return f"{load.errors} error(s)"
    if load.unfinished:
        return f"{load.unfinished} request(s) still unanswered {DRAIN_S:g} s after the end"
    p99 = load.latency_ms.get("p99")
    if p99 is None:
        return "no answer"
    if load.requests_per_s < ACHIEVED_SHARE * load.target_rate:
        return f"answered {load.requests_per_s:,.0f} req/s, under {ACHIEVED_SHARE:.0%} of {load.target_rate:,g}"
    if p99 > budget_ms:
        return f"p99 {p99:,.1f} ms over the {budget_ms:g} ms budget"
    return None


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
    connection = plan.connections[0] if plan.connections else "keep-alive"
    rate = plan.rates[0] if plan.rates else None
    return measure_series(
        server, scenario, concurrency, repeat, plan, [rate], connection, generator=generator, command=command
    )[0]


def measure_series(
    server: str,
    scenario: Scenario,
    concurrency: int,
    repeat: int,
    plan: Plan,
    rates: Sequence[float | None],
    connection: str = "keep-alive",
    *,
    generator: Generator | None = None,
    command: Callable[[int], list[str]] | None = None,
    stop_when_saturated: bool = False,
    on_start: Callable[[Run], None] | None = None,
    on_progress: Callable[[Run, dict[str, float]], None] | None = None,
) -> list[Run]:
    """Start *server* once, warm it up, measure it at each of *rates* in turn (None: closed loop), stop it.

    An open-loop run whose load generator could not keep the rate is measured once more
    (the first kept as discarded). With *stop_when_saturated* (a sweep), the series ends
    at the first rate the server could not take, or the load generator could not keep."""
    generator = generator or plan.generator
    runs: list[Run] = []
    if command is None:

        def command(port: int) -> list[str]:
            return server_command(server, port, scenario, plan.server_args)

    def new_run(rate: float | None) -> Run:
        return Run(server, scenario.name, concurrency, repeat, connection=connection, rate=rate)

    for attempt in range(2):  # a port taken between choosing it and binding it gets one more try
        port = free_port()
        process = ServerProcess(command(port), plan.cwd, plan.server_cpus)
        runs = []
        startup = None
        try:
            startup = process.wait_first_answer(port, scenario, plan.start_timeout)
            url = f"http://127.0.0.1:{port}{scenario.path}"
            if plan.warmup > 0:
                generator.run(url, scenario, concurrency, plan.warmup, connection=connection)
            for rate in rates:
                for again in (False, True):
                    run = new_run(rate)
                    run.startup_s = startup
                    runs.append(run)
                    if on_start:
                        on_start(run)
                    progress = None if on_progress is None else partial(on_progress, run)
                    sampler = Sampler(process.proc.pid)
                    sampler.start()
                    try:
                        run.load = generator.run(
                            url, scenario, concurrency, plan.duration, rate=rate, connection=connection,
                            on_progress=progress,
                        )  # fmt: skip
                    finally:
                        sampler.stop()
                    if process.proc.poll() is not None:
                        raise RunFailed(f"the server exited during the run: {process.failure()}")
                    run.server_rss_peak_bytes = sampler.peak_rss
                    run.server_cpu_s = round(sampler.cpu_seconds, 3)
                    # CPU the rest of the machine used meanwhile: other work competing with what is measured.
                    run.other_cpu_s = round(
                        max(0.0, sampler.machine_busy_s - sampler.cpu_seconds - run.load.client_cpu_s), 3
                    )
                    run.saturated = saturation(run.load, plan.latency_budget_ms)
                    if again or not run.client_bound:
                        break
                    # The client fell behind (a moment of other load on its CPU, often): once more.
                    run.discarded = True
                if stop_when_saturated and (run.saturated or run.client_bound):
                    break
            answer = fingerprint(port, scenario)
            for run in runs:
                run.fingerprint = answer
        except RunFailed as exc:
            if process.proc.returncode == EXIT_BIND and attempt == 0:
                continue
            run = runs[-1] if runs else new_run(rates[0] if rates else None)
            if not runs:
                runs.append(run)
                run.startup_s = startup
            run.status, run.error, run.load = "failed", str(exc), None
        except LoadError as exc:
            run = runs[-1] if runs else new_run(rates[0] if rates else None)
            if not runs:
                runs.append(run)
            run.status, run.error, run.load = "failed", f"load generator: {exc}", None
        except BaseException:  # Ctrl-C: no graceful drain of requests a killed client left behind
            process.kill()
            raise
        finally:
            process.stop()
        break
    for run in runs:
        if run.load is not None:
            if run.load.requests == 0:
                run.status, run.error = "failed", "no request completed"
            elif run.load.errors:
                run.status = "errors"
                run.error = _describe_errors(run.load)
    return runs


def fingerprint(port: int, scenario: Scenario, timeout: float = 10.0) -> str | None:
    """``"200 sha256:..."``: the status and a hash of the body of one answer to the scenario's request."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(scenario.method, scenario.path, body=scenario.body() if scenario.body_size else None)
        response = conn.getresponse()
        body = response.read()
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()
    return f"{response.status} sha256:{hashlib.sha256(body).hexdigest()[:16]}"


def measure_ceiling(plan: Plan, concurrency: int, connection: str, duration: float) -> Run:
    """The load generator's own ceiling: its closed-loop requests/s against a trivial asyncio responder
    (:mod:`anyserve.bench.responder`), on the same CPUs as the servers."""
    scenario = SCENARIOS["hello"]
    ceiling = replace(plan, warmup=min(plan.warmup, 1.0), duration=duration, rates=None, sweep_from=None)

    def command(port: int) -> list[str]:
        return python_command("anyserve.bench.responder", str(port))

    return measure_series("responder", scenario, concurrency, 1, ceiling, [None], connection, command=command)[0]


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


def measure_series_quietly(retries: int, *args: Any, **kwargs: Any) -> list[Run]:
    """measure_series(), again up to *retries* times while the machine was busy during one of its
    runs: every run taken, the busy series first (marked discarded), the one kept last."""
    taken: list[Run] = []
    for attempt in range(retries + 1):
        runs = measure_series(*args, **kwargs)
        if attempt == retries or not any(run.noisy for run in runs):
            return taken + runs
        for run in runs:
            run.discarded = True
        taken += runs
    return taken


def run_plan(
    plan: Plan,
    on_start: Callable[[Run], None] | None = None,
    on_run: Callable[[Run], None] | None = None,
    on_skip: Callable[[Run], None] | None = None,
    runs: list[Run] | None = None,
    on_progress: Callable[[Run, dict[str, float]], None] | None = None,
) -> list[Run]:
    """Every run of the plan, in its interleaved order. A server that failed to start on a
    scenario is not started again for that scenario, concurrency and connection mode (its
    error would not change). A sweep stops each server's series where it saturated.

    Runs are appended to *runs* as they end, so an interrupted caller keeps the finished ones."""
    runs = [] if runs is None else runs
    failed: set[tuple[str, str, int, str]] = set()
    for scenario, concurrency, connection, repeat, server in plan.series():
        rates = plan.rates_of_series(connection)
        key = (server, scenario.name, concurrency, connection)
        if key in failed:
            if on_skip:
                for rate in rates:
                    on_skip(Run(server, scenario.name, concurrency, repeat, connection=connection, rate=rate))
            continue
        series = measure_series_quietly(
            plan.retry_noisy,
            server,
            scenario,
            concurrency,
            repeat,
            plan,
            rates,
            connection,
            stop_when_saturated=plan.sweep_from is not None,
            on_start=on_start,
            on_progress=on_progress,
        )
        for run in series:
            if run.status == "failed" and not run.discarded:
                failed.add(key)
            runs.append(run)
            if on_run and not run.discarded:
                on_run(run)
        kept = [run for run in series if not run.discarded]
        if on_skip and plan.sweep_from is not None:  # the steps of the ladder a saturated server did not take
            for rate in rates[len(kept) :]:
                on_skip(Run(server, scenario.name, concurrency, repeat, connection=connection, rate=rate))
    return runs


def available_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
