"""gunicorn's own cases: its log lines go through anyserve's logging."""

from __future__ import annotations

import re

from ..harness import APP, REPO_ROOT, Running, fetch, free_port, start_anyserve, wait_for_port

LINE = re.compile(r"^\[[^]]+\] \[\d+\] \[INFO\] gunicorn\.error: Booting worker with pid: \d+$", re.MULTILINE)


def test_gunicorn_logs_in_anyserve_format() -> None:
    # gunicorn's INFO lines ("Booting worker") show at --log-level debug only.
    running = start_anyserve("gunicorn", APP, "-w", "2", "--log-level", "debug")
    try:
        running.wait_for_output(r"Booting worker with pid: \d+\n(.|\n)*Booting worker with pid: \d+\n")
    finally:
        running.stop()
    assert len(LINE.findall(running.stderr_text())) == 2, running.stderr_text()


def test_gunicorn_logs_follow_the_log_level() -> None:
    port = free_port()
    running = Running(
        "gunicorn", ["-b", f"127.0.0.1:{port}", "--log-level", "warning", "--app-dir", str(REPO_ROOT), APP]
    )
    try:
        wait_for_port(port, running.proc)
        assert fetch(f"http://127.0.0.1:{port}", "/echo").status == 200
    finally:
        running.stop()
    assert "gunicorn.error" not in running.stderr_text()
