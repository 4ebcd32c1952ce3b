"""wrk as the load generator (closed loop): the command, a Lua script for bodies, and its output parsed.

wrk prints human units (``312.45us``, ``15.30k``, ``9.15MB``); :func:`parse_output`
turns one ``wrk --latency`` report into numbers, and refuses one it cannot read.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field

from .load import (
    SOCKET_ERROR_KINDS,
    Generator,
    LoadError,
    LoadResult,
    ProgressCallback,
    no_socket_errors,
    run_measured,
)
from .scenarios import Scenario
from .stats import PERCENTILES

_TIME_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}  # to milliseconds
_METRIC = {"": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
_BINARY = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}
_NUMBER = r"(-?nan|-?inf|[-+]?\d+(?:\.\d+)?)"


def parse_time_ms(text: str) -> float:
    """``'312.45us'`` -> 0.31245; wrk's units are us, ms, s, m and h."""
    match = re.fullmatch(_NUMBER + r"(us|ms|s|m|h)", text.strip())
    if match is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _TIME_UNITS[match.group(2)]


def parse_metric(text: str) -> float:
    """``'15.30k'`` -> 15300.0; wrk's metric suffixes are k, M, G and T."""
    match = re.fullmatch(_NUMBER + r"([kMGT]?)", text.strip())
    if match is None:
        raise ValueError(f"not a wrk count: {text!r}")
    return float(match.group(1)) * _METRIC[match.group(2)]


def parse_bytes(text: str) -> float:
    """``'9.15MB'`` -> 9594470.4 (wrk's byte units are powers of 1024)."""
    match = re.fullmatch(_NUMBER + r"(B|KB|MB|GB|TB)", text.strip())
    if match is None:
        raise ValueError(f"not a wrk size: {text!r}")
    return float(match.group(1)) * _BINARY[match.group(2)]


@dataclass
class WrkOutput:
    """The numbers of one ``wrk --latency`` report."""

    requests: int
    duration_s: float
    requests_per_s: float
    bytes_read: float
    latency_avg_ms: float
    latency_max_ms: float
    #: The "Latency Distribution" lines: {50.0: ms, 75.0: ms, 90.0: ms, 99.0: ms}.
    distribution_ms: dict[float, float]
    non_2xx: int = 0
    socket_errors: dict[str, int] = field(default_factory=no_socket_errors)


_LATENCY_ROW = re.compile(r"^\s*Latency\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)", re.MULTILINE)
_DISTRIBUTION_ROW = re.compile(r"^\s*(\d+(?:\.\d+)?)%\s+(\S+)\s*$", re.MULTILINE)
_TOTALS = re.compile(r"^\s*(\d+) requests in (\S+), (\S+) read", re.MULTILINE)
_RATE = re.compile(r"^Requests/sec:\s+(\S+)", re.MULTILINE)
_NON_2XX = re.compile(r"^\s*Non-2xx or 3xx responses:\s+(\d+)", re.MULTILINE)
_SOCKET_ERRORS = re.compile(r"^\s*Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", re.MULTILINE)


def parse_output(text: str) -> WrkOutput:
    """Parse a ``wrk --latency`` report; ValueError names what is missing."""
    totals = _TOTALS.search(text)
    rate = _RATE.search(text)
    if totals is None or rate is None:
        raise ValueError("no 'N requests in T' and 'Requests/sec:' lines in wrk's output")
    latency = _LATENCY_ROW.search(text)
    distribution: dict[float, float] = {}
    section = text.split("Latency Distribution", 1)
    if len(section) == 2:
        for pct, value in _DISTRIBUTION_ROW.findall(section[1]):
            distribution[float(pct)] = parse_time_ms(value)
    non_2xx = _NON_2XX.search(text)
    socket_errors = _SOCKET_ERRORS.search(text)
    return WrkOutput(
        requests=int(totals.group(1)),
        duration_s=parse_time_ms(totals.group(2)) / 1000,
        requests_per_s=float(rate.group(1)),
        bytes_read=parse_bytes(totals.group(3)),
        latency_avg_ms=parse_time_ms(latency.group(1)) if latency else float("nan"),
        latency_max_ms=parse_time_ms(latency.group(3)) if latency else float("nan"),
        distribution_ms=distribution,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=(
            dict(zip(SOCKET_ERROR_KINDS, map(int, socket_errors.groups()), strict=True))
            if socket_errors
            else no_socket_errors()
        ),
    )


def lua_script(scenario: Scenario) -> str | None:
    """A wrk script sending the scenario's method and body; None for a plain GET."""
    if scenario.method == "GET" and not scenario.body_size:
        return None
    lines = [f'wrk.method = "{scenario.method}"']
    if scenario.body_size:
        lines.append(f'wrk.body = string.rep("x", {scenario.body_size})')
        lines.append('wrk.headers["Content-Type"] = "application/octet-stream"')
    return "\n".join(lines) + "\n"


class Wrk(Generator):
    """wrk, one thread per client CPU at most (``--latency``, 10 s request timeout)."""

    name = "wrk"

    def __init__(self, path: str, threads: int = 1, cpus: Sequence[int] | None = None) -> None:
        self.path = path
        self.threads = threads
        self.cpus = list(cpus) if cpus else None

    @classmethod
    def find(cls) -> str | None:
        return shutil.which("wrk")

    def version(self) -> str:
        try:
            result = subprocess.run([self.path, "--version"], capture_output=True, text=True, timeout=10)
        except OSError as exc:
            raise LoadError(f"cannot run {self.path}: {exc.strerror}") from None
        match = re.search(r"^wrk (\S+)", result.stdout + result.stderr, re.MULTILINE)
        return match.group(1) if match else "unknown"

    def threads_for(self, concurrency: int) -> int:
        """wrk's threads for *concurrency* connections: it needs a connection per thread."""
        return max(1, min(self.threads, concurrency))

    def command(
        self, url: str, concurrency: int, duration: float, script: str | None, connection: str = "keep-alive"
    ) -> list[str]:
        threads = self.threads_for(concurrency)
        # wrk takes whole seconds.
        command = [self.path, f"-t{threads}", f"-c{concurrency}", f"-d{max(1, round(duration))}s"]
        command += ["--timeout", "10s", "--latency"]
        if connection == "close":  # wrk then opens a new connection for every request
            command += ["-H", "Connection: close"]
        if script:
            command += ["-s", script]
        return [*command, url]

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
        if rate is not None:
            raise LoadError("wrk has no fixed-rate mode; open-loop runs use the built-in generator")
        source = lua_script(scenario)
        script = None
        if source is not None:
            with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
                fh.write(source)
                script = fh.name
        try:
            command = self.command(url, concurrency, duration, script, connection)
            code, out, err, cpu = run_measured(command, self.cpus, timeout=duration + 60)
        finally:
            if script:
                os.unlink(script)
        if code != 0:
            raise LoadError(f"wrk exited with {code}: {(err or out).strip().splitlines()[-1:] or ''}")
        try:
            parsed = parse_output(out)
        except ValueError as exc:
            raise LoadError(f"{exc}:\n{out}{err}") from None
        latency = {f"p{pct:g}": parsed.distribution_ms[pct] for pct in PERCENTILES if pct in parsed.distribution_ms}
        if latency:
            latency["max"] = parsed.latency_max_ms
        threads = self.threads_for(concurrency)
        return LoadResult(
            requests=parsed.requests,
            duration_s=parsed.duration_s,
            requests_per_s=parsed.requests_per_s,
            latency_ms=latency if parsed.requests else {},
            non_2xx=parsed.non_2xx,
            socket_errors=parsed.socket_errors,
            client_cpu_s=cpu,
            client_cores=min(threads, len(self.cpus)) if self.cpus else threads,
            connection=connection,
        )
