"""``anyserve bench``: its options, the plan they make, the live display and the report files."""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import os
import re
import sys
from collections.abc import Sequence
from typing import Any

from ..child import python_command
from ..errors import EXIT_FAILURE, EXIT_OK, AppLoadError, ConfigError, install_hint
from .scenarios import SCENARIOS, Scenario

DESCRIPTION = """\
Servers side by side on one app: for each server x scenario x concurrency, start
the server as 'anyserve serve' would (own process, same options for all), time
it to its first answer, warm it up, measure it (closed loop, or at each --rate),
stop it. Servers are interleaved across repeats (A B C A B C ...) and the report
gives medians and the spread. --tune finds each server's workers and threads.

scenarios (--scenario, default hello; 'all' for every one):
""" + "\n".join(f"  {s.name:<9} {s.description}" for s in SCENARIOS.values())

EPILOG = """\
The load generator is wrk when it is on PATH (apt-get install wrk), else a
built-in asyncio generator; the report names it and warns when it used more than
80% of a core. Open-loop runs (--rate) use the built-in generator, whose own
ceiling is measured first against a trivial responder; a run it could not keep
the rate of is flagged invalid. With two or more CPUs, servers run on all CPUs
but the last and the load generator on the last (change with
--server-cpus/--client-cpus, or --no-pin).

examples:
  anyserve bench -s cheroot,waitress,gunicorn --scenario hello,json --concurrency 1,16,64
  anyserve bench --all --scenario all --duration 5s --html bench.html --json bench.json
  anyserve bench myapp:application --path /api/items -s gevent,eventlet -o pool_size=100
  anyserve bench --all --scenario hello --rate sweep --latency-budget 50ms --html sweep.html
  anyserve bench myapp:application --tune --budget 10m
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The bench options, on a parser the CLI provides (so errors print as one line)."""
    parser.add_argument(
        "app", nargs="?", metavar="APP", help="your own app to measure (module:attr ...), as serve takes it"
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("-s", "--server", dest="servers", action="append", metavar="S1,S2", help="servers to compare")
    which.add_argument("--all", action="store_true", help="every installed server")
    parser.add_argument(
        "--scenario",
        dest="scenarios",
        action="extend",
        nargs="+",
        metavar="NAME",
        help="scenario(s): --scenario hello json, or hello,json; default hello",
    )
    parser.add_argument("--path", default="/", help="the path requested from APP (default /)")
    parser.add_argument("--concurrency", default="32", metavar="N,N", help="connections, e.g. 1,16,64 (default 32)")
    parser.add_argument("--duration", default="10s", metavar="TIME", help="measured time per run (default 10s)")
    parser.add_argument(
        "--warmup", metavar="TIME", help="load before each measurement (default: 2s, or --duration if shorter)"
    )
    parser.add_argument("--repeat", metavar="N", help="runs of each server per scenario (default 3; 1 with --tune)")
    parser.add_argument(
        "--connection",
        default="keep-alive",
        metavar="MODE,MODE",
        help="keep-alive, close (a new connection per request), or both as separate runs (default keep-alive)",
    )
    loop = parser.add_argument_group("open loop: latency at a fixed rate")
    loop.add_argument(
        "--rate",
        metavar="R,R|sweep",
        help="send R requests/s, latency counted from when each request was due; 'sweep' (or sweep:FROM) "
        "raises the rate from 100 (or FROM) until the server saturates",
    )
    loop.add_argument(
        "--latency-budget",
        default="50ms",
        metavar="TIME",
        help="the p99 a server must stay within at a rate (default 50ms)",
    )
    tune = parser.add_argument_group("tuning: which workers and threads")
    tune.add_argument(
        "--tune",
        action="store_true",
        help="try each server with --workers 1..CPUs x --threads default,1,4,16,64 (or the -w/-t lists given)",
    )
    tune.add_argument("--budget", default="10m", metavar="TIME", help="the time --tune may take (default 10m)")
    group = parser.add_argument_group("options passed to every server")
    group.add_argument("-w", "--workers", metavar="N", help="worker processes (with --tune, a list: 1,2)")
    group.add_argument("-t", "--threads", metavar="N", help="threads per worker (with --tune, a list: 1,4,16)")
    group.add_argument("-o", "--option", dest="options", action="append", metavar="KEY=VALUE", help="server setting")
    group.add_argument("--app-dir", metavar="DIR", help="directory put first on sys.path to import APP")
    group.add_argument("--factory", action="store_true", help="APP names a factory to call")
    client = parser.add_argument_group("load generator and CPUs")
    client.add_argument("--generator", choices=("auto", "wrk", "builtin"), default="auto", help="default: wrk if found")
    client.add_argument("--client-threads", default="1", metavar="N", help="wrk threads (default 1)")
    client.add_argument("--server-cpus", metavar="LIST", help="CPUs for the servers, e.g. 0 or 0-2")
    client.add_argument("--client-cpus", metavar="LIST", help="CPUs for the load generator, e.g. 3")
    client.add_argument("--no-pin", action="store_true", help="pin nothing to any CPU")
    client.add_argument(
        "--retry-noisy",
        default="0",
        metavar="N",
        help="measure a run again, up to N times, when other processes used over 10%% of a core during it",
    )
    client.add_argument("--start-timeout", default="30s", metavar="TIME", help="wait for a first answer (default 30s)")
    out = parser.add_argument_group("reports")
    out.add_argument("--json", metavar="FILE", help="every raw run, the machine, the versions")
    out.add_argument("--markdown", metavar="FILE", help="the summary tables")
    out.add_argument("--html", metavar="FILE", help="a self-contained page with charts")
    out.add_argument("--svg", metavar="FILE", help="the requests/s chart alone")


# -- converting the options --------------------------------------------------------------

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*$")


def parse_duration(text: str, option: str, *, allow_zero: bool = False) -> float:
    """'10s', '500ms', '1m' or a plain number of seconds."""
    match = _DURATION.match(text)
    if match is None:
        raise ConfigError(f"{option} {text!r}: expected a duration such as 10s, 500ms or 1m")
    value = float(match.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}[match.group(2)]
    if value <= 0 and not allow_zero:
        raise ConfigError(f"{option} {text!r}: expected a duration above 0")
    return value


def parse_count(text: str, option: str, minimum: int = 1) -> int:
    if not text.strip().isdigit() or int(text) < minimum:
        raise ConfigError(f"{option} {text!r}: expected an integer of {minimum} or more")
    return int(text)


def parse_counts(text: str, option: str) -> list[int]:
    counts = [parse_count(part, option) for part in text.split(",") if part.strip()]
    if not counts:
        raise ConfigError(f"{option} {text!r}: expected integers such as 1,16,64")
    return list(dict.fromkeys(counts))


def parse_cpus(text: str, option: str, available: Sequence[int]) -> list[int]:
    """'0', '0,2' or '0-3', each CPU one this process may run on."""
    cpus: list[int] = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if match is None:
            raise ConfigError(f"{option} {text!r}: expected CPU numbers such as 0, 0,2 or 0-3")
        low, high = int(match.group(1)), int(match.group(2) or match.group(1))
        cpus += range(low, high + 1)
    missing = sorted(set(cpus) - set(available))
    if missing:
        raise ConfigError(
            f"{option} {text!r}: CPU {missing[0]} is not available here; available: {', '.join(map(str, available))}"
        )
    return sorted(set(cpus))


def split_list(values: Sequence[str] | None) -> list[str]:
    return [item.strip() for value in values or () for item in value.split(",") if item.strip()]


def choose_scenarios(args: argparse.Namespace) -> list[Scenario]:
    names = split_list(args.scenarios)
    if args.app is None:  # `--scenario hello myapp:app`: the last word is the APP, not a scenario
        apps = [name for name in names if name not in SCENARIOS and name != "all" and _looks_like_app(name)]
        if len(apps) == 1:
            args.app = apps[0]
            names.remove(apps[0])
    if not names and args.app is None:
        names = ["hello"]
    if "all" in names:
        names = [name for name in names if name != "all"] + [name for name in SCENARIOS if name not in names]
    chosen = []
    for name in dict.fromkeys(names):
        if name not in SCENARIOS:
            raise ConfigError(f"unknown scenario {name!r}; known scenarios: {', '.join(SCENARIOS)}, all")
        scenario = SCENARIOS[name]
        if scenario.requires:
            if importlib.util.find_spec(scenario.requires) is None:
                raise ConfigError(f"scenario {name!r} needs {scenario.requires}: pip install {scenario.requires}")
        chosen.append(scenario)
    if args.app is not None:
        if not args.path.startswith("/"):
            raise ConfigError(f"--path {args.path!r}: expected a path starting with '/'")
        name = args.app if args.app not in SCENARIOS and args.app != "all" else f"app {args.app}"
        chosen.append(Scenario(name, args.app, f"{args.app} at {args.path}", path=args.path))
    return chosen


def _looks_like_app(text: str) -> bool:
    return ":" in text or text.endswith(".py") or "/" in text


def choose_servers(args: argparse.Namespace) -> dict[str, str | None]:
    """The servers to run, each with its version; an unknown name is refused before anything starts."""
    from ..registry import get_adapter, server_names

    if args.all:
        names = [name for name in server_names() if get_adapter(name).is_installed()]
    else:
        names = list(dict.fromkeys(split_list(args.servers)))
    if not names:
        raise ConfigError("name the servers to compare: -s cheroot,waitress,... or --all (see anyserve list)")
    return {name: get_adapter(name).version() for name in names}


def server_args(args: argparse.Namespace) -> list[str]:
    result: list[str] = []
    tuning = getattr(args, "tune", False)  # then -w and -t are the grid, not options for every run
    if args.workers is not None and not tuning:
        result += ["-w", str(parse_count(args.workers, "--workers"))]
    if args.threads is not None and not tuning:
        result += ["-t", str(parse_count(args.threads, "--threads"))]
    for option in args.options or ():
        if "=" not in option:
            raise ConfigError(f"-o {option!r}: expected KEY=VALUE")
        result += ["-o", option]
    if args.app_dir is not None:
        result += ["--app-dir", os.path.abspath(args.app_dir)]
    if args.factory:
        result.append("--factory")
    return result


def choose_cpus(args: argparse.Namespace) -> tuple[list[int] | None, list[int] | None]:
    from .runner import available_cpus

    available = available_cpus()
    if args.no_pin:
        if args.server_cpus or args.client_cpus:
            raise ConfigError("--no-pin cannot be combined with --server-cpus or --client-cpus")
        return None, None
    server = parse_cpus(args.server_cpus, "--server-cpus", available) if args.server_cpus else None
    client = parse_cpus(args.client_cpus, "--client-cpus", available) if args.client_cpus else None
    if server is None and client is None and len(available) >= 2:
        return available[:-1], available[-1:]
    if server is not None and client is None and len(set(available) - set(server)) > 0:
        client = sorted(set(available) - set(server))
    if client is not None and server is None and len(set(available) - set(client)) > 0:
        server = sorted(set(available) - set(client))
    return server, client


def parse_rates(text: str | None) -> tuple[list[float] | None, float | None]:
    """``--rate``: (fixed rates, None), (None, the rate a sweep starts from), or (None, None) for a closed loop."""
    if text is None:
        return None, None
    name, _, start = text.strip().partition(":")
    if name == "sweep":
        first = _positive(start, "--rate", text) if start else 100.0
        return None, first
    rates = [_positive(part, "--rate", text) for part in text.split(",") if part.strip()]
    if not rates:
        raise ConfigError(f"--rate {text!r}: expected requests per second such as 500 or 100,500, or sweep")
    return sorted(dict.fromkeys(rates)), None


def _positive(part: str, option: str, text: str) -> float:
    try:
        value = float(part)
    except ValueError:
        value = 0.0
    if not value > 0 or value != value or value == float("inf"):
        raise ConfigError(
            f"{option} {text!r}: expected requests per second such as 500 or 100,500, or sweep, or sweep:FROM"
        )
    return value


def parse_connections(text: str) -> list[str]:
    from .load import CONNECTION_MODES

    modes = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [mode for mode in modes if mode not in CONNECTION_MODES]
    if unknown or not modes:
        raise ConfigError(f"--connection {text!r}: expected {' or '.join(CONNECTION_MODES)}, or both: keep-alive,close")
    return list(dict.fromkeys(modes))


def choose_generator(args: argparse.Namespace, client_cpus: list[int] | None) -> Any:
    from .loadgen import BuiltinGenerator
    from .wrk import Wrk

    if getattr(args, "rate", None) is not None:  # open loop: wrk has no fixed rate
        if args.generator == "wrk":
            raise ConfigError(
                "--generator wrk cannot send at a fixed rate (--rate); open-loop runs use --generator builtin"
            )
        return BuiltinGenerator(cpus=client_cpus)
    path = Wrk.find()
    if args.generator == "wrk" and path is None:
        raise ConfigError(
            "--generator wrk: wrk is not on PATH; install it (Debian: apt-get install wrk) or use builtin"
        )
    if args.generator in ("auto", "wrk") and path is not None:
        return Wrk(path, threads=parse_count(args.client_threads, "--client-threads"), cpus=client_cpus)
    return BuiltinGenerator(cpus=client_cpus)


def check_app(args: argparse.Namespace) -> None:
    """Load the user's APP once with ``anyserve check`` before any server starts: a typo is one
    error, not a failure per server."""
    import subprocess

    command = python_command("anyserve", "check", "-s", "wsgiref")
    command += ["--app-dir", os.path.abspath(args.app_dir or ".")] + (["--factory"] if args.factory else [])
    result = subprocess.run([*command, args.app], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.startswith("anyserve: error:")]
        message = lines[-1].removeprefix("anyserve: error:").strip() if lines else result.stderr.strip()[-300:]
        raise AppLoadError(message)


def _require_libraries() -> None:
    missing = [name for name in ("rich", "psutil") if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(f"anyserve bench needs {' and '.join(missing)}: {install_hint('bench')}")


# -- running -----------------------------------------------------------------------------


def tune_settings(args: argparse.Namespace) -> tuple[list[int] | None, list[int] | None, float]:
    """--tune's -w and -t lists (None: the default grid) and its --budget in seconds."""
    workers = parse_counts(args.workers, "--workers") if args.workers is not None else None
    threads = parse_counts(args.threads, "--threads") if args.threads is not None else None
    return workers, threads, parse_duration(args.budget, "--budget")


def check_tune(plan: Any) -> None:
    """--tune measures each setting at one load: one concurrency, one rate, one connection mode."""
    if plan.sweep_from is not None:
        raise ConfigError("--tune measures each setting at one rate: give --rate R, not a sweep")
    for option, values in (
        ("--concurrency", plan.concurrency),
        ("--rate", plan.rates or [None]),
        ("--connection", plan.connections),
    ):
        if len(values) > 1:
            raise ConfigError(f"--tune measures each setting at one load: give one {option}, not {len(values)}")


# -- running -----------------------------------------------------------------------------


def run_bench(args: argparse.Namespace) -> int:
    """Run ``anyserve bench`` with parsed options; the exit code is 0 when every server ran cleanly."""
    _require_libraries()
    from rich.console import Console

    from ..loader import add_app_dir
    from .display import Display
    from .results import build_report, describe_machine, rps_chart_svg, to_html, to_markdown, write_json, write_text
    from .runner import RUN_OVERHEAD_S, Plan, Run, available_cpus, measure_ceiling, run_plan
    from .tune import fit_budget, format_seconds, grid, rank, run_tune

    add_app_dir(args.app_dir or ".")  # as serve does: APP and -s module:Class import from there
    scenarios = choose_scenarios(args)
    versions = choose_servers(args)
    duration = parse_duration(args.duration, "--duration")
    rates, sweep_from = parse_rates(args.rate)
    budget_ms = parse_duration(args.latency_budget, "--latency-budget") * 1000
    server_cpus, client_cpus = choose_cpus(args)
    generator = choose_generator(args, client_cpus)
    repeat = parse_count(args.repeat, "--repeat") if args.repeat is not None else 1 if args.tune else 3
    plan = Plan(
        servers=list(versions),
        scenarios=scenarios,
        concurrency=parse_counts(args.concurrency, "--concurrency"),
        duration=duration,
        warmup=min(2.0, duration) if args.warmup is None else parse_duration(args.warmup, "--warmup", allow_zero=True),
        repeat=repeat,
        generator=generator,
        server_args=server_args(args),
        server_cpus=server_cpus,
        client_cpus=client_cpus,
        start_timeout=parse_duration(args.start_timeout, "--start-timeout"),
        cwd=os.getcwd(),
        retry_noisy=parse_count(args.retry_noisy, "--retry-noisy", minimum=0),
        connections=parse_connections(args.connection),
        rates=rates,
        sweep_from=sweep_from,
        latency_budget_ms=budget_ms,
    )
    grids = None
    tune_runs = budget = 0.0
    if args.tune:
        check_tune(plan)
        workers, threads, budget = tune_settings(args)
        cores = len(server_cpus) if server_cpus else len(available_cpus()) or os.cpu_count() or 1
        grids = {server: grid(server, cores, workers, threads) for server in plan.servers}
        tune_runs = float(sum(len(settings) for settings in grids.values()) * len(plan.scenarios) * plan.repeat)
        plan = fit_budget(plan, int(tune_runs), budget)
    if args.app is not None:
        check_app(args)
    for path in (args.json, args.markdown, args.html, args.svg):
        if path is not None and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            raise ConfigError(f"cannot write {path}: its directory does not exist")
    generator_info: dict[str, Any] = {"name": generator.name, "version": generator.version()}
    started = datetime.datetime.now(datetime.timezone.utc)
    console = Console()
    if not console.is_terminal:  # a log file or a pipe: wide enough for the whole table
        console = Console(width=200)
    if plan.open_loop:
        generator_info["ceiling"] = ceiling = {}
        generator_info["ceiling_client_cpu_share"] = shares = {}
        console.print(f"measuring the load generator's own ceiling ({', '.join(plan.connections)}) ...")
        for connection in plan.connections:
            run = measure_ceiling(plan, max(plan.concurrency), connection, min(3.0, plan.duration))
            if run.load is None:
                raise ConfigError(f"the load generator could not be measured: {run.error}")
            ceiling[connection] = round(run.load.requests_per_s, 1)
            shares[connection] = round(run.load.client_cpu_share, 2)
        plan.ceiling = dict(ceiling)
    announce = None
    if grids is not None:
        per_run = plan.warmup + plan.duration + RUN_OVERHEAD_S
        announce = (
            f"anyserve bench --tune: {len(plan.servers)} server(s), "
            + ", ".join(f"{server} {len(settings)} setting(s)" for server, settings in grids.items())
            + f"; {len(plan.scenarios)} scenario(s) x {plan.repeat} repeat(s) = {tune_runs:.0f} runs of about "
            f"{per_run:.1f} s ({plan.warmup:g} s warm-up, {plan.duration:g} s measured): about "
            f"{format_seconds(tune_runs * per_run)}, budget {format_seconds(budget)}; "
            f"load generator {generator_info['name']} {generator_info['version']}"
        )
    display = Display(
        plan, versions, generator_info, console, total_runs=int(tune_runs) if grids else None, announce=announce
    )
    interrupted = False
    completed = True
    runs: list[Run] = []
    machine = describe_machine()
    with display:
        try:
            if grids is not None:
                completed = run_tune(
                    plan, grids, budget, display.started, display.finished, display.progressed, runs=runs
                )
            else:
                run_plan(
                    plan,
                    on_start=display.started,
                    on_run=display.finished,
                    on_skip=display.skipped,
                    runs=runs,
                    on_progress=display.progressed,
                )
        except KeyboardInterrupt:  # the server of the current run is already stopped; keep what was measured
            interrupted = True
    report = build_report(plan, runs, versions, generator_info, started, machine)
    report["interrupted"] = interrupted
    report["estimate_s"] = round(
        tune_runs * (plan.warmup + plan.duration + RUN_OVERHEAD_S) if grids else plan.estimate_seconds()
    )
    if grids is not None:
        report["tune"] = rank(report, plan.scenarios)
        if not completed:
            report["warnings"].append(f"--budget {args.budget} ran out: the settings after the last run were not tried")
    display.print_footer(report)
    if interrupted:
        console.print("[red]interrupted:[/] the reports hold the runs finished so far", highlight=False)
    if args.json:
        write_json(report, args.json)
    if args.markdown:
        write_text(to_markdown(report), args.markdown)
    if args.html:
        write_text(to_html(report), args.html)
    if args.svg:
        write_text(rps_chart_svg(report) + "\n", args.svg)
    for kind, path in (("JSON", args.json), ("Markdown", args.markdown), ("HTML", args.html), ("SVG", args.svg)):
        if path:
            console.print(f"{kind}: {path}")
    clean = not interrupted and all(info["status"] == "ok" for info in report["servers"].values())
    sys.stdout.flush()
    return EXIT_OK if clean else EXIT_FAILURE
