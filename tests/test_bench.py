"""anyserve bench: wrk's output parsed, percentiles, the built-in generator, and real runs end to end."""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from anyserve.bench import runner
from anyserve.bench.command import add_arguments, choose_scenarios, parse_cpus, parse_duration
from anyserve.bench.load import LoadResult
from anyserve.bench.loadgen import BuiltinGenerator, build_request, read_response
from anyserve.bench.results import client_warnings, summarize, to_html, to_markdown
from anyserve.bench.runner import Plan, Run
from anyserve.bench.scenarios import SCENARIOS, Scenario
from anyserve.bench.stats import Reservoir, percentile, spread
from anyserve.bench.wrk import lua_script, parse_bytes, parse_metric, parse_output, parse_time_ms
from anyserve.errors import EXIT_APP, EXIT_FAILURE, EXIT_OK, EXIT_USAGE, ConfigError

from .harness import run_anyserve

REPO_ROOT = Path(__file__).resolve().parents[1]

WRK_OUTPUT = """\
Running 2s test @ http://127.0.0.1:18765/
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     8.52ms    8.17ms  46.52ms   83.24%
    Req/Sec     4.80k     1.33k    9.16k    85.00%
  Latency Distribution
     50%    4.51ms
     75%   11.77ms
     90%   21.57ms
     99%   34.84ms
  9558 requests in 2.00s, 1.31MB read
Requests/sec:   4777.05
Transfer/sec:    670.46KB
"""

WRK_OUTPUT_WITH_ERRORS = """\
Running 10s test @ http://127.0.0.1:8000/upload
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   812.33us    1.20s     1.03m    97.10%
    Req/Sec     1.02M   -nan      1.50M     50.00%
  Latency Distribution
     50%  650.00us
     75%    1.10ms
     90%    2.00s
     99%    1.50m
  1234567 requests in 10.00s, 2.50GB read
  Socket errors: connect 3, read 12, write 1, timeout 7
  Non-2xx or 3xx responses: 42
Requests/sec: 123456.70
Transfer/sec:    256.00MB
"""


# -- wrk's output -----------------------------------------------------------------------------


def test_wrk_units() -> None:
    assert parse_time_ms("312.45us") == pytest.approx(0.31245)
    assert parse_time_ms("8.52ms") == 8.52
    assert parse_time_ms("1.20s") == 1200.0
    assert parse_time_ms("1.03m") == pytest.approx(61800.0)
    assert parse_time_ms("2.00h") == 7_200_000.0
    assert parse_metric("4.80k") == pytest.approx(4800.0)
    assert parse_metric("1.02M") == pytest.approx(1_020_000.0)
    assert parse_metric("502.11") == 502.11
    assert parse_bytes("670.46KB") == pytest.approx(670.46 * 1024)
    assert parse_bytes("1.31MB") == pytest.approx(1.31 * 1024**2)
    assert parse_bytes("12B") == 12
    for bad in ("12", "1.2 parsecs", "ms"):
        with pytest.raises(ValueError):
            parse_time_ms(bad)


def test_wrk_output_parsed() -> None:
    out = parse_output(WRK_OUTPUT)
    assert (out.requests, out.duration_s, out.requests_per_s) == (9558, 2.0, 4777.05)
    assert out.bytes_read == pytest.approx(1.31 * 1024**2)
    assert (out.latency_avg_ms, out.latency_max_ms) == (8.52, 46.52)
    assert out.distribution_ms == {50.0: 4.51, 75.0: 11.77, 90.0: 21.57, 99.0: 34.84}
    assert out.non_2xx == 0
    assert out.socket_errors == dict(connect=0, read=0, write=0, timeout=0)


def test_wrk_output_with_errors_and_every_unit() -> None:
    out = parse_output(WRK_OUTPUT_WITH_ERRORS)
    assert (out.requests, out.duration_s, out.requests_per_s) == (1234567, 10.0, 123456.7)
    assert out.bytes_read == pytest.approx(2.5 * 1024**3)
    assert out.latency_avg_ms == pytest.approx(0.81233)
    assert out.latency_max_ms == pytest.approx(61800.0)
    assert out.distribution_ms == {50.0: 0.65, 75.0: 1.1, 90.0: 2000.0, 99.0: 90000.0}
    assert out.non_2xx == 42
    assert out.socket_errors == dict(connect=3, read=12, write=1, timeout=7)


def test_wrk_output_not_understood() -> None:
    with pytest.raises(ValueError, match="Requests/sec"):
        parse_output("unable to connect to 127.0.0.1:1 Connection refused\n")


def test_wrk_script_for_bodies() -> None:
    assert lua_script(SCENARIOS["hello"]) is None
    script = lua_script(SCENARIOS["upload"])
    assert script is not None
    assert 'wrk.method = "POST"' in script and 'string.rep("x", 1048576)' in script


# -- percentiles and spread -------------------------------------------------------------------


def test_percentile_interpolates_between_ranks() -> None:
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([4, 1, 3, 2], 0) == 1
    assert percentile([4, 1, 3, 2], 100) == 4
    assert percentile(list(range(1, 101)), 90) == pytest.approx(90.1)
    assert percentile(list(range(1, 101)), 99) == pytest.approx(99.01)
    assert percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1], 101)


def test_reservoir_keeps_max_and_count_exact_beyond_capacity() -> None:
    reservoir = Reservoir(capacity=100)
    for value in range(10_000):
        reservoir.add(float(value))
    assert reservoir.count == 10_000 and len(reservoir.values) == 100
    result = reservoir.percentiles()
    assert result["max"] == 9999.0
    assert 3000 < result["p50"] < 7000  # a uniform sample of 0..9999
    assert list(result) == ["p50", "p90", "p99", "max"]
    assert Reservoir().percentiles() == {}


def test_spread_of_repeats() -> None:
    result = spread([100.0, 90.0, 110.0])
    assert result is not None
    assert (result.median, result.low, result.high, result.count) == (100.0, 90.0, 110.0, 3)
    assert result.relative == pytest.approx(0.2)
    assert spread([]) is None


# -- the plan ---------------------------------------------------------------------------------


def test_servers_are_interleaved_across_repeats() -> None:
    plan = Plan(
        servers=["a", "b", "c"],
        scenarios=[SCENARIOS["hello"], SCENARIOS["json"]],
        concurrency=[1, 16],
        duration=1.0,
        warmup=0.0,
        repeat=2,
        generator=BuiltinGenerator(),
    )
    order = [(scenario.name, concurrency, repeat, server) for scenario, concurrency, repeat, server in plan.order()]
    assert len(order) == plan.total_runs() == 24
    assert order[:7] == [
        ("hello", 1, 1, "a"),
        ("hello", 1, 1, "b"),
        ("hello", 1, 1, "c"),
        ("hello", 1, 2, "a"),
        ("hello", 1, 2, "b"),
        ("hello", 1, 2, "c"),
        ("hello", 16, 1, "a"),
    ]


def test_scenarios_by_name_and_the_users_app() -> None:
    def chosen(*argv: str) -> list[tuple[str, str, str]]:
        parser = argparse.ArgumentParser()
        add_arguments(parser)
        return [(s.name, s.app, s.path) for s in choose_scenarios(parser.parse_args(list(argv)))]

    assert chosen() == [("hello", "anyserve.bench.scenarios:hello", "/")]
    assert [name for name, _, _ in chosen("--scenario", "json", "hello,cpu")] == ["json", "hello", "cpu"]
    assert [name for name, _, _ in chosen("--scenario", "all")] == list(SCENARIOS)
    assert chosen("myapp:app", "--path", "/items") == [("myapp:app", "myapp:app", "/items")]
    assert chosen("--scenario", "hello", "myapp:app") == [
        ("hello", "anyserve.bench.scenarios:hello", "/"),
        ("myapp:app", "myapp:app", "/"),
    ]


def test_runs_on_a_busy_machine_are_measured_again(monkeypatch: pytest.MonkeyPatch) -> None:
    # Other processes' CPU during each successive run: 3 s then 0 s for "a"; 0.4 s (under 10% of 5 s) for "b".
    other = iter([3.0, 0.0, 0.4])

    def fake_measure(
        server: str, scenario: Scenario, concurrency: int, repeat: int, plan: Plan, *args: Any, **kwargs: Any
    ) -> list[Run]:
        load = LoadResult(requests=100, duration_s=5.0, requests_per_s=20.0, latency_ms={"p50": 1.0})
        return [Run(server, scenario.name, concurrency, repeat, other_cpu_s=next(other), load=load)]

    monkeypatch.setattr(runner, "measure_series", fake_measure)
    plan = Plan(["a", "b"], [SCENARIOS["hello"]], [32], 5.0, 0.0, 1, BuiltinGenerator(), retry_noisy=2)
    runs = runner.run_plan(plan)
    assert [(run.server, run.other_cpu_s, run.noisy, run.discarded) for run in runs] == [
        ("a", 3.0, True, True),
        ("a", 0.0, False, False),
        ("b", 0.4, False, False),
    ]
    assert [len(summary.runs) for summary in summarize(plan, runs)] == [1, 1]
    assert client_warnings(runs) == [
        "1 run(s) measured while the machine was busy were measured again (kept in the JSON)"
    ]


def test_durations_and_cpu_lists() -> None:
    assert parse_duration("10s", "--duration") == 10.0
    assert parse_duration("500ms", "--duration") == 0.5
    assert parse_duration("1m", "--duration") == 60.0
    assert parse_duration("2.5", "--duration") == 2.5
    assert parse_duration("0", "--warmup", allow_zero=True) == 0.0
    with pytest.raises(ConfigError, match="expected a duration above 0"):
        parse_duration("0s", "--duration")
    assert parse_cpus("0-2,5", "--server-cpus", range(8)) == [0, 1, 2, 5]
    with pytest.raises(ConfigError, match="CPU 9 is not available here"):
        parse_cpus("9", "--client-cpus", range(8))


# -- the built-in generator's HTTP -----------------------------------------------------------


def _read(data: bytes) -> tuple[int, bool, bytes]:
    async def go() -> tuple[int, bool, bytes]:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        status, keep_alive = await read_response(reader)
        return status, keep_alive, await reader.read()

    return asyncio.run(go())


def test_builtin_generator_reads_each_framing() -> None:
    assert _read(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloNEXT") == (200, True, b"NEXT")
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3;x=1\r\nabc\r\n0\r\n\r\nNEXT"
    assert _read(chunked) == (200, True, b"NEXT")
    assert _read(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi") == (200, False, b"")
    assert _read(b"HTTP/1.0 500 Oops\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n") == (500, True, b"")
    assert _read(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end") == (200, False, b"")


def test_builtin_generator_request_bytes() -> None:
    host, port, request = build_request("http://127.0.0.1:8123/a?b=1", "POST", b"xyz")
    assert (host, port) == ("127.0.0.1", 8123)
    assert request.startswith(b"POST /a?b=1 HTTP/1.1\r\nHost: 127.0.0.1:8123\r\n")
    assert request.endswith(b"Content-Length: 3\r\n\r\nxyz")


# -- end to end ------------------------------------------------------------------------------


def test_smoke_two_servers_to_json(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    result = run_anyserve(
        "bench", "-s", "wsgiref,cheroot", "--scenario", "hello", "--duration", "1s", "--repeat", "1", "--json", str(out)
    )
    assert result.returncode == EXIT_OK, result.stdout + result.stderr
    report = json.loads(out.read_text())
    assert list(report["servers"]) == ["wsgiref", "cheroot"]
    assert report["generator"]["name"] == ("wrk" if shutil.which("wrk") else "anyserve-builtin")
    assert report["machine"]["cpu_count"] >= 1 and report["machine"]["python"]
    assert all(info["status"] == "ok" and info["version"] for info in report["servers"].values())
    assert [(run["server"], run["scenario"], run["status"]) for run in report["runs"]] == [
        ("wsgiref", "hello", "ok"),
        ("cheroot", "hello", "ok"),
    ]
    for run in report["runs"]:
        assert run["requests"] > 0 and run["non_2xx"] == 0 and sum(run["socket_errors"].values()) == 0
        assert set(run["latency_ms"]) == {"p50", "p90", "p99", "max"}
        assert run["startup_s"] > 0 and run["server_rss_peak_bytes"] > 0 and run["server_cpu_s"] >= 0
        assert run["client_cpu_s"] >= 0
    assert "wsgiref" in result.stdout and "cheroot" in result.stdout and "req/s" in result.stdout

    # The other reports, from the same JSON: self-contained HTML (no script, nothing fetched) and Markdown.
    page = to_html(report)
    assert "<svg" in page and "<script" not in page.lower()
    assert [url for url in page.split('"') if url.startswith(("http:", "https:", "//"))] == [
        "http://www.w3.org/2000/svg"
    ] * page.count("<svg")
    markdown = to_markdown(report)
    assert "## hello (GET /), c=32" in markdown and "| cheroot " in markdown


def test_a_failing_server_is_reported_and_the_others_run(tmp_path: Path) -> None:
    out, html = tmp_path / "out.json", tmp_path / "out.html"
    servers = "tests.apps.failing_servers:CannotStart,wsgiref,tests.apps.failing_servers:Answers500"
    result = run_anyserve(
        "bench", "-s", servers, "--duration", "0.5s", "--warmup", "0", "--repeat", "2", "--generator", "builtin",
        "--json", str(out), "--html", str(html), cwd=REPO_ROOT,
    )  # fmt: skip
    assert result.returncode == EXIT_FAILURE, result.stdout + result.stderr
    report = json.loads(out.read_text())
    assert report["generator"]["name"] == "anyserve-builtin"
    statuses = {name: info["status"] for name, info in report["servers"].items()}
    assert statuses == {
        "tests.apps.failing_servers:CannotStart": "failed",
        "wsgiref": "ok",
        "tests.apps.failing_servers:Answers500": "failed",
    }
    errors = {name: info["error"] for name, info in report["servers"].items()}
    assert "RuntimeError: this server cannot start" in errors["tests.apps.failing_servers:CannotStart"]
    assert errors["tests.apps.failing_servers:Answers500"] == "answered 500 Internal Server Error to GET /"
    # Each failing server is tried once; wsgiref runs both repeats, after them and between them.
    assert [(run["server"].rsplit(":", 1)[-1], run["status"]) for run in report["runs"]] == [
        ("CannotStart", "failed"),
        ("wsgiref", "ok"),
        ("Answers500", "failed"),
        ("wsgiref", "ok"),
    ]
    # The terminal table says so too, and the run went on.
    table_lines = [line for line in result.stdout.splitlines() if "│" in line or "|" in line]
    assert any("CannotStart" in line and "failed" in line for line in table_lines), result.stdout
    assert any("Answers500" in line and "failed: answered 500" in line for line in table_lines), result.stdout
    assert "failed: tests.apps.failing_servers:Answers500: answered 500" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert "failed" in html.read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-s", "nosuch"], "unknown server 'nosuch'"),
        (["-s", "wsgiref", "--scenario", "hullo"], "unknown scenario 'hullo'; known scenarios: hello, json, large"),
        (["-s", "wsgiref", "--duration", "ten"], "--duration 'ten': expected a duration such as 10s, 500ms or 1m"),
        (["-s", "wsgiref", "--concurrency", "1,x"], "--concurrency 'x': expected an integer of 1 or more"),
        (["-s", "wsgiref", "--client-cpus", "999"], "--client-cpus '999': CPU 999 is not available here"),
        (["--scenario", "hello"], "name the servers to compare: -s cheroot,waitress,... or --all"),
        (["-s", "wsgiref", "--all"], "argument --all: not allowed with argument -s/--server"),
        (["-s", "wsgiref", "--json", "/no/such/dir/out.json"], "cannot write /no/such/dir/out.json"),
        (["no_such_module:app", "-s", "wsgiref,cheroot"], "no_such_module"),
    ],
)
def test_bad_input_is_one_line(args: list[str], message: str) -> None:
    result = run_anyserve("bench", *args)
    assert result.returncode == (EXIT_APP if "no_such_module" in message else EXIT_USAGE), result.stderr
    assert result.stderr.startswith("anyserve: error: ") and message in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


@pytest.mark.parametrize("command", [["--help"], ["list"], ["bench", "--help"]])
def test_help_and_list_import_neither_rich_nor_psutil(command: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "anyserve", *command], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == EXIT_OK, result.stderr
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in result.stderr.splitlines()}
    assert not imported & {"rich", "psutil"}
    if command != ["list"]:
        assert "anyserve bench" in result.stdout
