"""The terminal while a bench runs: a progress line and the summary table, updated after every run."""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from .results import TABLE_COLUMNS, summarize, table_row
from .runner import Plan, Run
from .scenarios import Scenario

_STYLES = {"ok": "", "errors": "yellow", "failed": "red"}


class Display:
    """A rich Live view: which server, scenario and repeat runs now, and the results so far."""

    def __init__(self, plan: Plan, versions: dict[str, str | None], generator: dict[str, Any], console: Console):
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
            console=console,
        )
        self.task = self.progress.add_task("starting", total=plan.total_runs())
        self.live = Live(self._render(), console=console, refresh_per_second=4)
        console.print(
            f"anyserve bench: {len(plan.servers)} server(s) x {len(plan.scenarios)} scenario(s) x "
            f"{len(plan.concurrency)} concurrency level(s) x {plan.repeat} repeat(s); "
            f"load generator {generator['name']} {generator['version']}"
        )

    def __enter__(self) -> Display:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.update(self.task, description="done")
        self.live.update(self._render())
        self.live.__exit__(*exc)
        if not self.console.is_terminal:
            self.console.print()

    def started(self, server: str, scenario: Scenario, concurrency: int, repeat: int) -> None:
        self.progress.update(
            self.task, description=f"{server} · {scenario.name} · c={concurrency} · repeat {repeat}/{self.plan.repeat}"
        )
        self.live.update(self._render())

    def finished(self, run: Run) -> None:
        self.runs.append(run)
        self.progress.advance(self.task)
        self.live.update(self._render())

    def skipped(self, server: str, scenario: Scenario, concurrency: int, repeat: int) -> None:
        self.progress.advance(self.task)

    def _render(self) -> Group:
        return Group(*self._tables(), self.progress)

    def _tables(self) -> list[Table]:
        tables: dict[tuple[str, int], Table] = {}
        for summary in summarize(self.plan, self.runs):
            key = (summary.scenario, summary.concurrency)
            if key not in tables:
                table = Table(title=f"{summary.scenario}, c={summary.concurrency}", title_justify="left")
                for i, column in enumerate(TABLE_COLUMNS):
                    table.add_column(column, justify="left" if i in (0, len(TABLE_COLUMNS) - 1) else "right")
                tables[key] = table
            row = summary.as_dict()
            tables[key].add_row(*table_row(row, self.versions), style=_STYLES.get(row["status"], ""))
        return list(tables.values())

    def print_footer(self, report: dict[str, Any]) -> None:
        for warning in report["warnings"]:
            self.console.print(f"[yellow]warning:[/] {warning}", highlight=False)
        for name, info in report["servers"].items():
            if info["status"] == "failed":
                self.console.print(f"[red]failed:[/] {name}: {info['error']}", highlight=False)
