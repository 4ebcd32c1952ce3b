"""Embedding: anyserve serves from inside a loop someone else runs.

Each program in examples/ owns its loop (Tornado, asyncio, Twisted, gevent),
embeds a plain WSGI app and a CherryPy app, and keeps running after stopping
them. The test drives it with signals and checks it over HTTP.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PROGRAMS = {
    "tornado": ["tornado_embed.py", "0", "0", "0"],
    "asyncio": ["asyncio_embed.py", "0", "0"],
    "twisted": ["twisted_embed.py", "0", "0", "0"],
    "gevent": ["gevent_embed.py", "0", "0"],
}


def get(url: str) -> bytes:
    with urllib.request.urlopen(url + "/", timeout=10) as response:
        return response.read()


def refused(url: str) -> bool:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.socket() as probe:
        return probe.connect_ex((host, int(port))) != 0


class Output:
    """The program's stdout, line by line, read by a thread so every wait is bounded."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.proc = proc
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())

    def next(self, timeout: float = 20) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"the program printed nothing in {timeout} s") from None


def start_program(loop: str) -> tuple[subprocess.Popen[str], Output]:
    """Start examples/<loop>_embed.py on its ports; its output, line by line."""
    script, *ports = PROGRAMS[loop]
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLES / script), *ports],
        cwd=EXAMPLES,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    return proc, Output(proc)


def end_program(proc: subprocess.Popen[str]) -> None:
    """Kill it if a failed test left it running; close its pipes."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream:
            stream.close()


@pytest.mark.parametrize("loop", list(PROGRAMS))
def test_embedded_in_a_loop_that_keeps_running(loop: str) -> None:
    proc, output = start_program(loop)
    try:
        urls = dict(output.next().split(" ", 1) for _ in range(len(PROGRAMS[loop]) - 1))
        assert get(urls["plain"]) == b"plain WSGI app\n"
        first = json.loads(get(urls["cherrypy"]))
        assert first["engine"] == "states.STARTED"
        deadline = time.monotonic() + 10
        while (report := json.loads(get(urls["cherrypy"])))["main"] < first["main"] + 5:
            assert time.monotonic() < deadline, "main is not published"
            time.sleep(0.05)
        assert report["main_from_loop_thread"] is True  # main is published from the host's loop

        proc.send_signal(signal.SIGUSR1)  # the program stops anyserve, not its loop
        line = output.next()
        assert line.startswith("wsgi stopped; the loop runs on") and not line.endswith("False"), line
        assert refused(urls["cherrypy"]) and refused(urls["plain"])
        own = urls.get("tornado") or urls.get("twisted")
        if own:
            assert b"own" in get(own)  # the host's own server still answers

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        end_program(proc)


def test_embed_on_a_free_port() -> None:
    """port=0 (or no address at all) picks a free port; the handle tells which."""
    import asyncio

    import anyserve

    def hello(environ: dict[str, object], start_response: object) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])  # type: ignore[operator]
        return [b"hello"]

    async def serve_and_ask(**options: object) -> tuple[str, bytes]:
        served = anyserve.embed(hello, server="tornado", **options)
        try:
            answer = await asyncio.get_running_loop().run_in_executor(None, get, served.url)
        finally:
            await served.stop()
        return served.url, answer

    for options in ({"port": 0}, {}):
        url, answer = asyncio.run(serve_and_ask(**options))
        assert url.startswith("http://127.0.0.1:") and not url.endswith(":0")
        assert answer == b"hello"
        assert refused(url)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
@pytest.mark.parametrize("loop", list(PROGRAMS))
def test_a_stop_signal_ends_the_program_while_it_serves(loop: str, signum: int) -> None:
    """As the programs' docstrings say: TERM, or Ctrl-C, stops the embedded servers
    and ends the program within moments, without a traceback."""
    proc, output = start_program(loop)
    try:
        urls = dict(output.next().split(" ", 1) for _ in range(len(PROGRAMS[loop]) - 1))
        assert get(urls["plain"]) == b"plain WSGI app\n"
        proc.send_signal(signum)
        try:
            code = proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{PROGRAMS[loop][0]} still runs 5 s after {signal.Signals(signum).name}") from None
        errors = proc.stderr.read() if proc.stderr else ""
        assert "Traceback" not in errors, errors
        assert code == 0, errors
    finally:
        end_program(proc)
