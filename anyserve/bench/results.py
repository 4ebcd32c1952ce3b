"""The results of a bench: per-run records summarised, the machine described, and the report files.

JSON holds every raw run; Markdown the summary tables; HTML (self-contained,
inline SVG, no script, no network) the tables and two charts: requests/s per
server per scenario with the spread of the repeats as error bars, and the
latency percentiles.
"""

from __future__ import annotations

import datetime
import html
import json
import math
import os
import platform
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .load import CLIENT_CPU_WARNING
from .runner import Plan, Run
from .stats import spread

LATENCY_KEYS = ("p50", "p90", "p99", "max")


@dataclass
class Summary:
    """The repeats of one server (with one setting) on one scenario, concurrency, connection mode and rate."""

    server: str
    scenario: str
    concurrency: int
    status: str
    error: str | None
    runs: list[Run]
    connection: str = "keep-alive"
    rate: float | None = None
    variant: str = ""

    @property
    def measured(self) -> list[Run]:
        return [run for run in self.runs if run.load is not None and run.status != "failed"]

    def rps(self) -> list[float]:
        return [run.load.requests_per_s for run in self.measured if run.load]

    def as_dict(self) -> dict[str, Any]:
        each = self.rps()
        rps = spread(each)
        measured = self.measured

        def median_of(values: list[float]) -> float | None:
            return round(statistics.median(values), 4) if values else None

        latency = {
            key: median_of([run.load.latency_ms[key] for run in measured if run.load and key in run.load.latency_ms])
            for key in LATENCY_KEYS
        }
        return {
            "server": self.server,
            "variant": self.variant,
            "scenario": self.scenario,
            "concurrency": self.concurrency,
            "connection": self.connection,
            "rate": self.rate,
            "status": self.status,
            "error": self.error,
            "runs": len(self.runs),
            "requests_per_s": {
                "median": round(rps.median, 1),
                "min": round(rps.low, 1),
                "max": round(rps.high, 1),
                "spread": round(rps.relative, 4),
                "each": [round(value, 1) for value in each],
            }
            if rps
            else None,
            "latency_ms": latency,
            "non_2xx": sum(run.load.non_2xx for run in measured if run.load),
            "socket_errors": sum(sum(run.load.socket_errors.values()) for run in measured if run.load),
            "server_rss_peak_bytes": max((run.server_rss_peak_bytes or 0 for run in measured), default=None),
            "server_cpu_s": median_of([run.server_cpu_s for run in measured if run.server_cpu_s is not None]),
            "other_cpu_s": median_of([run.other_cpu_s for run in measured if run.other_cpu_s is not None]),
            "startup_s": median_of([run.startup_s for run in measured if run.startup_s is not None]),
            "client_cpu_share": median_of([run.load.client_cpu_share for run in measured if run.load]),
            "late": sum(run.load.late for run in measured if run.load),
            "unfinished": sum(run.load.unfinished for run in measured if run.load),
            "saturated": next((run.saturated for run in measured if run.saturated), None),
            "client_bound": next((run.client_bound for run in measured if run.client_bound), None),
            "fingerprint": next((run.fingerprint for run in self.runs if run.fingerprint), None),
        }


def overall_status(statuses: Sequence[str]) -> str:
    """Of several runs or summaries: failed when every one failed, errors when any
    did not go cleanly, else ok (also for none)."""
    if statuses and all(status == "failed" for status in statuses):
        return "failed"
    return "errors" if any(status != "ok" for status in statuses) else "ok"


def summarize(plan: Plan, runs: Sequence[Run]) -> list[Summary]:
    """One Summary per scenario x concurrency x connection x rate x server (x setting) that has runs,
    in the plan's order (rates rising, settings as first measured)."""
    grouped: dict[tuple[str, int, str, float | None, str, str], list[Run]] = {}
    for run in runs:
        if not run.discarded:
            key = (run.scenario, run.concurrency, run.connection, run.rate, run.server, run.variant)
            grouped.setdefault(key, []).append(run)
    scenarios = [s.name for s in plan.scenarios]
    variants = list(dict.fromkeys(key[5] for key in grouped))

    def position(key: tuple[str, int, str, float | None, str, str]) -> tuple[Any, ...]:
        scenario, concurrency, connection, rate, server, variant = key
        return (
            _index(scenarios, scenario),
            _index(plan.concurrency, concurrency),
            _index(plan.connections, connection),
            -1.0 if rate is None else rate,
            _index(plan.servers, server),
            variants.index(variant),
        )

    summaries = []
    for key in sorted(grouped, key=position):
        mine = grouped[key]
        scenario, concurrency, connection, rate, server, variant = key
        status = overall_status([r.status for r in mine])
        failed = [r for r in mine if r.status == "failed"]
        with_errors = [r for r in mine if r.status == "errors"]
        error = (failed or with_errors)[0].error if status != "ok" else None
        summaries.append(Summary(server, scenario, concurrency, status, error, mine, connection, rate, variant))
    return summaries


def _index(items: Sequence[Any], item: Any) -> int:
    return items.index(item) if item in items else len(items)


def client_warnings(runs: Sequence[Run]) -> list[str]:
    """One line per run whose load generator was close to saturating its CPU or fell behind its rate,
    or whose machine was busy."""
    lines = []
    behind = sum(1 for run in runs if run.discarded and run.client_bound)
    busy = sum(1 for run in runs if run.discarded) - behind
    if busy:
        lines.append(f"{busy} run(s) measured while the machine was busy were measured again (kept in the JSON)")
    if behind:
        lines.append(
            f"{behind} run(s) whose load generator fell behind its rate were measured again (kept in the JSON)"
        )
    for run in runs:
        if run.discarded:
            continue
        name = f"{run.server}{' ' + run.variant if run.variant else ''} {run.scenario} c={run.concurrency}"
        name += f" {run.connection}" + (f" at {run.rate:g} req/s" if run.rate is not None else "")
        name += f" repeat {run.repeat}"
        if run.noisy and run.load is not None and run.other_cpu_s is not None:
            lines.append(
                f"{name}: other processes used {run.other_cpu_s / run.load.duration_s:.0%} of a core during the run; "
                "the machine was not quiet"
            )
        if run.load is not None and run.load.client_saturated:
            lines.append(
                f"{name}: the load generator used {run.load.client_cpu_share:.0%} of a core "
                f"(of {run.load.client_cores}); this number may measure the client rather than the server"
            )
        if run.client_bound:
            lines.append(f"{name}: invalid, {run.client_bound}")
    return lines


def describe_machine() -> dict[str, Any]:
    """CPU model, cores, memory, OS and Python of this machine, and its load when the bench began."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory = None
    try:
        import psutil

        memory = psutil.virtual_memory().total
    except Exception:
        pass
    return {
        "cpu_model": model,
        "cpu_count": os.cpu_count(),
        "cpus_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_bytes": memory,
        "system": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "load_average_at_start": _load_average(),
    }


def _load_average() -> list[float] | None:
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def build_report(
    plan: Plan,
    runs: Sequence[Run],
    versions: dict[str, str | None],
    generator: dict[str, Any],
    started: datetime.datetime,
    machine: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The whole bench as one JSON-ready dict: settings, machine, servers, every raw run, the summary."""
    from anyserve import __version__

    summaries = summarize(plan, runs)
    server_status = {}
    for server in plan.servers:
        mine = [s for s in summaries if s.server == server]
        server_status[server] = {
            "version": versions.get(server),
            "status": overall_status([s.status for s in mine]),
            "error": next((s.error for s in mine if s.error), None),
        }
    return {
        "anyserve": __version__,
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine or describe_machine(),
        "load_average_at_end": _load_average(),
        "generator": generator,
        "settings": {
            "servers": plan.servers,
            "scenarios": [
                {"name": s.name, "app": s.app, "path": s.path, "method": s.method, "body_size": s.body_size}
                for s in plan.scenarios
            ],
            "concurrency": plan.concurrency,
            "duration_s": plan.duration,
            "warmup_s": plan.warmup,
            "repeat": plan.repeat,
            "server_args": plan.server_args,
            "server_cpus": plan.server_cpus,
            "client_cpus": plan.client_cpus,
            "retry_noisy": plan.retry_noisy,
            "connections": plan.connections,
            "mode": "open" if plan.open_loop else "closed",
            "rates": plan.rates,
            "sweep_from": plan.sweep_from,
            "latency_budget_ms": plan.latency_budget_ms,
        },
        "servers": server_status,
        "runs": [run.as_dict() for run in runs],
        "summary": [s.as_dict() for s in summaries],
        "warnings": client_warnings(runs),
    }


# -- formatting helpers ------------------------------------------------------------------


def fmt_rps(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def fmt_ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:,.0f}"


def fmt_bytes(value: float | None) -> str:
    if not value:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return "-"


def fmt_spread(rps: dict[str, Any] | None) -> str:
    if not rps or len(rps["each"]) < 2:
        return "-"
    return f"±{rps['spread'] * 50:.1f}% ({fmt_rps(rps['min'])}-{fmt_rps(rps['max'])})"


#: The column of each value over the best one of its table (the multiplication sign, written out for the linter).
X_BEST = "\u00d7 best"


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def fmt_rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}" if value >= 10 else f"{value:g}"


#: A closed-loop table: N connections, each sending its next request when the previous answer came.
CLOSED_COLUMNS = (
    "server",
    "req/s",
    X_BEST,
    "spread",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "max ms",
    "errors",
    "peak RSS",
    "CPU s",
    "start s",
    "status",
)
TABLE_COLUMNS = CLOSED_COLUMNS
#: An open-loop table: one row per server and rate asked for.
OPEN_COLUMNS = (
    "server",
    "rate",
    "req/s",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "max ms",
    "errors",
    "late",
    "peak RSS",
    "CPU s",
    "status",
)
#: An open-loop summary: per server, the highest rate it took within the latency budget.
SWEEP_COLUMNS = ("server", "highest rate in budget", X_BEST, "p99 ms there", "saturated at", "why")


def server_label(row: dict[str, Any], versions: dict[str, str | None]) -> str:
    version = versions.get(row["server"])
    label = f"{row['server']} {version}" if version else row["server"]
    return f"{label} {row['variant']}" if row.get("variant") else label


def status_text(row: dict[str, Any]) -> str:
    if row.get("client_bound"):
        return f"invalid: {row['client_bound']}"
    if row.get("saturated") and row["status"] == "ok":
        return f"saturated: {row['saturated']}"
    return row["status"] if not row["error"] else f"{row['status']}: {row['error']}"


def is_open(rows: Sequence[dict[str, Any]]) -> bool:
    return any(row.get("rate") is not None for row in rows)


def best_rps(rows: Sequence[dict[str, Any]]) -> float | None:
    """The highest median requests/s among the rows that ran (the reference of the X_BEST column)."""
    return max(
        (row["requests_per_s"]["median"] for row in rows if row["requests_per_s"] and row["status"] != "failed"),
        default=None,
    )


def table_row(row: dict[str, Any], versions: dict[str, str | None], best: float | None = None) -> list[str]:
    """The cells of one closed-loop summary row, shared by the terminal, Markdown and HTML tables."""
    rps = row["requests_per_s"]
    latency = row["latency_ms"] or {}
    return [
        server_label(row, versions),
        fmt_rps(rps["median"] if rps else None),
        fmt_ratio(rps["median"] / best if rps and best else None),
        fmt_spread(rps),
        *(fmt_ms(latency.get(key)) for key in LATENCY_KEYS),
        str(row["non_2xx"] + row["socket_errors"]),
        fmt_bytes(row["server_rss_peak_bytes"]),
        "-" if row["server_cpu_s"] is None else f"{row['server_cpu_s']:.2f}",
        "-" if row["startup_s"] is None else f"{row['startup_s']:.2f}",
        status_text(row),
    ]


def open_row(row: dict[str, Any], versions: dict[str, str | None]) -> list[str]:
    """The cells of one open-loop summary row (one server at one rate)."""
    rps = row["requests_per_s"]
    latency = row["latency_ms"] or {}
    return [
        server_label(row, versions),
        fmt_rate(row["rate"]),
        fmt_rps(rps["median"] if rps else None),
        *(fmt_ms(latency.get(key)) for key in LATENCY_KEYS),
        str(row["non_2xx"] + row["socket_errors"]),
        str(row.get("late", 0)),
        fmt_bytes(row["server_rss_peak_bytes"]),
        "-" if row["server_cpu_s"] is None else f"{row['server_cpu_s']:.2f}",
        status_text(row),
    ]


def table(rows: Sequence[dict[str, Any]], versions: dict[str, str | None]) -> tuple[tuple[str, ...], list[list[str]]]:
    """The columns and cells of one group's table, closed- or open-loop."""
    if is_open(rows):
        return OPEN_COLUMNS, [open_row(row, versions) for row in rows]
    best = best_rps(rows)
    return CLOSED_COLUMNS, [table_row(row, versions, best) for row in rows]


def sweep_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per server (and setting), over its rates in rising order: the highest rate it took cleanly before
    the first it could not (p99 over budget, errors, too few answers, or a client that fell behind)."""
    by_server: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        if row.get("rate") is not None:
            by_server.setdefault((row["server"], row.get("variant", "")), []).append(row)
    result = []
    for (server, variant), mine in by_server.items():
        highest = p99 = stopped = None
        why = f"not reached (up to {fmt_rate(max(r['rate'] for r in mine))} req/s)"
        for row in sorted(mine, key=lambda r: r["rate"]):
            if row["status"] != "ok" or row.get("saturated") or row.get("client_bound"):
                stopped, why = row["rate"], status_text(row)
                break
            highest, p99 = row["rate"], (row["latency_ms"] or {}).get("p99")
        result.append(
            {"server": server, "variant": variant, "highest": highest, "p99": p99, "saturated_at": stopped, "why": why}
        )
    best = max((r["highest"] for r in result if r["highest"]), default=None)
    for r in result:
        r["x_best"] = r["highest"] / best if r["highest"] and best else None
    return result


def sweep_cells(rows: Sequence[dict[str, Any]], versions: dict[str, str | None]) -> list[list[str]]:
    return [
        [
            server_label(r, versions),
            fmt_rate(r["highest"]),
            fmt_ratio(r["x_best"]),
            fmt_ms(r["p99"]),
            fmt_rate(r["saturated_at"]),
            r["why"],
        ]
        for r in sweep_rows(rows)
    ]


def groups(report: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    """The summary rows grouped by scenario, concurrency and connection mode, with a title for each group."""
    titled: dict[str, list[dict[str, Any]]] = {}
    descriptions = {s["name"]: s for s in report["settings"]["scenarios"]}
    for row in report["summary"]:
        scenario = descriptions.get(row["scenario"], {})
        title = (
            f"{row['scenario']} ({scenario.get('method', 'GET')} {scenario.get('path', '/')}), "
            f"c={row['concurrency']}, {row.get('connection', 'keep-alive')}"
        )
        titled.setdefault(title, []).append(row)
    return list(titled.items())


def versions_of(report: dict[str, Any]) -> dict[str, str | None]:
    return {name: info["version"] for name, info in report["servers"].items()}


def describe_setup(report: dict[str, Any]) -> list[str]:
    """The machine and the settings, one line each: what every report shows above its tables."""
    machine, settings, gen = report["machine"], report["settings"], report["generator"]
    pinning = (
        f"server on CPUs {settings['server_cpus']}, client on CPUs {settings['client_cpus']}"
        if settings["server_cpus"] or settings["client_cpus"]
        else "not pinned"
    )
    lines = [
        f"machine: {machine['cpu_model']}, {machine['cpus_available']} of {machine['cpu_count']} CPUs, "
        f"{machine['system']}, {machine['python']}; load average at the start "
        f"{machine.get('load_average_at_start')}, at the end {report.get('load_average_at_end')}",
        f"load generator: {gen['name']} {gen['version']}; {pinning}",
    ]
    shares = gen.get("ceiling_client_cpu_share") or {}
    for connection, ceiling in (gen.get("ceiling") or {}).items():
        share = shares.get(connection)
        # Below CLIENT_CPU_WARNING of its core, the responder rather than the generator set the pace.
        bound = "" if share is None or share > CLIENT_CPU_WARNING else "at least "
        used = "" if share is None else f", the generator at {share:.0%} of its core"
        lines.append(
            f"load generator's own ceiling, {connection}: {bound}{fmt_rps(ceiling)} req/s "
            f"(closed loop against a trivial asyncio responder on the server CPUs{used})"
        )
    connections = settings.get("connections") or ["keep-alive"]
    if settings.get("mode") == "open":
        rates = (
            f"rates raised from {fmt_rate(settings['sweep_from'])} req/s until the server saturates"
            if settings.get("sweep_from") is not None
            else "rates " + ", ".join(fmt_rate(rate) for rate in settings.get("rates") or []) + " req/s"
        )
        lines.append(
            f"open loop: {rates}; latency from each request's due time; p99 budget "
            f"{settings['latency_budget_ms']:g} ms; saturated when p99 is over it, on errors, or under "
            "95% of the rate answered"
        )
    else:
        lines.append("closed loop: each connection sends its next request when the previous answer came")
    lines += [
        f"connections: {', '.join(connections)}; each run: {settings['warmup_s']:g} s warm-up, "
        f"{settings['duration_s']:g} s measured; "
        f"{settings['repeat']} repeat(s), servers interleaved; medians shown, spread = half the min-max range",
        "server options: " + (" ".join(settings["server_args"]) or "none (each server's defaults)"),
    ]
    return lines


#: The columns of words, aligned left; numbers are aligned right.
TEXT_COLUMNS = ("server", "setting", "status", "why", "verdict")


def _markdown_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |"]
    lines.append("|" + "|".join("---" if column in TEXT_COLUMNS else "---:" for column in columns) + "|")
    for cells in rows:
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return lines


def tune_cells(section: dict[str, Any], versions: dict[str, str | None]) -> list[list[str]]:
    return [
        [
            str(row.get("rank", "-")),
            server_label({**row, "variant": ""}, versions),
            row["variant"],
            fmt_rps(row["rps"]),
            fmt_ratio(row.get("x_best")),
            fmt_ms(row["p99"]),
            row["verdict"],
        ]
        for row in section["rows"]
    ]


TUNE_COLUMNS = ("rank", "server", "setting", "req/s", X_BEST, "p99 ms", "verdict")


def tune_picks(section: dict[str, Any]) -> list[tuple[str, str | None]]:
    """The best settings of a tune: what each is best at, and its command line (None: no such setting)."""
    best, fast = section["best_throughput"], section["best_latency"]
    budget = f"{section['latency_budget_ms']:g} ms"
    per_server = [
        (f"best for {server}: {pick['variant']} ({fmt_rps(pick['rps'])} req/s, p99 {fmt_ms(pick['p99'])} ms)", None)
        for server, pick in (section.get("best_per_server") or {}).items()
    ]
    return [
        *(per_server if len(per_server) > 1 else []),
        (f"most requests/s ({fmt_rps(best['rps'])}, p99 {fmt_ms(best['p99'])} ms)", best["command"])
        if best
        else ("most requests/s: no setting ran cleanly", None),
        (f"lowest p99 within {budget} ({fmt_ms(fast['p99'])} ms, {fmt_rps(fast['rps'])} req/s)", fast["command"])
        if fast
        else (f"lowest p99 within {budget}: no setting stayed within it", None),
    ]


def to_markdown(report: dict[str, Any]) -> str:
    """Summary tables, one per scenario, concurrency and connection mode, with the setup above them:
    pasteable into an issue as they are."""
    versions = versions_of(report)
    lines = ["# anyserve bench", "", *(f"- {line}" for line in describe_setup(report)), ""]
    for section in report.get("tune") or []:
        lines += [f"## tune: {section['scenario']}", ""]
        lines += _markdown_table(TUNE_COLUMNS, tune_cells(section, versions))
        lines += ["", *(f"- {text}: `{command}`" if command else f"- {text}" for text, command in tune_picks(section))]
        lines.append("")
    for title, rows in groups(report):
        lines += [f"## {title}", ""]
        if is_open(rows):
            budget = report["settings"]["latency_budget_ms"]
            lines += [f"Highest rate with p99 ≤ {budget:g} ms:", ""]
            lines += [*_markdown_table(SWEEP_COLUMNS, sweep_cells(rows, versions)), ""]
        columns, cells = table(rows, versions)
        lines += [*_markdown_table(columns, cells), ""]
    if report["warnings"]:
        lines += ["## Warnings", "", *(f"- {w}" for w in report["warnings"]), ""]
    return "\n".join(lines)


def write_json(report: dict[str, Any], path: str) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(report, fh, indent=2)
        fh.write("\n")


def write_text(text: str, path: str) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


# -- charts ------------------------------------------------------------------------------

PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac")


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    exponent = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * exponent >= value:
            return step * exponent
    return 10 * exponent


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _closed_groups(report: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    return [(title, rows) for title, rows in groups(report) if not is_open(rows)]


def rps_chart_svg(report: dict[str, Any]) -> str:
    """Requests/s (median) per server, min-max as error bars: one panel per scenario, each on its own
    scale (a 50 ms scenario would be invisible next to a hello), its concurrency levels side by side.
    Closed-loop runs only: an open-loop run's requests/s is the rate it was asked for."""
    grouped = _closed_groups(report)
    scenarios = list(dict.fromkeys(rows[0]["scenario"] for _, rows in grouped))
    panels = [_rps_panel(report, [(t, rows) for t, rows in grouped if rows[0]["scenario"] == s]) for s in scenarios]
    if not panels:
        panels = [_rps_panel(report, [])]
    if len(panels) == 1:
        return panels[0][0]
    width = max(w for _, w, _ in panels)
    height = sum(h for _, _, h in panels)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}">']
    y = 0
    for svg, _, h in panels:
        out.append(svg.replace("<svg ", f'<svg y="{y}" ', 1))
        y += h
    out.append("</svg>")
    return "\n".join(out)


def _series_names(rows: Sequence[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(_series_name(row) for row in rows))


def _series_name(row: dict[str, Any]) -> str:
    return f"{row['server']} {row['variant']}" if row.get("variant") else row["server"]


def _rps_panel(report: dict[str, Any], grouped: list[tuple[str, list[dict[str, Any]]]]) -> tuple[str, int, int]:
    """One bar chart (its SVG, width and height) for the groups of one scenario, as wide as its bars."""
    servers = _series_names([row for _, rows in grouped for row in rows]) or list(report["servers"])
    if not grouped:
        grouped = [("no closed-loop runs", [])]
    gap, pad_left, pad_top, height, bar = 26, 70, 40, 260, 40.0
    group_width = bar * len(servers) + gap
    title = f"{grouped[0][0].split(' (')[0]}: requests/s"
    # As wide as the bars need, and the title and one legend entry: no empty half.
    width = max(round(pad_left + group_width * len(grouped) + 20), pad_left + 8 * len(title) + 20, 240)
    legend_rows = math.ceil(len(servers) / _legend_columns(width - pad_left))
    total_height = pad_top + height + 60 + 18 * legend_rows
    top = _nice_max(
        max((row["requests_per_s"]["max"] for _, rows in grouped for row in rows if row["requests_per_s"]), default=1)
    )
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{total_height}" '
        f'viewBox="0 0 {width} {total_height}" font-family="sans-serif" font-size="11">',
        f'<text x="{pad_left}" y="20" font-size="14" font-weight="bold">{_esc(title)}</text>',
    ]
    for i in range(6):
        value = top * i / 5
        y = pad_top + height - height * i / 5
        out.append(f'<line x1="{pad_left}" x2="{width - 10}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{pad_left - 6}" y="{y + 4:.1f}" text-anchor="end">{value:,.0f}</text>')
    for g, (title, rows) in enumerate(grouped):
        x0 = pad_left + g * group_width + gap / 2
        by_server = {_series_name(row): row for row in rows}
        for s, server in enumerate(servers):
            row = by_server.get(server)
            x = x0 + s * bar
            colour = PALETTE[s % len(PALETTE)]
            if row is None or not row["requests_per_s"]:
                if row is not None:
                    y = pad_top + height - 12
                    out.append(f'<text x="{x + bar / 2:.1f}" y="{y}" text-anchor="middle" fill="#c00">✗</text>')
                continue
            rps = row["requests_per_s"]
            h = height * rps["median"] / top
            y = pad_top + height - h
            out.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar - 3}" height="{h:.1f}" fill="{colour}">'
                f"<title>{_esc(server)} {_esc(title)}: {rps['median']:,.0f} req/s "
                f"(min {rps['min']:,.0f}, max {rps['max']:,.0f})</title></rect>"
            )
            cx = x + (bar - 3) / 2
            if h >= 45:
                out.append(
                    f'<text x="{cx:.1f}" y="{pad_top + height - h / 2:.1f}" text-anchor="middle" fill="#fff" '
                    f'font-size="10" transform="rotate(-90 {cx:.1f} {pad_top + height - h / 2:.1f})">'
                    f"{rps['median']:,.0f}</text>"
                )
            y_low = pad_top + height - height * rps["min"] / top
            y_high = pad_top + height - height * rps["max"] / top
            out.append(
                f'<path d="M{cx:.1f} {y_low:.1f}V{y_high:.1f}M{cx - 3:.1f} {y_low:.1f}h6M{cx - 3:.1f} {y_high:.1f}h6" '
                'stroke="#222" fill="none"/>'
            )
        label_x = x0 + (bar * len(servers)) / 2
        parts = title.split(", ")
        out.append(f'<text x="{label_x:.1f}" y="{pad_top + height + 16}" text-anchor="middle">{_esc(parts[1])}</text>')
        out.append(
            f'<text x="{label_x:.1f}" y="{pad_top + height + 30}" text-anchor="middle" fill="#666">'
            f"{_esc(parts[-1])}</text>"
        )
    out += _legend(servers, pad_left, pad_top + height + 48, width - pad_left)
    out.append("</svg>")
    return "\n".join(out), width, total_height


def _log_range(values: Sequence[float]) -> tuple[float, float]:
    low = 10 ** math.floor(math.log10(min(values)))
    high = 10 ** math.ceil(math.log10(max(values)))
    return low, high if high > low else low * 10


def _log_ticks(low: float, high: float) -> list[tuple[float, bool]]:
    """1-2-5 ticks from *low* to *high* (powers of ten), each with whether it is a power of ten."""
    ticks = []
    decade = low
    while decade <= high * 1.0001:
        for factor in (1, 2, 5):
            if decade * factor > high * 1.0001:
                break
            ticks.append((decade * factor, factor == 1))
        decade *= 10
    return ticks


def latency_rate_chart_svg(report: dict[str, Any], scenario: str) -> str:
    """p99 against requests/s for one scenario, both on log scales, a line per server: open loop
    at each rate asked for (the latency-throughput curve), closed loop at each concurrency.
    A point the server could not take (saturated, errors) or the client could not keep is hollow."""
    rows = [
        row
        for row in report["summary"]
        if row["scenario"] == scenario and row["requests_per_s"] and (row["latency_ms"] or {}).get("p99")
    ]
    connections = {row.get("connection") for row in rows}
    lines: dict[str, list[tuple[float, float, bool, dict[str, Any]]]] = {}
    for row in rows:
        name = _series_name(row) + (f" ({row.get('connection')})" if len(connections) > 1 else "")
        x = row["rate"] if row.get("rate") is not None else row["requests_per_s"]["median"]
        bad = row["status"] != "ok" or bool(row.get("saturated")) or bool(row.get("client_bound"))
        lines.setdefault(name, []).append((x, row["latency_ms"]["p99"], bad, row))
    pad_left, pad_top, width, height = 70, 40, 520, 240
    budget = report["settings"].get("latency_budget_ms") if is_open(rows) else None
    names = list(lines)
    legend_rows = math.ceil(len(names) / _legend_columns(width)) if names else 0
    total_height = pad_top + height + 48 + 18 * legend_rows
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width + pad_left + 20}" height="{total_height}" '
        f'font-family="sans-serif" font-size="11">',
        f'<text x="{pad_left}" y="20" font-size="14" font-weight="bold">{_esc(scenario)}: p99 latency (ms) '
        "against requests/s, log scales</text>",
    ]
    if not lines:
        out.append(f'<text x="{pad_left}" y="{pad_top + 20}">no latency measured</text></svg>')
        return "\n".join(out)
    xs = [x for points in lines.values() for x, _, _, _ in points]
    ys = [y for points in lines.values() for _, y, _, _ in points] + ([budget] if budget else [])
    x_low, x_high = _log_range(xs)
    y_low, y_high = _log_range(ys)

    def x_of(v: float) -> float:
        return pad_left + width * (math.log10(v) - math.log10(x_low)) / (math.log10(x_high) - math.log10(x_low))

    def y_of(v: float) -> float:
        return (
            pad_top + height - height * (math.log10(v) - math.log10(y_low)) / (math.log10(y_high) - math.log10(y_low))
        )

    for tick, major in _log_ticks(y_low, y_high):
        y = y_of(tick)
        out.append(
            f'<line x1="{pad_left}" x2="{pad_left + width}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="{"#ccc" if major else "#eee"}"/>'
        )
        out.append(f'<text x="{pad_left - 6}" y="{y + 4:.1f}" text-anchor="end">{tick:g}</text>')
    for tick, major in _log_ticks(x_low, x_high):
        x = x_of(tick)
        out.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{pad_top}" y2="{pad_top + height}" '
            f'stroke="{"#ccc" if major else "#eee"}"/>'
        )
        out.append(f'<text x="{x:.1f}" y="{pad_top + height + 16}" text-anchor="middle">{tick:,g}</text>')
    out.append(
        f'<text x="{pad_left + width / 2}" y="{pad_top + height + 32}" text-anchor="middle" fill="#666">'
        f"{'requests/s asked for (open loop)' if budget else 'requests/s'}</text>"
    )
    if budget:
        y = y_of(budget)
        out.append(
            f'<line x1="{pad_left}" x2="{pad_left + width}" y1="{y:.1f}" y2="{y:.1f}" stroke="#c00" '
            'stroke-dasharray="6 4"/>'
        )
        out.append(
            f'<text x="{pad_left + width - 4}" y="{y - 4:.1f}" text-anchor="end" fill="#c00">'
            f"budget {budget:g} ms</text>"
        )
    for i, (name, points) in enumerate(lines.items()):
        colour = PALETTE[i % len(PALETTE)]
        points.sort(key=lambda p: p[0])
        path = " ".join(f"{'M' if j == 0 else 'L'}{x_of(x):.1f} {y_of(y):.1f}" for j, (x, y, _, _) in enumerate(points))
        out.append(f'<path d="{path}" stroke="{colour}" stroke-width="2" fill="none"/>')
        for x, y, bad, row in points:
            out.append(
                f'<circle cx="{x_of(x):.1f}" cy="{y_of(y):.1f}" r="3.5" fill="{"#fff" if bad else colour}" '
                f'stroke="{colour}" stroke-width="1.5"><title>{_esc(name)} c={row["concurrency"]}: '
                f"{fmt_rate(x)} req/s, p99 {fmt_ms(y)} ms; {_esc(status_text(row))}</title></circle>"
            )
    out += _legend(names, pad_left, pad_top + height + 52, width)
    out.append("</svg>")
    return "\n".join(out)


def _legend_columns(width: float) -> int:
    return max(1, int(width // 150))


def _legend(servers: Sequence[str], x: float, y: float, width: float) -> list[str]:
    out = []
    columns = _legend_columns(width)
    for s, server in enumerate(servers):
        lx = x + (s % columns) * 150
        ly = y + (s // columns) * 18
        out.append(f'<rect x="{lx}" y="{ly - 9}" width="10" height="10" fill="{PALETTE[s % len(PALETTE)]}"/>')
        out.append(f'<text x="{lx + 14}" y="{ly}">{_esc(server)}</text>')
    return out


def latency_chart_svg(report: dict[str, Any], title: str, rows: Sequence[dict[str, Any]]) -> str:
    """Latency at p50, p90, p99 and max per server (log scale), for one scenario and concurrency."""
    servers = _series_names(rows) or list(report["servers"])
    pad_left, pad_top, width, height = 70, 40, 560, 220
    points = [
        (_series_name(row), [row["latency_ms"].get(key) for key in LATENCY_KEYS])
        for row in rows
        if row["latency_ms"] and all(row["latency_ms"].get(key) for key in LATENCY_KEYS)
    ]
    legend_rows = math.ceil(len(servers) / _legend_columns(width))
    total_height = pad_top + height + 40 + 18 * legend_rows
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width + pad_left + 20}" height="{total_height}" '
        f'font-family="sans-serif" font-size="11">',
        f'<text x="{pad_left}" y="20" font-size="14" font-weight="bold">latency, ms (log scale): {_esc(title)}</text>',
    ]
    values = [v for _, vs in points for v in vs if v]
    if not values:
        out.append(f'<text x="{pad_left}" y="{pad_top + 20}">no latency measured</text></svg>')
        return "\n".join(out)
    low = 10 ** math.floor(math.log10(min(values)))
    high = 10 ** math.ceil(math.log10(max(values)))
    if high <= low:
        high = low * 10

    def y_of(v: float) -> float:
        return pad_top + height - height * (math.log10(v) - math.log10(low)) / (math.log10(high) - math.log10(low))

    decade = low
    while decade <= high * 1.0001:
        for factor in (1, 2, 5):
            tick = decade * factor
            if tick > high * 1.0001:
                break
            y = y_of(tick)
            grey = "#ccc" if factor == 1 else "#eee"
            out.append(f'<line x1="{pad_left}" x2="{pad_left + width}" y1="{y:.1f}" y2="{y:.1f}" stroke="{grey}"/>')
            out.append(f'<text x="{pad_left - 6}" y="{y + 4:.1f}" text-anchor="end">{tick:g}</text>')
        decade *= 10
    step = width / (len(LATENCY_KEYS) - 1)
    for i, key in enumerate(LATENCY_KEYS):
        x = pad_left + i * step
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{pad_top}" y2="{pad_top + height}" stroke="#eee"/>')
        out.append(f'<text x="{x:.1f}" y="{pad_top + height + 16}" text-anchor="middle">{key}</text>')
    for server, vs in points:
        colour = PALETTE[servers.index(server) % len(PALETTE)] if server in servers else "#000"
        coords = [(pad_left + i * step, y_of(v)) for i, v in enumerate(vs)]
        path = " ".join(f"{'M' if i == 0 else 'L'}{x:.1f} {y:.1f}" for i, (x, y) in enumerate(coords))
        out.append(f'<path d="{path}" stroke="{colour}" stroke-width="2" fill="none"/>')
        for (x, y), key, v in zip(coords, LATENCY_KEYS, vs, strict=True):
            out.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"><title>{_esc(server)} {key}: '
                f"{fmt_ms(v)} ms</title></circle>"
            )
    out += _legend(servers, pad_left, pad_top + height + 36, width)
    out.append("</svg>")
    return "\n".join(out)


def _html_table(columns: Sequence[str], rows: Sequence[Sequence[str]], classes: Sequence[str] = ()) -> list[str]:
    parts = ["<table><tr>", *(f"<th>{_esc(c)}</th>" for c in columns), "</tr>"]
    for r, cells in enumerate(rows):
        cls = classes[r] if r < len(classes) else ""
        parts.append(f'<tr class="{_esc(cls)}">' if cls else "<tr>")
        for i, cell in enumerate(cells):
            numeric = 0 < i < len(cells) - 1 and (cell[:1].isdigit() or cell == "-")
            parts.append(f'<td class="n">{_esc(cell)}</td>' if numeric else f"<td>{_esc(cell)}</td>")
        parts.append("</tr>")
    parts.append("</table>")
    return parts


def to_html(report: dict[str, Any]) -> str:
    """One self-contained page: the machine and settings on top, then charts and tables;
    no script, no external resource, so it opens offline."""
    versions = versions_of(report)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>anyserve bench</title>',
        "<style>body{font-family:sans-serif;margin:2em;max-width:1200px}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px}"
        "td.n{text-align:right;font-variant-numeric:tabular-nums}tr.failed td{color:#b00}"
        "tr.errors td{color:#a60}code{background:#f4f4f4;padding:1px 4px}"
        ".warn{color:#a60}</style></head><body>",
        "<h1>anyserve bench</h1><ul>",
        *(f"<li>{_esc(line)}</li>" for line in describe_setup(report)),
        f"<li>started {_esc(report['started'])}, finished {_esc(report['finished'])}</li></ul>",
    ]
    if report["warnings"]:
        parts.append('<h2>Warnings</h2><ul class="warn">')
        parts += [f"<li>{_esc(w)}</li>" for w in report["warnings"]]
        parts.append("</ul>")
    for section in report.get("tune") or []:
        parts.append(f"<h2>tune: {_esc(section['scenario'])}</h2><ul>")
        for text, command in tune_picks(section):
            parts.append(f"<li>{_esc(text)}" + (f": <code>{_esc(command)}</code>" if command else "") + "</li>")
        parts.append("</ul>")
        parts += _html_table(TUNE_COLUMNS, tune_cells(section, versions))
    if _closed_groups(report):
        parts += ["<h2>Requests/s</h2>", "<p>Median of the repeats; the error bars span the min-max.</p>"]
        parts.append(rps_chart_svg(report))
    scenarios = list(dict.fromkeys(row["scenario"] for row in report["summary"]))
    if scenarios:
        parts.append("<h2>Latency against throughput</h2>")
        parts += [latency_rate_chart_svg(report, scenario) for scenario in scenarios]
    for title, rows in groups(report):
        parts.append(f"<h2>{_esc(title)}</h2>")
        if is_open(rows):
            parts.append(f"<p>Highest rate with p99 ≤ {report['settings']['latency_budget_ms']:g} ms:</p>")
            parts += _html_table(SWEEP_COLUMNS, sweep_cells(rows, versions))
        columns, cells = table(rows, versions)
        parts += _html_table(columns, cells, [row["status"] for row in rows])
        if not is_open(rows):
            parts.append(latency_chart_svg(report, title, rows))
    parts.append("</body></html>\n")
    return "\n".join(parts)
