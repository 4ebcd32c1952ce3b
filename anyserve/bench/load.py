"""What a load generator reports for one run, and how it is started on the client CPUs.

A run is closed-loop (N connections, each sending its next request when the
previous answer arrived) or open-loop (a fixed rate: request i is due at
``start + i / rate``, and its latency counts from then, so a server that stalls
sees its queue in the percentiles instead of slowing the client down).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .scenarios import Scenario

#: Above this share of one core, the client is likely the bottleneck and the numbers measure it.
CLIENT_CPU_WARNING = 0.8
#: The kinds of socket errors every generator counts, as wrk reports them.
SOCKET_ERROR_KINDS = ("connect", "read", "write", "timeout")
#: The connection modes a run can use: reuse each connection, or a new one per request.
CONNECTION_MODES = ("keep-alive", "close")
#: Above this share of requests sent late by the client itself (and LATE_COUNT_LIMIT of them), an
#: open-loop run measured the client; a few late ones in a short run are the machine's hiccups.
LATE_SHARE_LIMIT = 0.01
LATE_COUNT_LIMIT = 5


def no_socket_errors() -> dict[str, int]:
    """A zero count of each kind of socket error."""
    return dict.fromkeys(SOCKET_ERROR_KINDS, 0)


@dataclass
class LoadResult:
    """One measured run of a load generator against one server."""

    requests: int
    duration_s: float
    requests_per_s: float
    #: p50, p90, p99 and max, in milliseconds; empty when no request completed.
    latency_ms: dict[str, float]
    non_2xx: int = 0
    socket_errors: dict[str, int] = field(default_factory=no_socket_errors)
    client_cpu_s: float = 0.0
    #: How many cores the client could use: its threads, capped by the CPUs it is pinned to.
    client_cores: int = 1
    connection: str = "keep-alive"
    #: Open loop: the requests/s asked for; None for a closed loop.
    target_rate: float | None = None
    #: Open loop: requests due in the measured window, those the client itself sent late
    #: (a connection was free when it was due), and those still unanswered when the run ended.
    scheduled: int = 0
    late: int = 0
    unfinished: int = 0
    #: Connections the client opened (the built-in generator; 0 where unknown).
    connections: int = 0

    @property
    def errors(self) -> int:
        return self.non_2xx + sum(self.socket_errors.values())

    @property
    def client_cpu_share(self) -> float:
        """CPU time over wall time: 1.0 is one core busy the whole run."""
        return self.client_cpu_s / self.duration_s if self.duration_s else 0.0

    @property
    def client_saturated(self) -> bool:
        return self.client_cpu_share > CLIENT_CPU_WARNING * self.client_cores

    @property
    def late_share(self) -> float:
        return self.late / self.scheduled if self.scheduled else 0.0

    @property
    def client_bound(self) -> str | None:
        """Why an open-loop run measured the client rather than the server; None when it kept the rate."""
        if self.target_rate is None or self.late_share <= LATE_SHARE_LIMIT or self.late < LATE_COUNT_LIMIT:
            return None
        return (
            f"the load generator sent {self.late} of {self.scheduled} requests late ({self.late_share:.1%}): "
            f"it could not keep {self.target_rate:g} req/s"
        )

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["client_cpu_share"] = round(self.client_cpu_share, 3)
        data["client_bound"] = self.client_bound
        return data


class LoadError(Exception):
    """The load generator could not run or produced no measurement."""


#: Called with what a generator reports while it runs: ``{"elapsed": s, "rps": ..., "p99": ms}``.
ProgressCallback = Callable[[dict[str, float]], None]


class Generator:
    """A load generator: a name and version for the report, and ``run()``."""

    name: str = ""
    #: Whether it can send at a fixed rate (``run(rate=...)``).
    open_loop: bool = False

    def version(self) -> str:
        raise NotImplementedError

    def run(
        self,
        url: str,
        scenario: Scenario,
        concurrency: int,
        duration: float,
        *,
        rate: float | None = None,
        connection: str = "keep-alive",
        on_progress: ProgressCallback | None = None,
    ) -> LoadResult:
        """Load *url* for *duration* s over *concurrency* connections: closed-loop, or at *rate* req/s."""
        raise NotImplementedError


def pin_to(cpus: Sequence[int] | None) -> Callable[[], None] | None:
    """A ``preexec_fn`` pinning the child to *cpus* before it execs (so all its threads are pinned)."""
    if not cpus:
        return None
    chosen = set(cpus)
    return lambda: os.sched_setaffinity(0, chosen)


#: A line a generator child writes on stderr while it runs, followed by a JSON object.
PROGRESS_PREFIX = "progress "


def run_measured(
    command: list[str],
    cpus: Sequence[int] | None,
    timeout: float,
    on_progress: ProgressCallback | None = None,
) -> tuple[int, str, str, float]:
    """Run *command* to its end: exit code, stdout, stderr, and the CPU seconds it used (from wait4).

    Its stderr lines starting with PROGRESS_PREFIX go to *on_progress* as they come."""
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.PIPE, preexec_fn=pin_to(cpus)
        )
        assert proc.stderr is not None
        errors: list[str] = []
        reader = threading.Thread(
            target=_read_stderr, args=(proc.stderr, errors, on_progress), name="anyserve-bench-generator", daemon=True
        )
        reader.start()
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:  # Ctrl-C: the generator must not outlive the bench
            proc.kill()
            proc.wait()
            raise
        finally:
            timer.cancel()
            reader.join(timeout=5)
            proc.stderr.close()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), "".join(errors)
    if proc.returncode == -signal.SIGKILL:
        raise LoadError(f"{os.path.basename(command[0])} did not finish within {timeout:.0f} s")
    return proc.returncode, stdout, stderr, usage.ru_utime + usage.ru_stime


def _read_stderr(stream: Any, lines: list[str], on_progress: ProgressCallback | None) -> None:
    for raw in stream:
        line = raw.decode(errors="replace")
        if line.startswith(PROGRESS_PREFIX):
            if on_progress is not None:
                try:
                    on_progress(json.loads(line[len(PROGRESS_PREFIX) :]))
                except ValueError:
                    pass
            continue
        lines.append(line)
