"""The built-in load generator: asyncio, N connections, raw HTTP/1.1; closed or open loop.

Used when wrk is not on PATH, and for every open-loop run (wrk has no fixed
rate). It runs as its own process, so it can be pinned to the client CPUs and
its CPU time is its own:

    python -m anyserve.bench.loadgen URL -c 32 -d 10 [--rate 500] [--close] [--method POST --body-size 1048576]

and prints one JSON object: requests, duration, latency percentiles, non-2xx
responses, socket errors and its own CPU seconds (``time.process_time()``);
with ``--progress``, a line on stderr every half second with the requests/s
and p99 so far.

Closed loop: each connection sends its next request when the previous answer
arrived. Open loop (``--rate R``): request i is due at ``start + i / R``; the
due requests wait in one queue that every connection takes from, and each
latency counts from when the request was due, so time spent queued behind a
stalled server is in the percentiles (no coordinated omission). A request that
found a connection free when it was due but was written more than LATE_AFTER
later was held up by the client itself: it is counted as late, and a run with
too many late requests measured the client, not the server. Its requests/s
counts the answers in a window as long as the run, shifted by the median
latency: the answers to a run's last requests arrive after its end, and a
server that keeps up answers at the rate asked for, one that cannot at its own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import urllib.parse
from collections.abc import Sequence
from typing import Any

from ..child import python_command
from .load import (
    PROGRESS_PREFIX,
    Generator,
    LoadError,
    LoadResult,
    ProgressCallback,
    no_socket_errors,
    run_measured,
)
from .scenarios import Scenario
from .stats import Reservoir, percentile

#: A request still unanswered this long after it was sent counts as a timeout, as in wrk.
REQUEST_TIMEOUT = 10.0
#: Open loop: how long after the end the answers to requests due in the window are still waited for.
DRAIN = 2.0
#: Open loop: a request written this long after it was due, a connection being free, was sent late.
LATE_AFTER = 0.01
#: How often the progress line is written (--progress).
PROGRESS_INTERVAL = 0.5


class Counters:
    def __init__(self, progress: bool = False) -> None:
        self.progress = progress
        self.latencies = Reservoir()
        self.non_2xx = 0
        self.errors = no_socket_errors()
        self.in_flight: dict[int, float] = {}
        self.connections = 0
        #: Latencies since the last progress line.
        self.recent: list[float] = []
        #: Open loop: requests the client sent late; when each answer arrived.
        self.late = 0
        self.answered_at: list[float] = []

    def record(self, latency_s: float, status: int) -> None:
        ms = latency_s * 1000
        self.latencies.add(ms)
        if self.progress:
            self.recent.append(ms)
        if not 200 <= status < 400:
            self.non_2xx += 1


def build_request(url: str, method: str, body: bytes, close: bool = False) -> tuple[str, int, bytes]:
    """Host, port and the bytes of the request repeated on every connection."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"expected an http:// URL, got {url!r}")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host_header = parts.netloc
    head = f"{method} {target} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: anyserve-bench\r\n"
    if close:
        head += "Connection: close\r\n"
    if body or method in ("POST", "PUT", "PATCH"):
        head += f"Content-Type: application/octet-stream\r\nContent-Length: {len(body)}\r\n"
    return parts.hostname, parts.port or 80, (head + "\r\n").encode("latin-1") + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one response, body included; return its status and whether the connection stays open."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    status = int(rest[:3])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip().lower()
    connection = headers.get("connection", "")
    keep_alive = "keep-alive" in connection if version == "HTTP/1.0" else "close" not in connection
    if status in (204, 304) or 100 <= status < 200:
        return status, keep_alive
    if "chunked" in headers.get("transfer-encoding", ""):
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                    pass
                break
            await reader.readexactly(size + 2)
    elif "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    else:
        await reader.read()  # until the server closes
        keep_alive = False
    return status, keep_alive


class Client:
    """One connection to the server, opened again whenever it was closed; socket errors counted."""

    def __init__(self, host: str, port: int, request: bytes, close: bool, counters: Counters) -> None:
        self.host, self.port, self.request, self.close_each = host, port, request, close
        self.counters = counters
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> bool:
        try:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=2**20)
        except OSError:
            self.counters.errors["connect"] += 1
            return False
        self.counters.connections += 1
        return True

    async def exchange(self) -> int | None:
        """Send the request and read the whole answer: its status, or None after a socket error.

        A kept-alive connection the server closed while it was idle (its
        keep-alive timeout, perhaps with a 408) is opened again, as HTTP clients
        do: that is no error."""
        if self.reader is not None and self.reader.at_eof():
            self.close()  # the server closed it while idle
        for attempt in (1, 2):
            reused = self.writer is not None
            if self.writer is None and not await self.connect():
                await asyncio.sleep(0.01)
                return None
            assert self.reader is not None and self.writer is not None
            try:
                self.writer.write(self.request)
                await self.writer.drain()
                status, keep_alive = await read_response(self.reader)
            except asyncio.IncompleteReadError as exc:
                self.close()
                if reused and not exc.partial and attempt == 1:
                    continue  # closed as it went idle, before our request: once more, on a new connection
                self.counters.errors["read"] += 1
                return None
            except (asyncio.LimitOverrunError, ValueError):
                self.counters.errors["read"] += 1
                self.close()
                return None
            except OSError:
                self.close()
                if reused and attempt == 1:
                    continue
                self.counters.errors["read"] += 1
                return None
            if status == 408 and reused and attempt == 1:
                # The server's answer to a connection that sent nothing in time
                # (written before it closed, and read here before our own answer):
                # once more, on a new connection, as browsers do.
                self.close()
                continue
            break
        if self.close_each or not keep_alive:
            self.close()
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def closed_loop(client: Client, deadline: float, counters: Counters) -> None:
    """Send, wait for the answer, send again, until *deadline*."""
    key = id(asyncio.current_task())
    try:
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            counters.in_flight[key] = start
            try:
                status = await client.exchange()
            finally:
                counters.in_flight.pop(key, None)
            end = time.perf_counter()
            if status is not None and end <= deadline:  # an answer after the end is not counted, as in wrk
                counters.record(end - start, status)
    finally:
        client.close()


async def open_loop(client: Client, due: asyncio.Queue[float], counters: Counters) -> None:
    """Take the next due request from the queue, send it, count its latency from when it was due."""
    key = id(asyncio.current_task())
    try:
        while True:
            idle_since = time.perf_counter()
            intended = await due.get()
            if idle_since <= intended and time.perf_counter() - intended > LATE_AFTER:
                counters.late += 1  # a connection was free: only the client kept it waiting
            counters.in_flight[key] = intended
            try:
                status = await client.exchange()
            finally:
                counters.in_flight.pop(key, None)
                due.task_done()
            end = time.perf_counter()
            if status is not None:
                counters.record(end - intended, status)
                counters.answered_at.append(end)
    finally:
        client.close()


async def schedule(due: asyncio.Queue[float], start: float, rate: float, count: int) -> None:
    """Put request i in the queue at ``start + i / rate``, for i below *count*."""
    sent = 0
    while sent < count:
        now = time.perf_counter()
        ready = min(count, int((now - start) * rate) + 1)
        while sent < ready:
            due.put_nowait(start + sent / rate)
            sent += 1
        if sent < count:
            await asyncio.sleep(max(0.0, start + sent / rate - time.perf_counter()))


async def report_progress(counters: Counters, start: float) -> None:
    """A line on stderr every PROGRESS_INTERVAL: elapsed seconds, requests/s and p99 since the last line."""
    last = start
    while True:
        await asyncio.sleep(PROGRESS_INTERVAL)
        now = time.perf_counter()
        recent, counters.recent = counters.recent, []
        line = {"elapsed": round(now - start, 2), "rps": round(len(recent) / (now - last), 1)}
        if recent:
            line["p99"] = round(percentile(recent, 99), 3)
        last = now
        sys.stderr.write(PROGRESS_PREFIX + json.dumps(line) + "\n")
        sys.stderr.flush()


async def generate(
    url: str,
    concurrency: int,
    duration: float,
    method: str = "GET",
    body: bytes = b"",
    *,
    rate: float | None = None,
    close: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Run the load for *duration* seconds, closed-loop or at *rate* requests/s; return what was measured."""
    host, port, request = build_request(url, method, body, close)
    counters = Counters(progress)
    clients = [Client(host, port, request, close, counters) for _ in range(concurrency)]
    if not close:  # kept-alive connections are opened before the clock starts, as wrk does
        await asyncio.gather(*(client.connect() for client in clients))
    cpu_start = time.process_time()
    start = time.perf_counter()
    deadline = start + duration
    reporter = asyncio.create_task(report_progress(counters, start)) if progress else None
    scheduled = 0
    unfinished = 0
    if rate is None:
        tasks = [asyncio.create_task(closed_loop(client, deadline, counters)) for client in clients]
        await asyncio.sleep(duration)
        await asyncio.wait(tasks, timeout=0.05)  # let responses about to arrive land
    else:
        due: asyncio.Queue[float] = asyncio.Queue()
        scheduled = max(1, int(duration * rate))
        tasks = [asyncio.create_task(open_loop(client, due, counters)) for client in clients]
        await schedule(due, start, rate, scheduled)
        await asyncio.sleep(max(0.0, deadline - time.perf_counter()))
        drained = asyncio.create_task(due.join())
        await asyncio.wait([drained], timeout=DRAIN)
        drained.cancel()
        # Still unanswered: counted with the time they have waited so far, a lower bound of their latency.
        now = time.perf_counter()
        waiting = [*counters.in_flight.values()]
        while not due.empty():
            waiting.append(due.get_nowait())
        for intended in waiting:
            counters.latencies.add((now - intended) * 1000)
        unfinished = len(waiting)
    now = time.perf_counter()
    counters.errors["timeout"] += sum(1 for sent in counters.in_flight.values() if now - sent >= REQUEST_TIMEOUT)
    for task in [*tasks, *([reporter] if reporter else [])]:
        task.cancel()
    await asyncio.gather(*tasks, *([reporter] if reporter else []), return_exceptions=True)
    elapsed = min(time.perf_counter(), deadline) - start
    answered = counters.latencies.count - unfinished
    # Open loop: the answers in the window of the run shifted by the median latency (see above).
    shift = counters.latencies.percentiles((50.0,)).get("p50", 0.0) / 1000
    pace = sum(1 for t in counters.answered_at if start + shift <= t <= deadline + shift) / duration
    return {
        "requests": answered,
        "requests_per_s": answered / elapsed if rate is None and elapsed else pace,
        "duration_s": elapsed,
        "latency_ms": counters.latencies.percentiles(),
        "non_2xx": counters.non_2xx,
        "socket_errors": counters.errors,
        "cpu_s": time.process_time() - cpu_start,
        "connections": counters.connections,
        "scheduled": scheduled,
        "late": counters.late,
        "unfinished": unfinished,
    }


class BuiltinGenerator(Generator):
    """The asyncio generator above, in its own process on the client CPUs."""

    name = "anyserve-builtin"
    open_loop = True

    def __init__(self, cpus: Sequence[int] | None = None) -> None:
        self.cpus = list(cpus) if cpus else None

    def version(self) -> str:
        from anyserve import __version__

        return f"{__version__} (Python {sys.version.split()[0]}, asyncio)"

    def command(
        self, url: str, scenario: Scenario, concurrency: int, duration: float, rate: float | None, connection: str
    ) -> list[str]:
        command = python_command("anyserve.bench.loadgen", url, "-c", str(concurrency), "-d", str(duration))
        command += ["--method", scenario.method, "--body-size", str(scenario.body_size)]
        if rate is not None:
            command += ["--rate", repr(float(rate))]
        if connection == "close":
            command.append("--close")
        return command

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
        command = self.command(url, scenario, concurrency, duration, rate, connection)
        if on_progress is not None:
            command.append("--progress")
        timeout = duration + REQUEST_TIMEOUT + DRAIN + 30
        code, out, err, _ = run_measured(command, self.cpus, timeout=timeout, on_progress=on_progress)
        if code != 0:
            raise LoadError(f"the built-in load generator exited with {code}: {err.strip()[-500:]}")
        data = json.loads(out)
        return LoadResult(
            requests=data["requests"],
            duration_s=data["duration_s"],
            requests_per_s=data["requests_per_s"],
            latency_ms=data["latency_ms"],
            non_2xx=data["non_2xx"],
            socket_errors=data["socket_errors"],
            client_cpu_s=data["cpu_s"],
            client_cores=1,
            connection=connection,
            target_rate=rate,
            scheduled=data["scheduled"],
            late=data["late"],
            unfinished=data["unfinished"],
            connections=data["connections"],
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m anyserve.bench.loadgen", description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("-c", "--connections", type=int, default=32)
    parser.add_argument("-d", "--duration", type=float, default=10.0, help="seconds")
    parser.add_argument("--rate", type=float, help="open loop: requests per second")
    parser.add_argument("--close", action="store_true", help="a new connection for every request")
    parser.add_argument("--progress", action="store_true", help="a line on stderr every half second")
    parser.add_argument("--method", default="GET")
    parser.add_argument("--body-size", type=int, default=0)
    args = parser.parse_args(argv)
    body = b"x" * args.body_size
    result = asyncio.run(
        generate(
            args.url,
            args.connections,
            args.duration,
            args.method,
            body,
            rate=args.rate,
            close=args.close,
            progress=args.progress,
        )
    )
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
