"""Pre-fork servers through anyserve and started by hand, and start-up times with workers.

    python benchmarks/prefork_servers.py [--duration 5] [--repeat 3] [--startup-repeat 3]

1. hello app, 2 worker processes, 32 keep-alive connections (wrk), the server
   processes on CPU 0 and wrk on CPU 1 when the machine has two, the variants
   interleaved across repeats and the median reported:
   ``gunicorn -w 2 scenario_apps:hello`` (as gunicorn's docs show) against
   ``anyserve -s gunicorn -w 2``; ``uwsgi --http-socket ... --master --processes 2``
   (as uWSGI's docs show) against ``anyserve -s uwsgi -w 2``. Both close the
   connection after each response (a sync worker kept by an idle keep-alive
   client serves no one else), so wrk reconnects for every request. Every side runs without a line per request
   (uWSGI's ``--disable-logging``, anyserve's ``--log-level warning``).
2. time from the command to the first 200 response with ``-w 4``, per server
   (median of --startup-repeat runs).
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import subprocess
import sys
import time
from pathlib import Path

from event_loop_servers import ANYSERVE, HERE, PIN, free_port, measure, stop

BIN = Path(sys.executable).parent


def anyserve(server: str, *extra: str) -> callable:
    def command(port: int) -> list[str]:
        return [ANYSERVE, "-s", server, "-b", f"127.0.0.1:{port}", "--log-level", "warning", *extra]

    return command


def gunicorn_raw(port: int) -> list[str]:
    return [str(BIN / "gunicorn"), "-w", "2", "-b", f"127.0.0.1:{port}", "scenario_apps:hello"]


def uwsgi_raw(socket_option: str) -> callable:
    def command(port: int) -> list[str]:
        return [
            str(BIN / "uwsgi"),
            socket_option,
            f"127.0.0.1:{port}",
            "--master",
            "--processes",
            "2",
            "--module",
            "scenario_apps:hello",
            "--disable-logging",
        ]

    return command


PAIRS = [
    ("gunicorn -w 2 scenario_apps:hello, as its docs show", gunicorn_raw),
    ("anyserve -s gunicorn -w 2", anyserve("gunicorn", "-w", "2", "scenario_apps:hello")),
    ("uwsgi --http-socket --master --processes 2, as its docs show", uwsgi_raw("--http-socket")),
    ("anyserve -s uwsgi -w 2", anyserve("uwsgi", "-w", "2", "scenario_apps:hello")),
]


def first_200(command: list[str], port: int, timeout: float = 60) -> float:
    """Seconds from starting *command* to the first 200 answer on *port*."""
    started = time.monotonic()
    proc = subprocess.Popen(command, cwd=HERE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while time.monotonic() - started < timeout:
            if proc.poll() is not None:
                raise RuntimeError(f"{' '.join(command)} exited with {proc.returncode}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/")
                if conn.getresponse().status == 200:
                    return time.monotonic() - started
            except OSError:
                time.sleep(0.01)
        raise RuntimeError(f"no 200 within {timeout} s")
    finally:
        stop(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=5, help="seconds per run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--startup-repeat", type=int, default=3)
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args()
    if not args.skip_throughput:
        print(
            f"wrk -t1 -c32, keep-alive; {args.duration:g} s per run, median of {args.repeat} interleaved repeats; "
            f"server/wrk pinned to separate CPUs: {PIN}\n"
        )
        results: dict[str, list[float]] = {label: [] for label, _ in PAIRS}
        for _ in range(args.repeat):
            for label, factory in PAIRS:
                port = free_port()
                results[label].append(measure(factory(port), port, 32, args.duration))
        print("### hello app, 2 workers, 32 connections\n")
        print("| server | req/s (median) | runs | ratio |\n|---|---:|---|---:|")
        for i, (label, _) in enumerate(PAIRS):
            median = statistics.median(results[label])
            ratio = "" if i % 2 == 0 else f"{median / statistics.median(results[PAIRS[i - 1][0]]):.2f}"
            runs = ", ".join(f"{r:.0f}" for r in results[label])
            print(f"| {label} | {median:.0f} | {runs} | {ratio} |")
        print()

    from anyserve.registry import adapters

    servers = [name for name, cls in adapters().items() if cls.is_installed()]
    times: dict[str, list[float]] = {name: [] for name in servers}
    for _ in range(args.startup_repeat):
        for name in servers:
            port = free_port()
            times[name].append(first_200(anyserve(name, "-w", "4", "scenario_apps:hello")(port), port))
    print("### from the command to the first 200, -w 4 (hello app)\n")
    print("| server | seconds (median) | runs |\n|---|---:|---|")
    for name in servers:
        runs = ", ".join(f"{t:.2f}" for t in times[name])
        print(f"| {name} | {statistics.median(times[name]):.2f} | {runs} |")


if __name__ == "__main__":
    main()
