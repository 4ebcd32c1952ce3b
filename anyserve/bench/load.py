"""What a load generator reports for one run, and how it is started on the client CPUs."""

from __future__ import annotations

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

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["client_cpu_share"] = round(self.client_cpu_share, 3)
        return data


class LoadError(Exception):
    """The load generator could not run or produced no measurement."""


class Generator:
    """A load generator: a name and version for the report, and ``run()``."""

    name: str = ""

    def version(self) -> str:
        raise NotImplementedError

    def run(self, url: str, scenario: Scenario, concurrency: int, duration: float) -> LoadResult:
        raise NotImplementedError


def pin_to(cpus: Sequence[int] | None) -> Callable[[], None] | None:
    """A ``preexec_fn`` pinning the child to *cpus* before it execs (so all its threads are pinned)."""
    if not cpus:
        return None
    chosen = set(cpus)
    return lambda: os.sched_setaffinity(0, chosen)


def run_measured(command: list[str], cpus: Sequence[int] | None, timeout: float) -> tuple[int, str, str, float]:
    """Run *command* to its end: exit code, stdout, stderr, and the CPU seconds it used (from wait4)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=err, preexec_fn=pin_to(cpus))
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
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if proc.returncode == -signal.SIGKILL:
        raise LoadError(f"{os.path.basename(command[0])} did not finish within {timeout:.0f} s")
    return proc.returncode, stdout, stderr, usage.ru_utime + usage.ru_stime
