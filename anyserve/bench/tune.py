"""``anyserve bench --tune``: which workers and threads for this app, per server.

Each server is measured on a small grid of settings: ``--workers`` 1 to the
number of server CPUs, times ``--threads`` (the server's default, 1, 4, 16, 64)
where the server has threads. The settings are ranked by requests/s; the best
for throughput is the one with the fewest workers and threads among those within
5% of the most requests/s (the server's defaults first: no option needed), and
the one with the lowest p99 within the latency budget is named too, each with
the ``anyserve`` command line that serves it. A setting whose answer (status and
body hash, taken after its run) differs from the first run's is reported and
left out of the ranking: a faster wrong answer is no answer. An open-loop run
whose load generator fell behind is ranked by its requests/s but not by its
p99, which holds the client's delay.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..errors import AnyserveError, ConfigError
from .runner import RUN_OVERHEAD_S, Plan, Run, measure_series
from .scenarios import Scenario

#: The thread counts tried where a server has threads; None is the server's own default.
THREADS = (None, 1, 4, 16, 64)
#: The shortest measured time a budget may cut a run to.
MIN_DURATION = 1.0
#: Settings this close to the most requests/s do as well (about the spread of repeated runs): of
#: them, the one with the fewest workers and threads is named, the same throughput for less.
AS_GOOD = 0.05


@dataclass(frozen=True)
class Setting:
    """One point of the grid: worker processes and threads; None leaves the server's default."""

    workers: int | None = None
    threads: int | None = None
    #: The server's own thread count, for the label of the default setting (None: unknown or no threads).
    default_threads: int | None = None

    def args(self) -> list[str]:
        """The options of ``anyserve serve`` that make this setting."""
        return [
            *(["-w", str(self.workers)] if self.workers else []),
            *(["-t", str(self.threads)] if self.threads else []),
        ]

    def label(self) -> str:
        """``-w 2 -t 16``; ``defaults`` (with the server's thread count where it is known)."""
        if self.args():
            return " ".join(self.args())
        n = self.default_threads
        return f"defaults ({n} thread{'s' if n != 1 else ''})" if n else "defaults"


def grid(
    server: str, cores: int, workers: Sequence[int] | None = None, threads: Sequence[int] | None = None
) -> list[Setting]:
    """The settings tried for *server*: *workers* (default 1..cores) x *threads* (default THREADS)
    where the server honours --threads, else its own default alone; a setting the server
    refuses (werkzeug takes --threads 1 only) is left out."""
    from ..registry import get_adapter

    adapter = get_adapter(server)
    capabilities = adapter.capabilities
    default = capabilities.default_threads if capabilities.threads else None
    counts: list[int | None] = list(threads) if threads else list(THREADS)
    if capabilities.threads:  # the default measured once, as "defaults"
        thread_counts = [t for t in counts if t is None or t != default or threads]
    else:
        thread_counts = [None]
    worker_counts = list(workers) if workers else list(range(1, max(1, cores) + 1))
    settings = [Setting(w if w > 1 else None, t, default) for w in worker_counts for t in thread_counts]
    return [setting for setting in dict.fromkeys(settings) if _honoured(adapter, setting)]


def _honoured(adapter: Any, setting: Setting) -> bool:
    """Whether the server takes this setting (as ``anyserve serve`` would check it)."""
    from ..config import Config

    given = {"workers": setting.workers, "threads": setting.threads}
    try:
        adapter.refuse(Config.load(kwargs={key: value for key, value in given.items() if value}))
    except AnyserveError:
        return False
    return True


def fit_budget(plan: Plan, runs: int, budget: float) -> Plan:
    """*plan* with its warm-up and duration cut so that *runs* runs fit in *budget* seconds;
    ConfigError when they cannot, even at MIN_DURATION each."""
    per_run = budget / runs - RUN_OVERHEAD_S
    if per_run >= plan.duration + plan.warmup:
        return plan
    if per_run < MIN_DURATION:
        need = runs * (RUN_OVERHEAD_S + MIN_DURATION)
        raise ConfigError(
            f"--budget {format_seconds(budget)}: {runs} runs need at least {format_seconds(need)} "
            f"({MIN_DURATION:g} s measured each); raise --budget, or narrow the grid with -s, -w or -t"
        )
    warmup = min(plan.warmup, per_run * 0.2)
    return replace(plan, warmup=round(warmup, 2), duration=round(min(plan.duration, per_run - warmup), 2))


def format_seconds(seconds: float) -> str:
    """``95`` -> ``1m35s``."""
    seconds = round(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def run_tune(
    plan: Plan,
    grids: dict[str, list[Setting]],
    budget: float,
    on_start: Callable[[Run], None] | None = None,
    on_run: Callable[[Run], None] | None = None,
    on_progress: Callable[[Run, dict[str, float]], None] | None = None,
    runs: list[Run] | None = None,
) -> bool:
    """Measure every setting of every server on every scenario of *plan*, appending to *runs*;
    False when the budget ran out before the end (the runs after it are not made)."""
    runs = [] if runs is None else runs
    deadline = time.monotonic() + budget
    rate = plan.rates[0] if plan.rates else None
    connection = plan.connections[0]
    for scenario in plan.scenarios:
        for repeat in range(1, plan.repeat + 1):
            for server in plan.servers:
                for setting in grids[server]:
                    if time.monotonic() > deadline:
                        return False
                    setting_plan = replace(plan, server_args=[*setting.args(), *plan.server_args])

                    def started(run: Run, label: str = setting.label()) -> None:
                        run.variant = label
                        if on_start:
                            on_start(run)

                    for run in measure_series(
                        server,
                        scenario,
                        plan.concurrency[0],
                        repeat,
                        setting_plan,
                        [rate],
                        connection,
                        on_start=started,
                        on_progress=on_progress,
                    ):
                        run.variant = setting.label()
                        runs.append(run)
                        if on_run and not run.discarded:
                            on_run(run)
    return True


def command_line(server: str, variant: str, server_args: Sequence[str], scenario: Scenario) -> str:
    """The ``anyserve`` command that serves *scenario*'s app with this setting."""
    args = [] if variant.startswith("defaults") else shlex.split(variant)
    return shlex.join(["anyserve", "-s", server, *args, *server_args, scenario.app])


def rank(report: dict[str, Any], scenarios: Sequence[Scenario]) -> list[dict[str, Any]]:
    """Per scenario: every setting's summary, the consistent ones ranked by requests/s with their
    ratio to the best, and the best setting for throughput and for p99 within the latency budget."""
    budget = report["settings"]["latency_budget_ms"]
    server_args = report["settings"]["server_args"]
    reference: dict[str, str] = {}
    for run in report["runs"]:
        if run.get("fingerprint") and not run.get("discarded"):
            reference.setdefault(run["scenario"], run["fingerprint"])
    result = []
    for scenario in scenarios:
        rows = [dict(row) for row in report["summary"] if row["scenario"] == scenario.name]
        for row in rows:
            rps = row["requests_per_s"]
            row["rps"] = rps["median"] if rps else None
            row["p99"] = (row["latency_ms"] or {}).get("p99")
            row["command"] = command_line(row["server"], row["variant"], server_args, scenario)
            if row["status"] == "failed" or row["rps"] is None:
                row["verdict"] = f"failed: {row['error']}"
            elif row["fingerprint"] != reference.get(scenario.name):
                row["verdict"] = (
                    f"answers differ: {row['fingerprint']} where the first run answered {reference.get(scenario.name)}"
                )
            elif row["status"] != "ok":
                row["verdict"] = row["error"] or row["status"]
            elif row.get("client_bound"):
                # The requests went out late, not fewer: its requests/s still ranks, its p99 (which
                # holds the client's delay) does not.
                row["verdict"] = f"ranked by requests/s only: {row['client_bound']}"
            else:
                row["verdict"] = "ok"
        ranked = sorted((r for r in rows if r["verdict"] == "ok" or r.get("client_bound")), key=lambda r: -r["rps"])
        best = ranked[0]["rps"] if ranked else None
        for position, row in enumerate(ranked, 1):
            row["rank"] = position
            row["x_best"] = row["rps"] / best if best else None
        in_budget = [r for r in ranked if r["verdict"] == "ok" and r["p99"] is not None and r["p99"] <= budget]
        per_server = {
            server: _pick(_cheapest([r for r in ranked if r["server"] == server]))
            for server in dict.fromkeys(r["server"] for r in ranked)
        }
        result.append(
            {
                "scenario": scenario.name,
                "rows": ranked + [r for r in rows if r not in ranked],
                "best_per_server": per_server,
                "best_throughput": _pick(_cheapest(ranked)) if ranked else None,
                "best_latency": _pick(min(in_budget, key=lambda r: r["p99"])) if in_budget else None,
                "latency_budget_ms": budget,
            }
        )
    return result


def _cheapest(ranked: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Of the rows within AS_GOOD of the first (the most requests/s), the fewest workers, then threads."""
    good = [row for row in ranked if row["rps"] >= (1 - AS_GOOD) * ranked[0]["rps"]]
    return min(good, key=lambda row: (*_cost(row["variant"]), -row["rps"]))


def _cost(variant: str) -> tuple[int, int]:
    """(workers, threads) of a setting's label; the server's defaults count as the least."""
    words = variant.split()
    workers = int(words[words.index("-w") + 1]) if "-w" in words else 1
    threads = int(words[words.index("-t") + 1]) if "-t" in words else 0
    return workers, threads


def _pick(row: dict[str, Any]) -> dict[str, Any]:
    keys = ("server", "variant", "rps", "p99", "command")
    return {key: row[key] for key in keys}
