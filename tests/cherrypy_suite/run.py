"""Run CherryPy's own test suite natively and through anyserve on each server, side by side.

    .venv/bin/python -m tests.cherrypy_suite.run                    # native + every installed server
    .venv/bin/python -m tests.cherrypy_suite.run cheroot tornado    # native + these
    .venv/bin/python -m tests.cherrypy_suite.run --json r.json --markdown r.md --logs logs/

Each server is one pytest process (``-c tests/cherrypy_suite/suite.ini``, the
plugin in ``plugin.py``), one after the other. The table gives passed, failed
(errors included) and skipped (xfail included) per server, its run time, and
the tests that fail on that server but not natively. A server that cannot
serve from a thread or a loop of the test process is listed as such, not run.
Run from the repository's root.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
SUITE_INI = HERE / "suite.ini"
NATIVE = "native"
#: A whole run that takes longer than this is stopped (each test has its own timeout, in suite.ini).
RUN_TIMEOUT = 1800.0


@dataclass
class SuiteResult:
    """One run of CherryPy's suite: each test's outcome, or why it did not run."""

    server: str
    outcomes: dict[str, str] = field(default_factory=dict)
    durations: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    #: Set when the suite could not run on this server (then there are no outcomes).
    not_run: str = ""
    #: pytest's exit status (0 all passed, 1 some failed; anything else: the run itself broke).
    exit_code: int = 0

    def count(self, outcome: str) -> int:
        return sum(1 for value in self.outcomes.values() if value == outcome)

    @property
    def failed(self) -> set[str]:
        return {test for test, outcome in self.outcomes.items() if outcome == "failed"}

    def to_json(self) -> dict[str, object]:
        return {
            "server": self.server,
            "passed": self.count("passed"),
            "failed": self.count("failed"),
            "skipped": self.count("skipped"),
            "seconds": self.seconds,
            "not_run": self.not_run,
            "exit_code": self.exit_code,
            "outcomes": self.outcomes,
            "durations": self.durations,
        }


def cherrypy_root() -> str:
    """The folder that holds the ``cherrypy`` package: pytest's rootdir, so that
    test ids read ``cherrypy/test/test_conn.py::...``."""
    import cherrypy

    return str(Path(cherrypy.__file__).resolve().parents[1])


def cannot_run(server: str) -> str:
    """Why *server* cannot run the suite in the test process, or ""."""
    if server == NATIVE:
        return ""
    from anyserve.registry import get_adapter

    from .plugin import in_process_support

    if not get_adapter(server).is_installed():
        return "not installed"
    if in_process_support(server) is None:
        return "cannot run in-process"
    return ""


def run_suite(
    server: str, *, log: Path | None = None, extra: list[str] | None = None, timeout: float = RUN_TIMEOUT
) -> SuiteResult:
    """Run CherryPy's suite in a pytest process of its own, natively or on *server*."""
    reason = cannot_run(server)
    if reason:
        return SuiteResult(server, not_run=reason)
    with tempfile.TemporaryDirectory(prefix="anyserve-cpsuite-") as tmp:
        results = Path(tmp) / "results.json"
        command = [
            sys.executable,
            "-m",
            "pytest",
            "-c",
            str(SUITE_INI),
            "--rootdir",
            cherrypy_root(),
            "-p",
            "no:xdist",
            "-q",
            "--pyargs",
            "cherrypy.test",
            "--anyserve-server",
            server,
            "--anyserve-results",
            str(results),
            *(extra or []),
        ]
        env = {key: value for key, value in os.environ.items() if key != "PYTEST_ADDOPTS"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        started = time.monotonic()
        with open(log or os.devnull, "wb") as output:
            try:
                proc = subprocess.run(
                    command, cwd=tmp, env=env, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                    timeout=timeout,
                )  # fmt: skip
                exit_code = proc.returncode
            except subprocess.TimeoutExpired:
                return SuiteResult(server, not_run=f"did not finish within {timeout:.0f} s", exit_code=-1)
        seconds = round(time.monotonic() - started, 1)
        if not results.exists():
            return SuiteResult(server, seconds=seconds, not_run=f"pytest ended with {exit_code}", exit_code=exit_code)
        data = json.loads(results.read_text(encoding="utf-8"))
    result = SuiteResult(server, data["outcomes"], data.get("durations", {}), seconds, exit_code=exit_code)
    if not data.get("finished"):
        # Counts so far; the process ended (os._exit, a crash) without finishing the run.
        result.not_run = f"the process died (exit status {exit_code}) in {data.get('running') or 'no test'}"
    return result


def new_failures(result: SuiteResult, native: SuiteResult | None) -> list[str]:
    """The tests that fail on *result*'s server but not natively."""
    if native is None or result.server == NATIVE:
        return []
    return sorted(result.failed - native.failed)


def table(results: list[SuiteResult], native: SuiteResult | None) -> list[list[str]]:
    """Rows of server, passed, failed, skipped, time, and how many fail there but not natively."""
    rows = [["server", "passed", "failed", "skipped", "time", "failing here, not natively"]]
    for result in results:
        if result.not_run and not result.outcomes:
            rows.append([result.server, "", "", "", "", result.not_run])
            continue
        new = "" if native is None or result.server == NATIVE else str(len(new_failures(result, native)))
        if result.not_run:
            new = f"{new} (so far; {result.not_run})"
        counts = [str(result.count(outcome)) for outcome in ("passed", "failed", "skipped")]
        rows.append([result.server, *counts, f"{result.seconds:.0f} s", new])
    return rows


def text(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def markdown(rows: list[list[str]], results: list[SuiteResult], native: SuiteResult | None) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    for result in results:
        tests = new_failures(result, native)
        if tests:
            lines += ["", f"Failing on {result.server}, not natively:", ""] + [f"- `{test}`" for test in tests]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="CherryPy's test suite, natively and through anyserve per server.")
    parser.add_argument("servers", nargs="*", help="servers to run on (default: every installed server)")
    parser.add_argument("--json", type=Path, help="write every result, test by test, to this JSON file")
    parser.add_argument("--markdown", type=Path, help="write the table to this Markdown file")
    parser.add_argument("--logs", type=Path, help="keep each run's pytest output in this folder, as SERVER.log")
    parser.add_argument("--no-native", action="store_true", help="skip the native baseline")
    args = parser.parse_args(argv)

    from anyserve.registry import server_names

    servers = args.servers or server_names()
    if not args.no_native:
        servers = [NATIVE, *[name for name in servers if name != NATIVE]]
    if args.logs:
        args.logs.mkdir(parents=True, exist_ok=True)
    results = []
    for server in servers:
        log = args.logs / f"{server}.log" if args.logs else None
        print(f"{server}: running CherryPy's suite ...", file=sys.stderr, flush=True)
        result = run_suite(server, log=log)
        counts = f"{result.count('passed')} passed, {result.count('failed')} failed, {result.seconds:.0f} s"
        print(f"{server}: {result.not_run or counts}", file=sys.stderr, flush=True)
        results.append(result)
    native = next((result for result in results if result.server == NATIVE and not result.not_run), None)
    rows = table(results, native)
    print(text(rows))
    for result in results:
        tests = new_failures(result, native)
        if tests:
            print(f"\nfailing on {result.server}, not natively:\n  " + "\n  ".join(tests))
    if args.json:
        args.json.write_text(json.dumps([result.to_json() for result in results], indent=1) + "\n", encoding="utf-8")
    if args.markdown:
        args.markdown.write_text(markdown(rows, results, native), encoding="utf-8")
    broken = [result for result in results if result.not_run and result.exit_code]
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
