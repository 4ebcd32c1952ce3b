"""Pre-fork servers through anyserve and started by hand, and start-up times with workers.

    python benchmarks/prefork_servers.py [--duration 5] [--warmup 2] [--repeat 3] [--startup-repeat 3]
                                         [--only gunicorn,uwsgi] [--skip-throughput | --skip-startup]
                                         [--retry-noisy 2] [--json FILE]

1. The hello scenario, 2 worker processes, 32 connections, each pair measured as
   bench_vs_raw.py measures it (compare.py): started, timed to its first answer,
   warmed up, measured by the same load generator on the same CPUs (every worker
   of the server on the server's CPUs), interleaved across repeats, a run on a busy
   machine measured again, the median reported; the ratio is anyserve / by hand.
   ``gunicorn -w 2`` (as gunicorn's docs show) against ``anyserve -s gunicorn -w 2``;
   ``uwsgi --http-socket ... --master --processes 2`` (as uWSGI's docs show) against
   ``anyserve -s uwsgi -w 2``. Both close the connection after each response (a sync
   worker kept by an idle keep-alive client serves no one else), so the load
   generator reconnects for every request. uWSGI by hand says so with
   ``--add-header "Connection: close"``, as anyserve starts it, and runs without its
   line per request (``--disable-logging``), as anyserve does.
2. The time from the command to the first 200 answer, ``anyserve -s NAME -w 4``
   with the hello scenario, per installed server: the median over
   --startup-repeat runs of the start-up time every run records. Each run then
   serves one second of load, so that a start-up on a busy machine is seen and
   measured again.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from anyserve.bench.results import describe_machine
from anyserve.bench.runner import Plan, Run
from anyserve.bench.scenarios import SCENARIOS
from anyserve.registry import adapters, get_adapter

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare import (
    Comparison,
    Pair,
    Recording,
    Results,
    Variant,
    add_arguments,
    anyserve_command,
    cells,
    describe_plan,
    make_plan,
    median,
    print_busy_note,
    rates_of,
)

CONCURRENCY = 32
HELLO = SCENARIOS["hello"]

THROUGHPUT = Comparison(
    f"hello, c={CONCURRENCY}, 2 workers: pre-fork servers through anyserve and started by hand",
    HELLO,
    CONCURRENCY,
    (
        Pair("gunicorn", "gunicorn -w 2, as its docs show", ("-w", "2"), raw=("--workers", "2")),
        Pair(
            "uwsgi",
            "uwsgi --http-socket --master --processes 2, as its docs show",
            ("-w", "2"),
            raw=("--workers", "2"),
        ),
    ),
)

STARTUP_WORKERS = 4
#: The load after the first answer: the shortest run wrk takes, there to tell a busy machine.
STARTUP_LOAD_S = 1.0


def measure_startup(recording: Recording, plan: Plan, servers: list[str]) -> Results:
    """Each server started with STARTUP_WORKERS workers, interleaved; Run.startup_s is the time."""
    args = ["-w", str(STARTUP_WORKERS)]
    variants = [
        Variant(name, "startup", name, HELLO, CONCURRENCY, anyserve_command(name, HELLO, args)) for name in servers
    ]
    return recording.measure(plan, variants)


def startup_s(run: Run) -> float | None:
    return run.startup_s


def print_startup(servers: list[str], results: Results) -> None:
    print(f"\n### from the command to the first 200, -w {STARTUP_WORKERS} (hello)\n")
    print("| server | version | seconds (median) | runs |\n|---|---|---:|---|")
    for name in servers:
        runs = results[name]["startup"]
        median_s = median(runs, startup_s)
        shown = "failed" if median_s is None else f"{median_s:.2f}"
        print(f"| {name} | {get_adapter(name).version() or ''} | {shown} | {cells(runs, startup_s, digits=2)} |")
    print_busy_note([run for name in servers for run in results[name]["startup"]])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    parser.add_argument("--startup-repeat", type=int, default=3, help="start-ups per server (default 3)")
    parser.add_argument("--only", default="", help="comma-separated servers (default: every installed one)")
    skip = parser.add_mutually_exclusive_group()
    skip.add_argument("--skip-throughput", action="store_true", help="only the start-up times")
    skip.add_argument("--skip-startup", action="store_true", help="only the throughput")
    args = parser.parse_args()

    machine = describe_machine()  # its load average before the run
    chosen = args.only.split(",") if args.only else list(adapters())
    servers = [name for name in chosen if get_adapter(name).is_installed()]
    comparison = THROUGHPUT.only(servers)
    plan = make_plan(args, servers, [HELLO], CONCURRENCY)
    recording = Recording()
    sections: dict[str, Any] = {}
    if comparison.pairs and not args.skip_throughput:
        describe_plan(plan, f"hello, c={CONCURRENCY}, 2 workers")
        results = comparison.measure(recording, plan)
        comparison.print_table(results)
        sections["results"] = rates_of(results)
    if servers and not args.skip_startup:
        startup_plan = dataclasses.replace(plan, warmup=0, duration=STARTUP_LOAD_S, repeat=args.startup_repeat)
        describe_plan(startup_plan, f"start-up with -w {STARTUP_WORKERS}, hello, c={CONCURRENCY}")
        startup = measure_startup(recording, startup_plan, servers)
        print_startup(servers, startup)
        sections["startup"] = {name: [run.startup_s for run in sides["startup"]] for name, sides in startup.items()}
    if args.json:
        recording.write(args.json, plan, args, machine, **sections)
    return 0


if __name__ == "__main__":
    sys.exit(main())
