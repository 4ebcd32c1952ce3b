"""``anyserve bench`` against each server started by hand, measured the same way in the same run.

    python benchmarks/bench_vs_raw.py [--duration 5] [--repeat 3] [--concurrency 32] [--only cheroot,waitress]
                                      [--no-ceiling | --ceiling-only] [--json FILE]

For every installed server of raw_servers.py, interleaved across repeats
(anyserve A, by hand A, anyserve B, by hand B, ...): the hello scenario through
anyserve bench's own run (the ``anyserve serve`` command it starts), and the same
server started the way its docs show (raw_servers.py), both timed to their first
answer, warmed up and measured by the same load generator on the same CPUs.
The ratio is anyserve / by hand; 1.0 means anyserve adds nothing.

Where anyserve's defaults differ from the server's own, both sides get the same
settings (SAME_SETTINGS), so that the ratio measures what anyserve adds rather
than a different configuration; those servers are also measured as their docs
start them against anyserve's defaults, in a table of their own.

Then the ceiling of the built-in load generator: the fastest server (by the
anyserve median) measured with wrk and with the built-in generator, interleaved;
if that server closes every connection, the fastest that keeps them alive too.
``--ceiling-only --only NAME`` measures just that, against NAME.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from anyserve.bench.loadgen import BuiltinGenerator
from anyserve.bench.results import describe_machine
from anyserve.bench.runner import Plan
from anyserve.bench.scenarios import SCENARIOS, Scenario
from anyserve.bench.wrk import Wrk
from anyserve.registry import get_adapter

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare import (
    Recording,
    Results,
    Row,
    Variant,
    add_arguments,
    anyserve_command,
    cells,
    describe_plan,
    make_plan,
    median,
    print_busy_note,
    print_table,
    rates_of,
    raw_command,
)
from raw_servers import RAW


@dataclass
class Settings:
    """What makes a server by hand and through anyserve run alike, where their defaults differ."""

    anyserve: list[str]  # options given to anyserve
    raw: list[str]  # extra arguments of raw_servers.py: THREADS BACKLOG
    why: str


#: cheroot, CherryPy and socketserver listen with a backlog of 5: at 32 connections
#: some of the load generator's connections then wait in SYN retries (1 s, 3 s),
#: which changes how many requests compete at once. Both sides listen with
#: anyserve's 2048 in the like-for-like comparison.
SAME_SETTINGS: dict[str, Settings] = {
    "cheroot": Settings([], ["10", "2048"], "cheroot listens with a backlog of 5, anyserve with 2048"),
    "cherrypy": Settings([], ["10", "2048"], "CherryPy listens with a backlog of 5, anyserve with 2048"),
    "wsgiref": Settings(
        ["--threads", "1"],
        ["10", "2048"],
        "make_server() serves one connection at a time in its accepting thread and listens with a backlog "
        "of 5; anyserve starts a thread per connection (up to 10) and listens with 2048",
    ),
}


def variants(name: str, scenario: Scenario, concurrency: int) -> list[Variant]:
    """What to measure of *name*, by side: anyserve and by hand alike, and where their
    settings differ, each with its own defaults too."""
    same = SAME_SETTINGS.get(name)
    sides = {
        "anyserve": anyserve_command(name, scenario, same.anyserve if same else []),
        "raw": raw_command(name, scenario, same.raw if same else []),
    }
    if same is not None:
        sides["raw-defaults"] = raw_command(name, scenario)
        if same.anyserve:
            sides["anyserve-defaults"] = anyserve_command(name, scenario)
    return [Variant(name, side, name, scenario, concurrency, command) for side, command in sides.items()]


def ceiling_servers(names: list[str], results: Results, only: bool) -> list[tuple[str, str]]:
    """Which servers to measure the load generators against, and why: the fastest
    through anyserve, and if it closes every connection, the fastest that keeps
    them alive too (the built-in generator pays far more for a new connection)."""
    if only:
        return [(name, "chosen") for name in names]
    by_speed = sorted(names, key=lambda n: median(results[n]["anyserve"]) or 0, reverse=True)
    chosen = [(by_speed[0], "the fastest above")]
    if get_adapter(by_speed[0]).deviations.no_keep_alive:
        alive = [name for name in by_speed if not get_adapter(name).deviations.no_keep_alive]
        if alive:
            chosen.append((alive[0], "the fastest above that keeps connections alive"))
    return chosen


def print_comparison(names: list[str], results: Results, concurrency: int) -> None:
    rows = []
    for name in names:
        same = SAME_SETTINGS.get(name)
        options = " ".join([*same.anyserve, "--backlog", same.raw[1]] if same else [])
        rows.append(
            Row([name, get_adapter(name).version() or "", options], results[name]["anyserve"], results[name]["raw"])
        )
    print_table(
        f"hello, c={concurrency}: anyserve bench against each server started by hand",
        ["server", "version", "same settings"],
        rows,
        ours="anyserve bench req/s",
    )
    differing = [name for name in names if name in SAME_SETTINGS]
    if differing:
        rows = [
            Row(
                [name, SAME_SETTINGS[name].why],
                results[name].get("anyserve-defaults", results[name]["anyserve"]),
                results[name]["raw-defaults"],
            )
            for name in differing
        ]
        print_table(
            f"hello, c={concurrency}: the same servers with anyserve's own defaults",
            ["server", "why the settings differ"],
            rows,
        )


def print_ceiling(server: str, why: str, plan: Plan, builtin: BuiltinGenerator, ceiling: Results, c: int) -> None:
    wrk_runs, builtin_runs = ceiling[server]["wrk"], ceiling[server]["builtin"]
    print(f"\n### load generator ceiling: {server} ({why}), hello, c={c}\n")
    print("| generator | req/s | runs |\n|---|---:|---|")
    print(f"| wrk {plan.generator.version()} (1 thread) | {median(wrk_runs) or 0:.0f} | {cells(wrk_runs)} |")
    print(f"| built-in ({builtin.version()}) | {median(builtin_runs) or 0:.0f} | {cells(builtin_runs)} |")
    print_busy_note([*wrk_runs, *builtin_runs])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--only", default="", help="comma-separated servers (default: every installed one)")
    parser.add_argument("--no-ceiling", action="store_true", help="skip the built-in generator's ceiling")
    parser.add_argument("--ceiling-only", action="store_true", help="only the ceiling, against the servers of --only")
    args = parser.parse_args()

    machine = describe_machine()  # its load average before the run
    names = [n for n in (args.only.split(",") if args.only else RAW) if get_adapter(n).is_installed()]
    scenario = SCENARIOS["hello"]
    plan = make_plan(args, names, [scenario], args.concurrency)
    describe_plan(plan, f"hello, c={args.concurrency}")
    recording = Recording()
    results: Results = {}
    if not args.ceiling_only:
        results = recording.measure(plan, [v for n in names for v in variants(n, scenario, args.concurrency)])
        print_comparison(names, results, args.concurrency)

    ceilings: Results = {}
    if not args.no_ceiling and isinstance(plan.generator, Wrk):
        builtin = BuiltinGenerator(cpus=plan.client_cpus)
        for server, why in ceiling_servers(names, results, args.ceiling_only):
            generators = (("wrk", plan.generator), ("builtin", builtin))
            ceiling = [Variant(server, kind, server, scenario, args.concurrency, generator=g) for kind, g in generators]
            ceilings.update(recording.measure(plan, ceiling, prefix="ceiling-"))
            print_ceiling(server, why, plan, builtin, ceilings, args.concurrency)

    if args.json:
        recording.write(args.json, plan, args, machine, results=rates_of(results), ceiling=rates_of(ceilings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
