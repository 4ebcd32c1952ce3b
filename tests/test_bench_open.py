"""anyserve bench: open-loop runs, saturation, keep-alive and close, --tune, and the reports.

Short runs on loopback. The server that stalls is this module's ``stall_app``,
served by ``anyserve serve`` like any other APP.
"""

from __future__ import annotations

import json
import re
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from anyserve.bench.load import LoadResult
from anyserve.bench.loadgen import BuiltinGenerator, build_request
from anyserve.bench.results import X_BEST, build_report, sweep_rows, to_html, to_markdown
from anyserve.bench.runner import Plan, Run, ServerProcess, free_port, measure_series, saturation, sweep_rates
from anyserve.bench.scenarios import SCENARIOS, Scenario
from anyserve.bench.wrk import Wrk
from anyserve.child import python_command
from anyserve.errors import EXIT_OK, EXIT_USAGE

from .harness import run_anyserve, start_anyserve

REPO_ROOT = Path(__file__).resolve().parents[1]

#: How long stall_app holds one request; after how long it does so first, and again after a stall.
STALL_S = 1.2
STALL_AFTER_S = 1.0
STALL_AGAIN_S = 2.5
_stall = {"next": 0.0}
_stall_lock = threading.Lock()


def stall_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    """Hello, except that the first request STALL_AFTER_S after the first one waits STALL_S, and so
    does the first one STALL_AGAIN_S after that stall ended: once in the middle of a 3 s run started
    with the server, and again in the middle of a second run measured right after it."""
    now = time.monotonic()
    with _stall_lock:
        _stall["next"] = _stall["next"] or now + STALL_AFTER_S
        stall = now >= _stall["next"]
        if stall:
            _stall["next"] = now + STALL_S + STALL_AGAIN_S
    if stall:
        time.sleep(STALL_S)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"hello"]


@pytest.fixture
def responder() -> Iterator[str]:
    """The trivial responder a generator's ceiling is measured against, on a free port."""
    port = free_port()
    process = ServerProcess(python_command("anyserve.bench.responder", str(port)), str(REPO_ROOT), None)
    try:
        process.wait_first_answer(port, SCENARIOS["hello"], 20)
        yield f"http://127.0.0.1:{port}/"
    finally:
        process.kill()
        process.stop()


def test_open_loop_holds_the_rate_and_close_opens_a_connection_per_request(responder: str) -> None:
    generator = BuiltinGenerator()
    progress: list[dict[str, float]] = []
    load = generator.run(responder, SCENARIOS["hello"], 8, 2.0, rate=200, on_progress=progress.append)
    assert load.target_rate == 200 and load.scheduled == 400
    assert load.requests_per_s == pytest.approx(200, rel=0.05)
    assert load.errors == 0 and load.unfinished == 0
    assert load.connections == 8  # kept alive: opened once each
    # The live line: requests/s and p99 every half second while the run goes.
    assert len(progress) >= 2 and all("rps" in line and "elapsed" in line for line in progress)
    assert any("p99" in line for line in progress)

    close = generator.run(responder, SCENARIOS["hello"], 4, 0.5, connection="close")
    assert close.connection == "close" and close.target_rate is None
    assert close.requests > 0 and close.errors == 0
    assert close.connections >= close.requests  # a new connection for every request


def _plan(**settings: Any) -> Plan:
    defaults: dict[str, Any] = dict(
        servers=["wsgiref"],
        scenarios=[],
        concurrency=[2],
        duration=3.0,
        warmup=0.0,
        repeat=1,
        generator=BuiltinGenerator(),
        server_args=["-t", "1"],
        cwd=str(REPO_ROOT),
        latency_budget_ms=50.0,
    )
    return Plan(**{**defaults, **settings})


@pytest.mark.parametrize("rate", [100.0, None], ids=["open-loop", "closed-loop"])
def test_latency_counts_from_when_each_request_was_due(rate: float | None) -> None:
    # One thread: while stall_app holds a request, every other one waits. Open loop, the
    # requests due meanwhile wait too and say so; closed loop, the client waits with them,
    # sends nothing, and only the two requests that were in flight see the stall.
    scenario = Scenario("stall", "tests.test_bench_open:stall_app", "stalls once")
    runs = measure_series("wsgiref", scenario, 2, 1, _plan(rates=[rate] if rate else None), [rate])
    (run,) = [run for run in runs if not run.discarded]  # one more if the client fell behind
    assert run.status == "ok", run.error
    assert run.load is not None
    p99, worst = run.load.latency_ms["p99"], run.load.latency_ms["max"]
    assert worst >= STALL_S * 1000 * 0.95  # the stall happened during the measured run
    if rate is None:
        assert p99 < 1000, run.load
        assert run.load.requests > 200
    else:
        assert p99 >= 1000, run.load
        assert run.saturated is not None


def test_saturation_rules() -> None:
    def load(rps: float, p99: float, errors: int = 0) -> LoadResult:
        return LoadResult(
            requests=int(rps),
            duration_s=1.0,
            requests_per_s=rps,
            latency_ms={"p50": 1.0, "p99": p99},
            non_2xx=errors,
            target_rate=100.0,
            scheduled=100,
        )

    assert saturation(load(99.0, 40.0), 50.0) is None
    assert saturation(load(99.0, 60.0), 50.0) == "p99 60.0 ms over the 50 ms budget"
    assert saturation(load(90.0, 10.0), 50.0) == "answered 90 req/s, under 95% of 100"
    assert saturation(load(99.0, 10.0, errors=3), 50.0) == "3 error(s)"
    closed = LoadResult(requests=5, duration_s=1.0, requests_per_s=5.0, latency_ms={"p99": 900.0})
    assert saturation(closed, 50.0) is None  # a closed loop has no rate to keep
    late = LoadResult(requests=100, duration_s=1.0, requests_per_s=100.0, latency_ms={}, target_rate=100.0)
    late.scheduled, late.late = 100, 2
    assert late.client_bound is None  # two late sends are a hiccup
    late.late = 10
    assert late.client_bound is not None and "could not keep 100 req/s" in late.client_bound
    assert sweep_rates(100, 1000) == [100, 150, 200, 300, 500, 700, 1000]
    assert sweep_rates(10, 35) == [10, 15, 20, 30]


def test_a_sweep_stops_where_the_server_saturates(tmp_path: Path) -> None:
    # slow (50 ms a request) on one thread answers at most 20 requests/s: the sweep (10, 15, 20, 30)
    # ends at 30 at the latest, where fewer than 95% of the requests asked for are answered.
    out, page, table = tmp_path / "sweep.json", tmp_path / "sweep.html", tmp_path / "sweep.md"
    result = run_anyserve(
        "bench", "-s", "wsgiref", "-t", "1", "--scenario", "slow", "--concurrency", "4", "--rate", "sweep:10",
        "--latency-budget", "1s", "--duration", "1s", "--warmup", "0", "--repeat", "1",
        "--json", str(out), "--html", str(page), "--markdown", str(table), cwd=REPO_ROOT,
    )  # fmt: skip
    assert result.returncode == EXIT_OK, result.stdout + result.stderr
    assert re.search(r"at most \d+ run\(s\), at most about \d+", result.stdout), result.stdout
    report = json.loads(out.read_text())
    assert report["settings"]["mode"] == "open" and report["settings"]["sweep_from"] == 10
    assert report["generator"]["name"] == "anyserve-builtin"
    assert report["generator"]["ceiling"]["keep-alive"] > 200
    kept = [run for run in report["runs"] if not run["discarded"]]
    seen = [(r["rate"], r["status"], r["error"], r["saturated"], r["client_bound"]) for r in kept]
    rates = [run["rate"] for run in kept]
    assert rates == sorted(rates) and rates[0] == 10, seen
    assert all(run["saturated"] is None for run in kept[:-1]), seen
    last = kept[-1]
    assert last["saturated"] and last["rate"] <= 30, seen
    (row,) = sweep_rows(report["summary"])
    assert row["saturated_at"] == last["rate"] and row["highest"] == (rates[-2] if len(rates) > 1 else None)
    assert "## slow (GET /), c=4, keep-alive" in table.read_text()
    assert "highest rate in budget" in page.read_text()


def test_tune_picks_more_threads_for_slow_than_for_hello(tmp_path: Path) -> None:
    # At 200 requests/s, cheroot answers hello as fast as asked with 1 thread or 16, and of
    # settings that do alike the one with fewer threads is named; on slow (50 ms a request)
    # one thread answers 20 a second, 16 threads all 200. A fixed rate keeps the comparison
    # out of reach of other work on the machine, which moves closed-loop requests/s by half.
    out = tmp_path / "tune.json"
    result = run_anyserve(
        "bench", "-s", "cheroot", "--scenario", "hello,slow", "--tune", "-w", "1", "-t", "1,16",
        "--concurrency", "16", "--rate", "200", "--duration", "0.6s", "--warmup", "0", "--budget", "1m",
        "--json", str(out),
    )  # fmt: skip
    assert result.returncode == EXIT_OK, result.stdout + result.stderr
    assert "anyserve bench --tune: 1 server(s), cheroot 2 setting(s); 2 scenario(s) x 1 repeat(s) = 4 runs" in (
        result.stdout
    )
    assert "budget 1m00s" in result.stdout
    report = json.loads(out.read_text())
    tune = {section["scenario"]: section for section in report["tune"]}
    assert tune["hello"]["best_throughput"]["variant"] == "-t 1", tune["hello"]["rows"]
    assert tune["slow"]["best_throughput"]["variant"] == "-t 16", tune["slow"]["rows"]
    assert tune["slow"]["best_throughput"]["command"] == "anyserve -s cheroot -t 16 anyserve.bench.scenarios:slow"
    assert "anyserve -s cheroot -t 16 anyserve.bench.scenarios:slow" in result.stdout
    assert [row["rank"] for row in tune["slow"]["rows"]] == [1, 2]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rate", "fast"], "--rate 'fast': expected requests per second such as 500 or 100,500, or sweep"),
        (["--rate", "0"], "--rate '0': expected requests per second"),
        (["--rate", "100", "--generator", "wrk"], "--generator wrk cannot send at a fixed rate (--rate)"),
        (["--connection", "pipelined"], "--connection 'pipelined': expected keep-alive or close"),
        (["--tune", "--rate", "sweep"], "--tune measures each setting at one rate: give --rate R, not a sweep"),
        (["--tune", "--concurrency", "1,8"], "--tune measures each setting at one load: give one --concurrency"),
        (["--tune", "--budget", "5s"], "--budget 5s: 5 runs need at least 12s"),
    ],
)
def test_bad_open_loop_and_tune_input_is_one_line(args: list[str], message: str) -> None:
    result = run_anyserve("bench", "-s", "wsgiref", *args)
    assert result.returncode == EXIT_USAGE, result.stderr
    assert result.stderr.startswith("anyserve: error: ") and message in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_close_for_every_generator() -> None:
    _, _, request = build_request("http://127.0.0.1:8000/", "GET", b"", close=True)
    assert b"\r\nConnection: close\r\n" in request
    command = Wrk("/usr/bin/wrk").command("http://127.0.0.1:8000/", 32, 5, None, "close")
    assert command[command.index("-H") + 1] == "Connection: close"
    assert "-H" not in Wrk("/usr/bin/wrk").command("http://127.0.0.1:8000/", 32, 5, None)


# -- the reports, from runs made up here ----------------------------------------------------------


def _run(server: str, scenario: str, rps: float, p99: float, **extra: Any) -> Run:
    rate = extra.pop("rate", None)
    load = LoadResult(
        requests=int(rps * 5),
        duration_s=5.0,
        requests_per_s=rps,
        latency_ms={"p50": p99 / 4, "p90": p99 / 2, "p99": p99, "max": p99 * 2},
        target_rate=rate,
        scheduled=int((rate or 0) * 5),
        connection=extra.get("connection", "keep-alive"),
    )
    return Run(server, scenario, 32, 1, load=load, rate=rate, server_cpu_s=1.0, startup_s=0.2, **extra)


def _report(runs: list[Run], **settings: Any) -> dict[str, Any]:
    import datetime

    plan = _plan(servers=["cheroot", "waitress"], scenarios=[SCENARIOS["hello"], SCENARIOS["slow"]], **settings)
    machine = {"cpu_model": "Test CPU", "cpu_count": 2, "cpus_available": 2, "system": "Linux", "python": "CPython"}
    generator = {"name": "anyserve-builtin", "version": "0", "ceiling": {"keep-alive": 8000.0}}
    started = datetime.datetime(2026, 12, 2, tzinfo=datetime.timezone.utc)
    return build_report(plan, runs, {"cheroot": "11", "waitress": "3"}, generator, started, machine)


def test_open_loop_report_files() -> None:
    runs = [
        _run("cheroot", "hello", 100, 2.0, rate=100.0),
        _run("cheroot", "hello", 200, 4.0, rate=200.0),
        _run("cheroot", "hello", 260, 90.0, rate=300.0, saturated="p99 90.0 ms over the 50 ms budget"),
        _run("waitress", "hello", 100, 1.0, rate=100.0),
        _run("waitress", "hello", 200, 30.0, rate=200.0, saturated="p99 60.0 ms over the 50 ms budget"),
    ]
    report = _report(runs, sweep_from=100.0)
    page = to_html(report)
    assert "<script" not in page.lower()
    assert [url for url in page.split('"') if url.startswith(("http:", "https:", "//"))] == [
        "http://www.w3.org/2000/svg"
    ] * page.count("<svg")
    # The machine and the settings come first, then the charts.
    assert page.index("Test CPU") < page.index("open loop: rates raised from 100") < page.index("<svg")
    assert "ceiling, keep-alive: 8,000 req/s" in page
    charts = re.findall(r"<svg.*?</svg>", page, re.S)
    assert len(charts) == 1 and "p99 latency (ms) against requests/s, log scales" in charts[0]
    assert "budget 50 ms" in charts[0] and charts[0].count("<path") == 2  # a line per server
    ET.fromstring(charts[0])
    markdown = to_markdown(report)
    sweep = [line for line in markdown.splitlines() if line.startswith("| cheroot") or line.startswith("| waitress")]
    assert sweep[:2] == [
        "| cheroot 11 | 200 | 1.00 | 4.00 | 300 | saturated: p99 90.0 ms over the 50 ms budget |",
        "| waitress 3 | 100 | 0.50 | 1.00 | 200 | saturated: p99 60.0 ms over the 50 ms budget |",
    ]
    assert f"| server | highest rate in budget | {X_BEST} |" in markdown


def test_closed_loop_report_files() -> None:
    runs = [
        _run("cheroot", "hello", 8000, 10.0),
        _run("waitress", "hello", 4000, 20.0),
        _run("cheroot", "hello", 2000, 30.0, connection="close"),
        _run("waitress", "hello", 1000, 40.0, connection="close"),
    ]
    report = _report(runs, connections=["keep-alive", "close"])
    markdown = to_markdown(report)
    lines = markdown.splitlines()
    tables = [line for line in lines if line.startswith("|")]
    assert len({line.count("|") - line.count("\\|") for line in tables}) == 1  # every row as wide as its header
    assert "## hello (GET /), c=32, keep-alive" in markdown and "## hello (GET /), c=32, close" in markdown
    assert f"| server | req/s | {X_BEST} |" in markdown
    assert "| waitress 3 | 4,000 | 0.50 |" in markdown and "| waitress 3 | 1,000 | 0.50 |" in markdown
    page = to_html(report)
    bars = re.search(r"<svg.*?</svg>", page, re.S)
    assert bars is not None and "hello: requests/s" in bars.group(0)
    width = float(ET.fromstring(bars.group(0)).get("width") or 0)
    # Two groups of two bars: the chart is as wide as they need, not a fixed 640 pixels.
    assert width < 400
    assert "p99 latency (ms) against requests/s" in page and "(close)" in page


def test_the_terminal_announces_the_time_and_shows_the_run_going_on() -> None:
    import io

    from rich.console import Console

    from anyserve.bench.display import Display

    plan = _plan(servers=["cheroot", "waitress"], scenarios=[SCENARIOS["hello"]], rates=[100.0, 200.0])
    console = Console(file=io.StringIO(), width=200)
    display = Display(plan, {"cheroot": "11", "waitress": "3"}, {"name": "anyserve-builtin", "version": "0"}, console)
    # 2 servers x 2 rates, each server started once: 1.5 s to start and stop, 2 x 3 s measured.
    assert plan.total_runs() == 4 and plan.estimate_seconds() == 2 * (1.5 + 2 * 3.0)
    assert "2 server(s) x 1 scenario(s) x 1 concurrency level(s) x 2 rate(s) x 1 repeat(s): 4 run(s), about 15s" in (
        console.file.getvalue()  # type: ignore[attr-defined]
    )
    run = Run("cheroot", "hello", 2, 1, rate=100.0)
    display.started(run)
    display.progressed(run, {"elapsed": 1.0, "rps": 99.5, "p99": 2.5})
    task = display.progress.tasks[0]
    assert task.description == "cheroot · hello · c=2 · keep-alive · 100 req/s"
    assert task.fields["live"] == "100 req/s, p99 2.50 ms, 2 s left"


def test_the_tune_grid_and_its_budget() -> None:
    from anyserve.bench.tune import fit_budget, grid

    servers = ("cheroot", "gunicorn", "gevent", "werkzeug")
    labels = {server: [s.label() for s in grid(server, 2)] for server in servers}
    assert labels["cheroot"][:5] == ["defaults (10 threads)", "-t 1", "-t 4", "-t 16", "-t 64"]
    assert len(labels["cheroot"]) == 10 and labels["cheroot"][5:7] == ["-w 2", "-w 2 -t 1"]
    assert labels["gunicorn"][:4] == ["defaults (1 thread)", "-t 4", "-t 16", "-t 64"]  # -t 1 is the default
    assert labels["gevent"] == ["defaults", "-w 2"]  # no threads: workers only
    assert labels["werkzeug"] == ["defaults", "-t 1", "-w 2", "-w 2 -t 1"]  # it refuses any other --threads
    plan = _plan(duration=10.0, warmup=2.0)
    assert fit_budget(plan, 10, 600) is plan
    cut = fit_budget(plan, 10, 60)  # 6 s a run: 1.5 s to start and stop, 4.5 s for the rest
    assert cut.warmup == 0.9 and cut.duration == 3.6


def test_a_setting_that_answers_differently_is_reported_not_ranked() -> None:
    from anyserve.bench.tune import rank

    runs = [
        _run("cheroot", "hello", 5000, 10.0, variant="-t 1", fingerprint="200 sha256:aaaa"),
        _run("cheroot", "hello", 5100, 30.0, variant="-t 16", fingerprint="200 sha256:aaaa"),
        _run("waitress", "hello", 9000, 5.0, variant="-t 4", fingerprint="500 sha256:bbbb"),
        _run("waitress", "hello", 4000, 60.0, variant="-t 16", fingerprint="200 sha256:aaaa"),
    ]
    report = _report(runs, server_args=[])
    (section,) = rank(report, [SCENARIOS["hello"]])
    verdicts = [(row["server"], row["variant"], row.get("rank"), row["verdict"]) for row in section["rows"]]
    assert verdicts == [
        ("cheroot", "-t 16", 1, "ok"),
        ("cheroot", "-t 1", 2, "ok"),
        ("waitress", "-t 16", 3, "ok"),
        (
            "waitress",
            "-t 4",
            None,
            "answers differ: 500 sha256:bbbb where the first run answered 200 sha256:aaaa",
        ),
    ]
    # -t 1 is within 5% of -t 16 with fewer threads; and it has the lowest p99 within 50 ms.
    assert section["best_throughput"]["command"] == "anyserve -s cheroot -t 1 anyserve.bench.scenarios:hello"
    assert section["best_latency"]["variant"] == "-t 1"
    assert section["best_per_server"]["waitress"]["variant"] == "-t 16"
    assert "answers differ" in to_markdown({**report, "tune": [section]})


def test_a_setting_whose_client_fell_behind_ranks_by_requests_only() -> None:
    from anyserve.bench.tune import rank

    runs = [
        _run("cheroot", "hello", 200, 5.0, variant="-t 1", fingerprint="200 sha256:aaaa", rate=200.0),
        _run("cheroot", "hello", 199, 1.0, variant="-t 16", fingerprint="200 sha256:aaaa", rate=200.0),
    ]
    assert runs[1].load is not None
    runs[1].load.late = 50  # of 1,000 due: 5%
    (section,) = rank(_report(runs, server_args=[]), [SCENARIOS["hello"]])
    assert [(row["variant"], row["rank"]) for row in section["rows"]] == [("-t 1", 1), ("-t 16", 2)]
    assert section["rows"][1]["verdict"].startswith("ranked by requests/s only: the load generator sent 50")
    # Its p99 holds the client's delay: the lowest p99 within the budget is the other one's.
    assert section["best_latency"]["variant"] == "-t 1"


def test_connections_the_server_closed_while_idle_are_opened_again() -> None:
    """At a low rate each kept-alive connection idles past the server's keep-alive
    timeout and the server closes it: the generator opens it again, as HTTP
    clients do, and counts no error."""
    running = start_anyserve("cheroot", SCENARIOS["hello"].app, "--timeout-keep-alive", "0.3")
    try:
        load = BuiltinGenerator().run(running.url, SCENARIOS["hello"], 4, 3.0, rate=4)
    finally:
        running.stop()
    assert load.requests > 0 and load.errors == 0 and load.unfinished == 0
    assert load.connections > 4  # opened again after the server closed them
