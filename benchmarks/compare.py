"""What the comparison scripts share: their common options and the Plan they make, the
commands they start (anyserve, or a server by hand through raw_servers.py), the runs
measured in turn, the Markdown tables and the JSON file.

Every run goes through ``anyserve.bench.runner.measure``: the server pinned to its
CPUs, timed to its first answer, warmed up, measured while psutil samples it, and
measured again while other processes kept the machine busy (``--retry-noisy``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from anyserve.bench import runner
from anyserve.bench.command import choose_generator
from anyserve.bench.load import Generator
from anyserve.bench.runner import NOISY_SHARE, Plan, Run, available_cpus, server_command
from anyserve.bench.scenarios import Scenario
from anyserve.registry import get_adapter

HERE = Path(__file__).resolve().parent

#: port -> the argv that starts a server listening on it.
Command = Callable[[int], list[str]]
#: The runs of each side, by row of a table (a server) and side ("anyserve", "raw", ...).
Results = dict[str, dict[str, list[Run]]]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every comparison script takes, with the same defaults."""
    parser.add_argument("--duration", type=float, default=5, help="seconds per run (default 5)")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of warm-up per run (default 2)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--retry-noisy", type=int, default=2, help="re-measure a run on a busy machine (default 2)")
    parser.add_argument("--json", help="write every run here")


def make_plan(args: argparse.Namespace, servers: list[str], scenarios: list[Scenario], concurrency: int) -> Plan:
    """The Plan of *args*: the server on all CPUs but the last, the load generator on the
    last (wrk with one thread where it is installed), the scripts' folder as the servers'
    working directory so that raw_servers.py finds scenario_apps."""
    cpus = available_cpus()
    server_cpus, client_cpus = (cpus[:-1], cpus[-1:]) if len(cpus) >= 2 else (None, None)
    generator = choose_generator(argparse.Namespace(generator="auto", client_threads="1"), client_cpus)
    return Plan(
        servers=servers,
        scenarios=scenarios,
        concurrency=[concurrency],
        duration=args.duration,
        warmup=args.warmup,
        repeat=args.repeat,
        generator=generator,
        server_cpus=server_cpus,
        client_cpus=client_cpus,
        cwd=str(HERE),
        retry_noisy=args.retry_noisy,
    )


def describe_plan(plan: Plan, what: str) -> None:
    """One line on stderr saying how every run of *plan* is measured."""
    print(
        f"{plan.generator.name} {plan.generator.version()}, {what}, {plan.warmup:g} s warm-up + "
        f"{plan.duration:g} s per run, {plan.repeat} interleaved repeats; server CPUs {plan.server_cpus}, "
        f"client CPUs {plan.client_cpus}",
        file=sys.stderr,
    )


def anyserve_command(name: str, scenario: Scenario, server_args: Sequence[str] = ()) -> Command:
    """``anyserve serve -s NAME [server_args] APP``, as anyserve bench starts it."""

    def command(port: int) -> list[str]:
        return server_command(name, port, scenario, server_args)

    return command


def raw_command(name: str, scenario: Scenario, extra: Sequence[str] = ()) -> Command:
    """*name* started by hand by raw_servers.py, serving the scenario's own app: scenario_apps
    re-exports the apps of anyserve.bench.scenarios under their names, so both sides serve
    the same function."""
    app = scenario.app.rpartition(":")[2]

    def command(port: int) -> list[str]:
        return [sys.executable, str(HERE / "raw_servers.py"), name, str(port), app, *extra]

    return command


@dataclass(frozen=True)
class Variant:
    """One side of a comparison: a server started one way, measured on one scenario."""

    row: str  # the row of the table it belongs to, usually the server
    side: str  # "anyserve", "raw", ...
    server: str  # the server's name, as ``anyserve -s`` takes it
    scenario: Scenario
    concurrency: int
    #: None: ``anyserve serve`` with the plan's server_args.
    command: Command | None = None
    #: None: the plan's generator.
    generator: Generator | None = None


@dataclass
class Recording:
    """Every run measured, as the JSON file holds them, busy ones included."""

    runs: list[dict[str, Any]] = field(default_factory=list)

    def measure(self, plan: Plan, variants: Sequence[Variant], prefix: str = "") -> Results:
        """Each variant once per repeat, in turn (A B C A B C ...), so that drift hits all
        of them alike; a run on a busy machine is measured again (plan.retry_noisy).
        *prefix* goes before each run's side in the JSON and on the progress lines."""
        results: Results = {}
        for variant in variants:
            results.setdefault(variant.row, {})[variant.side] = []
        for repeat in range(1, plan.repeat + 1):
            for v in variants:
                measured = runner.measure_quietly(
                    plan.retry_noisy,
                    v.server,
                    v.scenario,
                    v.concurrency,
                    repeat,
                    plan,
                    generator=v.generator,
                    command=v.command,
                )
                for run in measured:
                    self.runs.append({"kind": prefix + v.side, **run.as_dict()})
                    report(run, f"{v.row:<9} {prefix + v.side:<17}")
                results[v.row][v.side].append(measured[-1])
        return results

    def write(self, path: str, plan: Plan, args: argparse.Namespace, machine: dict[str, Any], **sections: Any) -> None:
        """The machine, the load generator, the settings, *sections* and every run."""
        data = {
            "machine": machine,
            "generator": {"name": plan.generator.name, "version": plan.generator.version()},
            "settings": vars(args),
            **sections,
            "runs": self.runs,
        }
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2)


def report(run: Run, label: str) -> None:
    """One progress line on stderr: the rate, the CPU the server, the client and the rest
    of the machine used, and why a run is measured again or failed."""
    parts = [f"{cells([run])} req/s"]
    if run.startup_s is not None:
        parts.append(f"first answer {run.startup_s:.2f} s")
    if run.server_cpu_s is not None:
        parts.append(f"server CPU {run.server_cpu_s:.2f} s")
    if run.load is not None:
        parts.append(f"client CPU {run.load.client_cpu_s:.2f} s ({run.load.client_cpu_share:.0%})")
    if run.other_cpu_s is not None:
        parts.append(f"other CPU {run.other_cpu_s:.2f} s")
    if run.noisy:
        parts.append("busy machine: measuring again" if run.discarded else "busy machine: kept, no retry left")
    if run.error:
        parts.append(run.error)
    print(f"  {label} repeat {run.repeat}: {', '.join(parts)}", file=sys.stderr)


def rps(run: Run) -> float | None:
    """Requests/s of a run that completed without errors, else None."""
    return run.load.requests_per_s if run.load is not None and run.status == "ok" else None


def rates_of(results: Results) -> dict[str, dict[str, list[float | None]]]:
    """Requests/s by row and side, as the JSON file's results hold them."""
    return {row: {side: [rps(run) for run in runs] for side, runs in sides.items()} for row, sides in results.items()}


def median(runs: list[Run], value: Callable[[Run], float | None] = rps) -> float | None:
    """The median of *value* over the runs that have one."""
    measured = [v for v in map(value, runs) if v is not None]
    return statistics.median(measured) if measured else None


def ratio_of(ours: float | None, theirs: float | None) -> str:
    return f"{ours / theirs:.2f}" if ours and theirs else "-"


def cells(runs: list[Run], value: Callable[[Run], float | None] = rps, digits: int = 0) -> str:
    """*value* of each run, "failed" where it has none, marked * where the machine was busy."""
    shown = ("failed" if v is None else f"{v:.{digits}f}" for v in map(value, runs))
    return ", ".join(text + ("*" if run.noisy else "") for text, run in zip(shown, runs, strict=True))


def print_busy_note(runs: list[Run]) -> None:
    """Under a table: what the * means, when a run kept in it was measured on a busy machine
    (every retry was busy too); its figure says more about the other work than the server."""
    busy = [run for run in runs if run.noisy]
    if busy:
        print(
            f"\nRuns marked * ({len(busy)} of {len(runs)}) were measured while other processes used more than "
            f"{NOISY_SHARE:.0%} of a core (up to {max(run.other_cpu_s or 0 for run in busy):.2f} CPU s in a run) "
            "and no retry was left (--retry-noisy): measure them again on a quiet machine."
        )


@dataclass
class Row:
    """A row of a comparison table: its own cells, then the runs of each side."""

    cells: list[str]
    ours: list[Run]
    theirs: list[Run]


def print_table(
    title: str, columns: list[str], rows: list[Row], ours: str = "anyserve req/s", theirs: str = "by hand req/s"
) -> None:
    """A Markdown table on stdout: *columns*, then each side's median and runs, then the
    ratio of the medians (ours / theirs; 1.0 means anyserve adds nothing)."""
    print(f"\n### {title}\n")
    print("| " + " | ".join([*columns, ours, "runs", theirs, "runs", "ratio"]) + " |")
    print("|" + "---|" * len(columns) + "---:|---|---:|---|---:|")
    for row in rows:
        a, b = median(row.ours), median(row.theirs)
        print(
            f"| {' | '.join(row.cells)} | {a or 0:.0f} | {cells(row.ours)} "
            f"| {b or 0:.0f} | {cells(row.theirs)} | {ratio_of(a, b)} |"
        )
    print_busy_note([run for row in rows for run in (*row.ours, *row.theirs)])


@dataclass(frozen=True)
class Pair:
    """A server through anyserve and the same server started by hand (raw_servers.py)."""

    server: str
    #: How raw_servers.py starts it, in the table's words.
    by_hand: str
    #: Options given to ``anyserve serve``.
    anyserve: tuple[str, ...] = ()
    #: raw_servers.py's NAME, where it is not the server's (tornado-default).
    raw_name: str | None = None
    #: raw_servers.py's arguments after APP_NAME.
    raw: tuple[str, ...] = ()

    def variants(self, scenario: Scenario, concurrency: int) -> list[Variant]:
        ours = anyserve_command(self.server, scenario, self.anyserve)
        theirs = raw_command(self.raw_name or self.server, scenario, self.raw)
        return [
            Variant(self.server, "anyserve", self.server, scenario, concurrency, ours),
            Variant(self.server, "raw", self.server, scenario, concurrency, theirs),
        ]


@dataclass(frozen=True)
class Comparison:
    """Pairs measured on one scenario at one concurrency, interleaved, and their table."""

    title: str
    scenario: Scenario
    concurrency: int
    pairs: tuple[Pair, ...]

    def only(self, servers: Sequence[str]) -> Comparison:
        """The pairs of *servers* that are installed."""
        kept = tuple(p for p in self.pairs if p.server in servers and get_adapter(p.server).is_installed())
        return replace(self, pairs=kept)

    def measure(self, recording: Recording, plan: Plan) -> Results:
        return recording.measure(
            plan, [v for pair in self.pairs for v in pair.variants(self.scenario, self.concurrency)]
        )

    def print_table(self, results: Results) -> None:
        rows = [
            Row(
                [
                    pair.server,
                    get_adapter(pair.server).version() or "",
                    " ".join(["anyserve -s", pair.server, *pair.anyserve]),
                    pair.by_hand,
                ],
                results[pair.server]["anyserve"],
                results[pair.server]["raw"],
            )
            for pair in self.pairs
        ]
        print_table(self.title, ["server", "version", "anyserve", "by hand"], rows)
