"""Event-loop servers, through anyserve and started by hand, side by side in one run.

    python benchmarks/event_loop_servers.py [--duration 5] [--warmup 2] [--repeat 3] [--only tornado,gevent]
                                            [--retry-noisy 2] [--json FILE]

Two comparisons, each pair measured as bench_vs_raw.py measures it (compare.py):
started, timed to its first answer, warmed up, measured by the same load
generator (wrk with one thread where it is installed) on the same CPUs, the
variants interleaved across repeats (anyserve A, by hand A, anyserve B, ...),
a run on a busy machine measured again, and the median of the repeats reported.
The ratio is anyserve / by hand.

1. The slow scenario (each request blocks 50 ms), 32 connections: Tornado's
   ``WSGIContainer(app)`` as its docs show (raw_servers.py tornado-default),
   which runs the app on the IOLoop, against ``anyserve -s tornado -t 32``.
2. The hello scenario, 32 connections, the same 10 threads where the server has
   threads: tornado, twisted, gevent and eventlet each started the way its docs
   show (raw_servers.py) against anyserve.

Both sides serve the same function of anyserve.bench.scenarios (raw_servers.py
imports it through scenario_apps), and neither writes an access log.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from anyserve.bench.results import describe_machine
from anyserve.bench.scenarios import SCENARIOS

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare import Comparison, Pair, Recording, Results, add_arguments, describe_plan, make_plan, rates_of

CONCURRENCY = 32

#: By key in the JSON file's results.
COMPARISONS: dict[str, Comparison] = {
    "slow": Comparison(
        f"slow (each request blocks 50 ms), c={CONCURRENCY}: Tornado's own container against anyserve's pool",
        SCENARIOS["slow"],
        CONCURRENCY,
        (Pair("tornado", "WSGIContainer(app), as Tornado's docs show", ("-t", "32"), raw_name="tornado-default"),),
    ),
    "hello": Comparison(
        f"hello, c={CONCURRENCY}, 10 threads: event-loop servers through anyserve and started by hand",
        SCENARIOS["hello"],
        CONCURRENCY,
        (
            Pair("tornado", "WSGIContainer(app, executor=ThreadPoolExecutor(10))", ("-t", "10")),
            Pair("twisted", "WSGIResource on the reactor's thread pool of 10", ("-t", "10")),
            Pair("gevent", "WSGIServer(('127.0.0.1', port), app)"),
            Pair("eventlet", "eventlet.wsgi.server(eventlet.listen(...), app)"),
        ),
    ),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    parser.add_argument("--only", default="", help="comma-separated servers (default: every installed one)")
    args = parser.parse_args()

    machine = describe_machine()  # its load average before the run
    servers = args.only.split(",") if args.only else sorted({p.server for c in COMPARISONS.values() for p in c.pairs})
    comparisons = {key: c.only(servers) for key, c in COMPARISONS.items()}
    comparisons = {key: c for key, c in comparisons.items() if c.pairs}
    plan = make_plan(
        args,
        sorted({p.server for c in comparisons.values() for p in c.pairs}),
        [c.scenario for c in comparisons.values()],
        CONCURRENCY,
    )
    describe_plan(plan, f"{', '.join(comparisons)}, c={CONCURRENCY}")
    recording = Recording()
    results: dict[str, Results] = {}
    for key, comparison in comparisons.items():
        results[key] = comparison.measure(recording, plan)
        comparison.print_table(results[key])
    if args.json:
        recording.write(args.json, plan, args, machine, results={key: rates_of(r) for key, r in results.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
