"""Event-loop servers, through anyserve and started by hand, side by side in one run.

    python benchmarks/event_loop_servers.py [--duration 5] [--repeat 3]

Three comparisons, measured with wrk (keep-alive connections), the server pinned
to CPU 0 and wrk to CPU 1 when the machine has two, the variants interleaved
across repeats (A B C A B C ...) and the median of the repeats reported:

1. blocking app (each request sleeps 50 ms), 32 connections: anyserve -s tornado
   against Tornado's default ``WSGIContainer(app)``;
2. hello app, 32 connections, the same 10 threads where the server has threads:
   anyserve against each raw server started the way its own docs show
   (tornado, twisted, gevent, eventlet).

anyserve runs with --log-level warning, so neither side writes an access log.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ANYSERVE = str(Path(sys.executable).parent / "anyserve")
PIN = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError("server did not listen")


def wrk(port: int, connections: int, duration: float) -> float:
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "10s",
        f"http://127.0.0.1:{port}/",
    ]
    if PIN:
        command = ["taskset", "-c", "1", *command]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", output)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if match is None or errors:
        raise RuntimeError(f"wrk failed or saw errors:\n{output}")
    return float(match.group(1))


def measure(command: list[str], port: int, connections: int, duration: float) -> float:
    if PIN:
        command = ["taskset", "-c", "0", *command]
    proc = subprocess.Popen(command, cwd=HERE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc)
        wrk(port, connections, 1.0)  # warm-up
        return wrk(port, connections, duration)
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """TERM, and KILL what is still running 30 s later."""
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def anyserve(server: str, app: str, threads: int | None) -> callable:
    def command(port: int) -> list[str]:
        extra = ["-t", str(threads)] if threads else []
        return [
            ANYSERVE,
            "-s",
            server,
            "-b",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
            "--app-dir",
            str(HERE),
            *extra,
            f"scenario_apps:{app}",
        ]

    return command


def raw(name: str, app: str, threads: int = 10) -> callable:
    def command(port: int) -> list[str]:
        return [sys.executable, str(HERE / "raw_servers.py"), name, str(port), app, str(threads)]

    return command


COMPARISONS = [
    # (title, connections, [(label, command factory)])
    (
        "blocking app (50 ms per request), 32 connections",
        32,
        [
            ("Tornado WSGIContainer(app), as its docs show", raw("tornado-default", "blocking")),
            ("anyserve -s tornado -t 32", anyserve("tornado", "blocking", 32)),
        ],
    ),
    (
        "hello app, 32 connections, 10 threads",
        32,
        [
            ("tornado, raw (WSGIContainer + ThreadPoolExecutor(10))", raw("tornado", "hello")),
            ("anyserve -s tornado -t 10", anyserve("tornado", "hello", 10)),
            ("twisted, raw (WSGIResource on the reactor pool of 10)", raw("twisted", "hello")),
            ("anyserve -s twisted -t 10", anyserve("twisted", "hello", 10)),
            ("gevent, raw (WSGIServer(('127.0.0.1', port), app))", raw("gevent", "hello")),
            ("anyserve -s gevent", anyserve("gevent", "hello", None)),
            ("eventlet, raw (eventlet.wsgi.server(eventlet.listen(...), app))", raw("eventlet", "hello")),
            ("anyserve -s eventlet", anyserve("eventlet", "hello", None)),
        ],
    ),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=5, help="seconds per run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", default="", help="run the pairs whose raw label contains this")
    args = parser.parse_args()
    print(
        f"wrk -t1, keep-alive; {args.duration:g} s per run, median of {args.repeat} interleaved repeats; "
        f"server/wrk pinned to separate CPUs: {PIN}\n"
    )
    for title, connections, all_variants in COMPARISONS:
        pairs = [all_variants[i : i + 2] for i in range(0, len(all_variants), 2)]
        variants = [v for pair in pairs if args.only in pair[0][0] for v in pair]
        if not variants:
            continue
        results: dict[str, list[float]] = {label: [] for label, _ in variants}
        for _ in range(args.repeat):
            for label, factory in variants:
                port = free_port()
                results[label].append(measure(factory(port), port, connections, args.duration))
        print(f"### {title}\n\n| server | req/s (median) | runs | ratio |\n|---|---:|---|---:|")
        baseline = None
        for i, (label, _) in enumerate(variants):
            median = statistics.median(results[label])
            if i % 2 == 0:
                baseline = median
            ratio = "" if i % 2 == 0 else f"{median / baseline:.2f}"
            runs = ", ".join(f"{r:.0f}" for r in results[label])
            print(f"| {label} | {median:.0f} | {runs} | {ratio} |")
        print()


if __name__ == "__main__":
    main()
