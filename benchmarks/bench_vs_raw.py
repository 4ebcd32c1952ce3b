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
import json
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anyserve.bench import runner
from anyserve.bench.command import choose_generator
from anyserve.bench.loadgen import BuiltinGenerator
from anyserve.bench.results import describe_machine
from anyserve.bench.runner import Plan, Run, available_cpus, server_command
from anyserve.bench.scenarios import SCENARIOS
from anyserve.bench.wrk import Wrk
from anyserve.registry import get_adapter

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from raw_servers import RAW  # noqa: E402


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


def anyserve_command(name: str, plan: Plan, extra: list[str]) -> Callable[[int], list[str]]:
    def command(port: int) -> list[str]:
        return server_command(name, port, plan.scenarios[0], [*plan.server_args, *extra])

    return command


def raw_command(name: str, app: str, extra: list[str]) -> Callable[[int], list[str]]:
    def command(port: int) -> list[str]:
        return [sys.executable, str(HERE / "raw_servers.py"), name, str(port), app, *extra]

    return command


def commands(name: str, plan: Plan) -> dict[str, Callable[[int], list[str]]]:
    """What to measure of *name*, by kind: anyserve and by hand alike, and where their
    settings differ, each with its own defaults too."""
    same = SAME_SETTINGS.get(name)
    kinds = {
        "anyserve": anyserve_command(name, plan, same.anyserve if same else []),
        "raw": raw_command(name, "hello", same.raw if same else []),
    }
    if same is not None:
        kinds["raw-defaults"] = raw_command(name, "hello", [])
        if same.anyserve:
            kinds["anyserve-defaults"] = anyserve_command(name, plan, [])
    return kinds


def measure_quietly(retries: int, *args: Any, **kwargs: Any) -> Run:
    """The run kept by runner.measure_quietly, saying which runs the busy machine cost."""
    *busy, run = runner.measure_quietly(retries, *args, **kwargs)
    for discarded in busy:
        print(f"  (busy machine: {discarded.other_cpu_s:.2f} CPU s of other work; measuring again)", file=sys.stderr)
    return run


def rps(run: Run) -> float | None:
    return run.load.requests_per_s if run.load is not None and run.status == "ok" else None


def median(values: list[float | None]) -> float | None:
    measured = [v for v in values if v is not None]
    return statistics.median(measured) if measured else None


def ratio_of(ours: float | None, theirs: float | None) -> str:
    return f"{ours / theirs:.2f}" if ours and theirs else "-"


def ceiling_servers(
    names: list[str], results: dict[str, dict[str, list[float | None]]], only: bool
) -> list[tuple[str, str]]:
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


def cells(values: list[float | None]) -> str:
    return ", ".join("failed" if v is None else f"{v:.0f}" for v in values)


def print_comparison(names: list[str], results: dict[str, dict[str, list[float | None]]], concurrency: int) -> None:
    print(f"\n### hello, c={concurrency}: anyserve bench against each server started by hand\n")
    print("| server | version | same settings | anyserve bench req/s | runs | by hand req/s | runs | ratio |")
    print("|---|---|---|---:|---|---:|---|---:|")
    for name in names:
        ours, theirs = median(results[name]["anyserve"]), median(results[name]["raw"])
        same = SAME_SETTINGS.get(name)
        options = " ".join([*same.anyserve, "--backlog", same.raw[1]] if same else [])
        print(
            f"| {name} | {get_adapter(name).version()} | {options} | {ours or 0:.0f} "
            f"| {cells(results[name]['anyserve'])} | {theirs or 0:.0f} | {cells(results[name]['raw'])} "
            f"| {ratio_of(ours, theirs)} |"
        )
    differing = [name for name in names if name in SAME_SETTINGS]
    if differing:
        print(f"\n### hello, c={concurrency}: the same servers with anyserve's own defaults\n")
        print("| server | why the settings differ | anyserve req/s | runs | by hand req/s | runs | ratio |")
        print("|---|---|---:|---|---:|---|---:|")
        for name in differing:
            defaults = results[name].get("anyserve-defaults", results[name]["anyserve"])
            ours, theirs = median(defaults), median(results[name]["raw-defaults"])
            print(
                f"| {name} | {SAME_SETTINGS[name].why} | {ours or 0:.0f} | {cells(defaults)} "
                f"| {theirs or 0:.0f} | {cells(results[name]['raw-defaults'])} | {ratio_of(ours, theirs)} |"
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5, help="seconds per run (default 5)")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of warm-up per run (default 2)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--only", default="", help="comma-separated servers (default: every installed one)")
    parser.add_argument("--no-ceiling", action="store_true", help="skip the built-in generator's ceiling")
    parser.add_argument("--ceiling-only", action="store_true", help="only the ceiling, against the servers of --only")
    parser.add_argument("--retry-noisy", type=int, default=2, help="re-measure a run on a busy machine (default 2)")
    parser.add_argument("--json", help="write every run here")
    args = parser.parse_args()

    machine = describe_machine()  # its load average before the run
    names = [n for n in (args.only.split(",") if args.only else RAW) if get_adapter(n).is_installed()]
    cpus = available_cpus()
    server_cpus, client_cpus = (cpus[:-1], cpus[-1:]) if len(cpus) >= 2 else (None, None)
    generator = choose_generator(argparse.Namespace(generator="auto", client_threads="1"), client_cpus)
    scenario = SCENARIOS["hello"]
    plan = Plan(
        servers=names,
        scenarios=[scenario],
        concurrency=[args.concurrency],
        duration=args.duration,
        warmup=args.warmup,
        repeat=args.repeat,
        generator=generator,
        server_cpus=server_cpus,
        client_cpus=client_cpus,
        cwd=str(HERE),
    )
    print(
        f"{generator.name} {generator.version()}, hello, c={args.concurrency}, {args.warmup:g} s warm-up + "
        f"{args.duration:g} s per run, {args.repeat} interleaved repeats; server CPUs {server_cpus}, "
        f"client CPUs {client_cpus}",
        file=sys.stderr,
    )
    kinds = {name: commands(name, plan) for name in names}
    results: dict[str, dict[str, list[float | None]]] = {n: {kind: [] for kind in kinds[n]} for n in names}
    runs: list[dict] = []
    for repeat in range(1, args.repeat + 1):
        for name in names if not args.ceiling_only else []:
            for kind, command in kinds[name].items():
                run = measure_quietly(args.retry_noisy, name, scenario, args.concurrency, repeat, plan, command=command)
                results[name][kind].append(rps(run))
                runs.append({"kind": kind, **run.as_dict()})
                other = f"other CPU {run.other_cpu_s:.2f} s" if run.other_cpu_s is not None else ""
                print(
                    f"  {name:<9} {kind:<17} repeat {repeat}: {cells([rps(run)])} {other} {run.error or ''}",
                    file=sys.stderr,
                )

    if not args.ceiling_only:
        print_comparison(names, results, args.concurrency)

    ceilings: dict[str, dict[str, list[float | None]]] = {}
    if not args.no_ceiling and isinstance(generator, Wrk):
        builtin = BuiltinGenerator(cpus=client_cpus)
        for server, why in ceiling_servers(names, results, args.ceiling_only):
            ceiling = ceilings[server] = {"wrk": [], "builtin": []}
            for repeat in range(1, args.repeat + 1):
                for kind, gen in (("wrk", generator), ("builtin", builtin)):
                    run = measure_quietly(
                        args.retry_noisy, server, scenario, args.concurrency, repeat, plan, generator=gen
                    )
                    ceiling[kind].append(rps(run))
                    share = run.load.client_cpu_share if run.load else 0
                    runs.append({"kind": f"ceiling-{kind}", **run.as_dict()})
                    print(
                        f"  ceiling {server:<9} {kind:<8} repeat {repeat}: {cells([rps(run)])}, client CPU {share:.0%}",
                        file=sys.stderr,
                    )
            print(f"\n### load generator ceiling: {server} ({why}), hello, c={args.concurrency}\n")
            print("| generator | req/s | runs |\n|---|---:|---|")
            wrk_rps = median(ceiling["wrk"]) or 0
            print(f"| wrk {generator.version()} (1 thread) | {wrk_rps:.0f} | {cells(ceiling['wrk'])} |")
            print(
                f"| built-in ({builtin.version()}) | {median(ceiling['builtin']) or 0:.0f} "
                f"| {cells(ceiling['builtin'])} |"
            )

    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(
                {
                    "machine": machine,
                    "generator": {"name": generator.name, "version": generator.version()},
                    "settings": vars(args),
                    "results": results,
                    "ceiling": ceilings,
                    "runs": runs,
                },
                fh,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
