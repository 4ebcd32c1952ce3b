"""--reload: a changed module restarts the server on the same listener."""

from __future__ import annotations

import os
import signal
import time
import urllib.request
from pathlib import Path

from .harness import Running

APP = """
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"{version}"]
"""


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read()


def test_a_changed_module_is_served_after_a_restart(tmp_path: Path) -> None:
    module = tmp_path / "reloadable.py"
    module.write_text(APP.format(version="one"))
    running = Running("wsgiref", ["--reload", "-b", "127.0.0.1:0", "--app-dir", str(tmp_path), "reloadable:app"])
    try:
        running.wait_listening()
        assert get(running.url) == b"one"
        module.write_text(APP.format(version="two"))
        later = time.time() + 2
        os.utime(module, (later, later))  # a new mtime even on a coarse clock
        deadline = time.monotonic() + 20
        while get(running.url) != b"two":  # the parent keeps the port open across restarts
            assert time.monotonic() < deadline, running.stderr_text()
            time.sleep(0.05)
        assert "Detected a change in" in running.stderr_text()
        running.proc.send_signal(signal.SIGTERM)
        assert running.proc.wait(timeout=30) == 0
    finally:
        running.stop()
