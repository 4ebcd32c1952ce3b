"""The built-in load generator: asyncio, keep-alive, N connections, raw HTTP/1.1.

Used when wrk is not on PATH. It runs as its own process, so it can be pinned to
the client CPUs and its CPU time is its own:

    python -m anyserve.bench.loadgen URL -c 32 -d 10 [--method POST --body-size 1048576]

and prints one JSON object: requests, duration, latency percentiles, non-2xx
responses, socket errors and its own CPU seconds (``time.process_time()``).
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
from .load import Generator, LoadError, LoadResult, no_socket_errors, run_measured
from .scenarios import Scenario
from .stats import Reservoir

#: A request still unanswered this long after it was sent counts as a timeout, as in wrk.
REQUEST_TIMEOUT = 10.0


class Counters:
    def __init__(self) -> None:
        self.latencies = Reservoir()
        self.non_2xx = 0
        self.errors = no_socket_errors()
        self.in_flight: dict[int, float] = {}


def build_request(url: str, method: str, body: bytes) -> tuple[str, int, bytes]:
    """Host, port and the bytes of the request repeated on every connection."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"expected an http:// URL, got {url!r}")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host_header = parts.netloc
    head = f"{method} {target} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: anyserve-bench\r\n"
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


async def connection(host: str, port: int, request: bytes, deadline: float, counters: Counters) -> None:
    writer: asyncio.StreamWriter | None = None
    key = id(asyncio.current_task())
    try:
        while time.perf_counter() < deadline:
            if writer is None:
                try:
                    reader, writer = await asyncio.open_connection(host, port, limit=2**20)
                except OSError:
                    counters.errors["connect"] += 1
                    await asyncio.sleep(0.01)
                    continue
            start = time.perf_counter()
            counters.in_flight[key] = start
            try:
                writer.write(request)
                await writer.drain()
            except OSError:
                counters.errors["write"] += 1
                writer.close()
                writer = None
                continue
            try:
                status, keep_alive = await read_response(reader)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError, ValueError):
                counters.errors["read"] += 1
                writer.close()
                writer = None
                continue
            finally:
                counters.in_flight.pop(key, None)
            end = time.perf_counter()
            if end <= deadline:  # a response finishing after the end is not counted, as in wrk
                counters.latencies.add((end - start) * 1000)
                if not 200 <= status < 400:
                    counters.non_2xx += 1
            if not keep_alive:
                writer.close()
                writer = None
    finally:
        if writer is not None:
            writer.close()


async def generate(
    url: str, concurrency: int, duration: float, method: str = "GET", body: bytes = b""
) -> dict[str, Any]:
    """Run the load for *duration* seconds and return what was measured."""
    host, port, request = build_request(url, method, body)
    counters = Counters()
    cpu_start = time.process_time()
    start = time.perf_counter()
    deadline = start + duration
    tasks = [asyncio.create_task(connection(host, port, request, deadline, counters)) for _ in range(concurrency)]
    await asyncio.sleep(duration)
    await asyncio.wait(tasks, timeout=0.05)  # let responses about to arrive land
    now = time.perf_counter()
    counters.errors["timeout"] += sum(1 for sent in counters.in_flight.values() if now - sent >= REQUEST_TIMEOUT)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    elapsed = min(time.perf_counter(), deadline) - start
    return {
        "requests": counters.latencies.count,
        "duration_s": elapsed,
        "latency_ms": counters.latencies.percentiles(),
        "non_2xx": counters.non_2xx,
        "socket_errors": counters.errors,
        "cpu_s": time.process_time() - cpu_start,
    }


class BuiltinGenerator(Generator):
    """The asyncio generator above, in its own process on the client CPUs."""

    name = "anyserve-builtin"

    def __init__(self, cpus: Sequence[int] | None = None) -> None:
        self.cpus = list(cpus) if cpus else None

    def version(self) -> str:
        from anyserve import __version__

        return f"{__version__} (Python {sys.version.split()[0]}, asyncio)"

    def run(self, url: str, scenario: Scenario, concurrency: int, duration: float) -> LoadResult:
        command = python_command("anyserve.bench.loadgen", url, "-c", str(concurrency), "-d", str(duration))
        command += ["--method", scenario.method, "--body-size", str(scenario.body_size)]
        code, out, err, _ = run_measured(command, self.cpus, timeout=duration + REQUEST_TIMEOUT + 30)
        if code != 0:
            raise LoadError(f"the built-in load generator exited with {code}: {err.strip()[-500:]}")
        data = json.loads(out)
        return LoadResult(
            requests=data["requests"],
            duration_s=data["duration_s"],
            requests_per_s=data["requests"] / data["duration_s"] if data["duration_s"] else 0.0,
            latency_ms=data["latency_ms"],
            non_2xx=data["non_2xx"],
            socket_errors=data["socket_errors"],
            client_cpu_s=data["cpu_s"],
            client_cores=1,
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m anyserve.bench.loadgen", description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("-c", "--connections", type=int, default=32)
    parser.add_argument("-d", "--duration", type=float, default=10.0, help="seconds")
    parser.add_argument("--method", default="GET")
    parser.add_argument("--body-size", type=int, default=0)
    args = parser.parse_args(argv)
    body = b"x" * args.body_size
    result = asyncio.run(generate(args.url, args.connections, args.duration, args.method, body))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
