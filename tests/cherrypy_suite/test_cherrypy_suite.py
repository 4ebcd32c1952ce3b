"""CherryPy's own test suite through anyserve: exactly the recorded tests fail.

``expected.toml`` lists, per server, each test of ``cherrypy.test`` that fails
when anyserve serves the suite on that server, with the reason. A test that
starts failing fails this test; so does one that passes now, until it is taken
off the list: the list only shrinks as anyserve gets closer to CherryPy's own
server. Each server's run is one pytest process of about 300 tests (a few minutes).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from .run import SuiteResult, run_suite

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

EXPECTED = Path(__file__).with_name("expected.toml")
#: The servers run in CI; ``python -m tests.cherrypy_suite.run`` runs the others on demand.
SERVERS = ("cheroot", "tornado")
#: CherryPy 18.10's suite; far fewer outcomes means the run broke, not that tests passed.
AT_LEAST = 290


def expected(server: str) -> tuple[dict[str, str], dict[str, str]]:
    """The tests recorded as failing on *server*, and those that fail now and then; each with its reason."""
    with EXPECTED.open("rb") as fh:
        recorded = tomllib.load(fh).get(server, {})
    return recorded.get("failing", {}), recorded.get("flaky", {})


def differences(result: SuiteResult, failing: dict[str, str], flaky: dict[str, str]) -> list[str]:
    """What differs from the record, one line each."""
    failed = result.failed - set(flaky)
    lines = [f"fails, not in {EXPECTED.name}: {test}" for test in sorted(failed - set(failing))]
    fixed = sorted(set(failing) - failed)
    lines += [f"passes now, remove it from {EXPECTED.name}: {test} ({failing[test]})" for test in fixed]
    unknown = (set(failing) | set(flaky)) - set(result.outcomes)
    lines += [f"recorded in {EXPECTED.name} but not in the suite: {test}" for test in sorted(unknown)]
    return lines


@pytest.mark.long
@pytest.mark.timeout(1800)
def test_cherrypy_suite_fails_as_recorded(tmp_path: Path) -> None:
    # One server after the other: the suite's own servers take fixed ports
    # (test_config_server's 9877 and 9878), which two runs at once would share.
    report = []
    for server in SERVERS:
        failing, flaky = expected(server)
        log = tmp_path / f"{server}.log"
        result = run_suite(server, log=log)
        assert not result.not_run, f"CherryPy's suite did not run on {server}: {result.not_run}\n{tail(log)}"
        assert len(result.outcomes) >= AT_LEAST, f"{server}: only {len(result.outcomes)} outcomes\n{tail(log)}"
        lines = differences(result, failing, flaky)
        if lines:
            report.append(f"CherryPy's suite on {server} ({result.seconds:.0f} s):\n  " + "\n  ".join(lines))
    assert not report, "\n".join(report)


def tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.exists() else ""
