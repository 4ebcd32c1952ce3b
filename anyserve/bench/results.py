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

from .runner import Plan, Run
from .stats import spread

LATENCY_KEYS = ("p50", "p90", "p99", "max")


@dataclass
class Summary:
    """The repeats of one server on one scenario at one concurrency."""

    server: str
    scenario: str
    concurrency: int
    status: str
    error: str | None
    runs: list[Run]

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
            "scenario": self.scenario,
            "concurrency": self.concurrency,
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
        }


def overall_status(statuses: Sequence[str]) -> str:
    """Of several runs or summaries: failed when every one failed, errors when any
    did not go cleanly, else ok (also for none)."""
    if statuses and all(status == "failed" for status in statuses):
        return "failed"
    return "errors" if any(status != "ok" for status in statuses) else "ok"


def summarize(plan: Plan, runs: Sequence[Run]) -> list[Summary]:
    """One Summary per scenario x concurrency x server that has runs, in the plan's order."""
    summaries = []
    for scenario in plan.scenarios:
        for concurrency in plan.concurrency:
            for server in plan.servers:
                mine = [
                    r
                    for r in runs
                    if (r.server, r.scenario, r.concurrency) == (server, scenario.name, concurrency) and not r.discarded
                ]
                if not mine:
                    continue
                status = overall_status([r.status for r in mine])
                failed = [r for r in mine if r.status == "failed"]
                with_errors = [r for r in mine if r.status == "errors"]
                error = (failed or with_errors)[0].error if status != "ok" else None
                summaries.append(Summary(server, scenario.name, concurrency, status, error, mine))
    return summaries


def client_warnings(runs: Sequence[Run]) -> list[str]:
    """One line per run whose load generator was close to saturating its CPU, or whose machine was busy."""
    lines = []
    discarded = sum(1 for run in runs if run.discarded)
    if discarded:
        lines.append(f"{discarded} run(s) measured while the machine was busy were measured again (kept in the JSON)")
    for run in runs:
        if run.discarded:
            continue
        if run.noisy and run.load is not None and run.other_cpu_s is not None:
            lines.append(
                f"{run.server} {run.scenario} c={run.concurrency} repeat {run.repeat}: other processes used "
                f"{run.other_cpu_s / run.load.duration_s:.0%} of a core during the run; the machine was not quiet"
            )
        if run.load is not None and run.load.client_saturated:
            lines.append(
                f"{run.server} {run.scenario} c={run.concurrency} repeat {run.repeat}: the load generator used "
                f"{run.load.client_cpu_share:.0%} of a core (of {run.load.client_cores}); "
                "this number may measure the client rather than the server"
            )
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


TABLE_COLUMNS = (
    "server",
    "req/s",
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


def table_row(row: dict[str, Any], versions: dict[str, str | None]) -> list[str]:
    """The cells of one summary row, shared by the terminal, Markdown and HTML tables."""
    rps = row["requests_per_s"]
    latency = row["latency_ms"] or {}
    version = versions.get(row["server"])
    status = row["status"] if not row["error"] else f"{row['status']}: {row['error']}"
    return [
        f"{row['server']} {version}" if version else row["server"],
        fmt_rps(rps["median"] if rps else None),
        fmt_spread(rps),
        *(fmt_ms(latency.get(key)) for key in LATENCY_KEYS),
        str(row["non_2xx"] + row["socket_errors"]),
        fmt_bytes(row["server_rss_peak_bytes"]),
        "-" if row["server_cpu_s"] is None else f"{row['server_cpu_s']:.2f}",
        "-" if row["startup_s"] is None else f"{row['startup_s']:.2f}",
        status,
    ]


def groups(report: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    """The summary rows grouped by scenario and concurrency, with a title for each group."""
    titled: dict[str, list[dict[str, Any]]] = {}
    descriptions = {s["name"]: s for s in report["settings"]["scenarios"]}
    for row in report["summary"]:
        scenario = descriptions.get(row["scenario"], {})
        title = (
            f"{row['scenario']} ({scenario.get('method', 'GET')} {scenario.get('path', '/')}), c={row['concurrency']}"
        )
        titled.setdefault(title, []).append(row)
    return list(titled.items())


def versions_of(report: dict[str, Any]) -> dict[str, str | None]:
    return {name: info["version"] for name, info in report["servers"].items()}


def describe_setup(report: dict[str, Any]) -> list[str]:
    machine, settings, gen = report["machine"], report["settings"], report["generator"]
    pinning = (
        f"server on CPUs {settings['server_cpus']}, client on CPUs {settings['client_cpus']}"
        if settings["server_cpus"] or settings["client_cpus"]
        else "not pinned"
    )
    return [
        f"machine: {machine['cpu_model']}, {machine['cpus_available']} of {machine['cpu_count']} CPUs, "
        f"{machine['system']}, {machine['python']}; load average at the start "
        f"{machine.get('load_average_at_start')}, at the end {report.get('load_average_at_end')}",
        f"load generator: {gen['name']} {gen['version']}; {pinning}",
        f"each run: {settings['warmup_s']:g} s warm-up, {settings['duration_s']:g} s measured; "
        f"{settings['repeat']} repeat(s), servers interleaved; medians shown, spread = half the min-max range",
        "server options: " + (" ".join(settings["server_args"]) or "none (each server's defaults)"),
    ]


def to_markdown(report: dict[str, Any]) -> str:
    """Summary tables, one per scenario and concurrency, with the setup above them."""
    versions = versions_of(report)
    lines = ["# anyserve bench", "", *(f"- {line}" for line in describe_setup(report)), ""]
    for title, rows in groups(report):
        lines += [f"## {title}", "", "| " + " | ".join(TABLE_COLUMNS) + " |"]
        lines.append(
            "|"
            + "|".join("---" if i in (0, len(TABLE_COLUMNS) - 1) else "---:" for i in range(len(TABLE_COLUMNS)))
            + "|"
        )
        for row in rows:
            cells = [cell.replace("|", "\\|") for cell in table_row(row, versions)]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
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


def rps_chart_svg(report: dict[str, Any]) -> str:
    """Requests/s (median) per server, min-max as error bars: one panel per scenario, each on its own
    scale (a 50 ms scenario would be invisible next to a hello), its concurrency levels side by side."""
    grouped = groups(report)
    scenarios = list(dict.fromkeys(rows[0]["scenario"] for _, rows in grouped))
    panels = [_rps_panel(report, [(t, rows) for t, rows in grouped if rows[0]["scenario"] == s]) for s in scenarios]
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


def _rps_panel(report: dict[str, Any], grouped: list[tuple[str, list[dict[str, Any]]]]) -> tuple[str, int, int]:
    """One bar chart (its SVG, width and height) for the groups of one scenario."""
    servers = list(report["servers"])
    if not grouped:
        grouped = [("no runs", [])]
    gap, pad_left, pad_top, height = 26, 70, 40, 260
    slots = max(1, len(servers)) * max(1, len(grouped))
    # Bars fill a 640-pixel-wide chart when there are few; past that the chart widens.
    bar = min(48.0, max(18.0, (640 - pad_left - 20 - gap * max(1, len(grouped))) / slots))
    group_width = bar * len(servers) + gap
    width = max(640, round(pad_left + group_width * max(1, len(grouped)) + 20))
    legend_rows = math.ceil(len(servers) / _legend_columns(width - pad_left))
    total_height = pad_top + height + 60 + 18 * legend_rows
    top = _nice_max(
        max((row["requests_per_s"]["max"] for _, rows in grouped for row in rows if row["requests_per_s"]), default=1)
    )
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{total_height}" '
        f'viewBox="0 0 {width} {total_height}" font-family="sans-serif" font-size="11">',
        f'<text x="{pad_left}" y="20" font-size="14" font-weight="bold">{_esc(grouped[0][0].split(", c=")[0])}: '
        "requests/s, median of the repeats (bars: min-max)</text>",
    ]
    for i in range(6):
        value = top * i / 5
        y = pad_top + height - height * i / 5
        out.append(f'<line x1="{pad_left}" x2="{width - 10}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{pad_left - 6}" y="{y + 4:.1f}" text-anchor="end">{value:,.0f}</text>')
    for g, (title, rows) in enumerate(grouped):
        x0 = pad_left + g * group_width + gap / 2
        by_server = {row["server"]: row for row in rows}
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
            if bar >= 30 and h >= 45:
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
        out.append(
            f'<text x="{label_x:.1f}" y="{pad_top + height + 16}" text-anchor="middle">{_esc(title.split(" (")[0])}'
            f"</text>"
        )
        out.append(
            f'<text x="{label_x:.1f}" y="{pad_top + height + 30}" text-anchor="middle" fill="#666">'
            f"c={rows[0]['concurrency']}</text>"
        )
    out += _legend(servers, pad_left, pad_top + height + 48, width - pad_left)
    out.append("</svg>")
    return "\n".join(out), width, total_height


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
    servers = list(report["servers"])
    pad_left, pad_top, width, height = 70, 40, 560, 220
    points = [
        (row["server"], [row["latency_ms"].get(key) for key in LATENCY_KEYS])
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


def to_html(report: dict[str, Any]) -> str:
    """One self-contained page: setup, charts and tables; no script, no external resource."""
    versions = versions_of(report)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>anyserve bench</title>',
        "<style>body{font-family:sans-serif;margin:2em;max-width:1200px}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px}"
        "td.n{text-align:right;font-variant-numeric:tabular-nums}tr.failed td{color:#b00}"
        ".warn{color:#a60}</style></head><body>",
        "<h1>anyserve bench</h1><ul>",
        *(f"<li>{_esc(line)}</li>" for line in describe_setup(report)),
        f"<li>started {_esc(report['started'])}, finished {_esc(report['finished'])}</li></ul>",
        rps_chart_svg(report),
    ]
    if report["warnings"]:
        parts.append('<h2>Warnings</h2><ul class="warn">')
        parts += [f"<li>{_esc(w)}</li>" for w in report["warnings"]]
        parts.append("</ul>")
    for title, rows in groups(report):
        parts.append(f"<h2>{_esc(title)}</h2><table><tr>")
        parts += [f"<th>{_esc(c)}</th>" for c in TABLE_COLUMNS]
        parts.append("</tr>")
        for row in rows:
            cells = table_row(row, versions)
            parts.append(f'<tr class="{_esc(row["status"])}">')
            for i, cell in enumerate(cells):
                cls = ' class="n"' if 0 < i < len(cells) - 1 else ""
                parts.append(f"<td{cls}>{_esc(cell)}</td>")
            parts.append("</tr>")
        parts.append("</table>")
        parts.append(latency_chart_svg(report, title, rows))
    parts.append("</body></html>\n")
    return "\n".join(parts)
