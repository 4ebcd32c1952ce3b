"""The terminal while a bench runs: what it will do and about how long it takes, a progress line
with the requests/s and p99 of the run going on, and the summary tables, updated after every run."""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from .results import fmt_ms, fmt_rate, fmt_rps, summarize, table
from .runner import Plan, Run

_STYLES = {"ok": "", "errors": "yellow", "failed": "red"}


def describe_run(run: Run, plan: Plan) -> str:
    """``cheroot -t 16 · hello · c=32 · keep-alive · 500 req/s · repeat 1/3``."""
    parts = [f"{run.server} {run.variant}".strip(), run.scenario, f"c={run.concurrency}", run.connection]
    if run.rate is not None:
        parts.append(f"{fmt_rate(run.rate)} req/s")
    if plan.repeat > 1:
        parts.append(f"repeat {run.repeat}/{plan.repeat}")
    return " · ".join(parts)


class Display:
    """A rich Live view: which run goes on and how it does, and the results so far."""

    def __init__(
        self,
        plan: Plan,
        versions: dict[str, str | None],
        generator: dict[str, Any],
        console: Console,
        total_runs: int | None = None,
        announce: str | None = None,
    ):
        self.plan = plan
        self.versions = versions
        self.console = console
        self.runs: list[Run] = []
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[live]}"),
            console=console,
        )
        self.task = self.progress.add_task("starting", total=total_runs or plan.total_runs(), live="")
        self.live = Live(self._render(), console=console, refresh_per_second=4)
        console.print(announce or self.announce(generator), highlight=False)

    def announce(self, generator: dict[str, Any]) -> str:
        """What the bench will do and about how long it will take, before the first run."""
        from .tune import format_seconds

        plan = self.plan
        parts = [f"{len(plan.servers)} server(s)", f"{len(plan.scenarios)} scenario(s)"]
        parts.append(f"{len(plan.concurrency)} concurrency level(s)")
        if len(plan.connections) > 1:
            parts.append(f"{len(plan.connections)} connection modes")
        if plan.rates:
            parts.append(f"{len(plan.rates)} rate(s)")
        parts.append(f"{plan.repeat} repeat(s)")
        runs = plan.total_runs()
        bound = "at most " if plan.sweep_from is not None else ""
        return (
            f"anyserve bench: {' x '.join(parts)}: {bound}{runs} run(s), {bound}about "
            f"{format_seconds(plan.estimate_seconds())}; load generator {generator['name']} {generator['version']}"
        )

    def __enter__(self) -> Display:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.update(self.task, description="done", live="")
        self.live.update(self._render())
        self.live.__exit__(*exc)
        if not self.console.is_terminal:
            self.console.print()

    def started(self, run: Run) -> None:
        live = "" if self.plan.generator.open_loop else f"{self.plan.generator.name} reports at the end"
        self.progress.update(self.task, description=describe_run(run, self.plan), live=live)
        self.live.update(self._render())

    def progressed(self, run: Run, data: dict[str, float]) -> None:
        """A progress line from the load generator: the requests/s and p99 of the last half second."""
        left = max(0.0, self.plan.duration - data.get("elapsed", 0.0))
        p99 = f", p99 {fmt_ms(data['p99'])} ms" if "p99" in data else ""
        self.progress.update(self.task, live=f"{fmt_rps(data.get('rps'))} req/s{p99}, {left:.0f} s left")

    def finished(self, run: Run) -> None:
        self.runs.append(run)
        self.progress.advance(self.task)
        self.live.update(self._render())

    def skipped(self, run: Run) -> None:
        self.progress.advance(self.task)

    def _render(self) -> Group:
        return Group(*self._tables(), self.progress)

    def _tables(self) -> list[Table]:
        grouped: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
        for summary in summarize(self.plan, self.runs):
            grouped.setdefault((summary.scenario, summary.concurrency, summary.connection), []).append(
                summary.as_dict()
            )
        tables = []
        for (scenario, concurrency, connection), rows in grouped.items():
            columns, cells = table(rows, self.versions)
            out = Table(title=f"{scenario}, c={concurrency}, {connection}", title_justify="left")
            for i, column in enumerate(columns):
                out.add_column(column, justify="left" if i in (0, len(columns) - 1) else "right")
            for row, row_cells in zip(rows, cells, strict=True):
                out.add_row(*row_cells, style=_STYLES.get(row["status"], ""))
            tables.append(out)
        return tables

    def print_footer(self, report: dict[str, Any]) -> None:
        from .results import tune_picks

        for section in report.get("tune") or []:
            self.console.print(f"[bold]tune, {section['scenario']}:[/]", highlight=False)
            for text, command in tune_picks(section):  # an APP may hold [brackets]: no markup
                self.console.print(f"  {text}" + (f":\n    {command}" if command else ""), markup=False)
        for warning in report["warnings"]:
            self.console.print(f"[yellow]warning:[/] {warning}", highlight=False)
        for name, info in report["servers"].items():
            if info["status"] == "failed":
                self.console.print(f"[red]failed:[/] {name}: {info['error']}", highlight=False)
