"""Signals in a serving process: TERM and INT stop gracefully (a second INT at
once), HUP restarts the server's workers, USR1 reopens the log files."""

from __future__ import annotations

import logging
import os
import signal

from .logs import reopen_log_files_soon
from .notify import notify
from .server import Server

log = logging.getLogger("anyserve")


def serve_until_signalled(server: Server, *, worker: bool = False) -> None:
    """Serve in this (main) thread until TERM or INT.

    *worker*: a supervised worker process; its supervisor announces, and
    handles SIGHUP (a worker ignores it)."""
    interrupts: list[int] = []
    stopping: list[int] = []

    def stop(signum: int, frame: object) -> None:
        if signum == signal.SIGINT:
            interrupts.append(signum)
        if stopping:
            # A second Ctrl-C; not the TERM that came with the first to the whole
            # process group, nor the one a worker gets from its supervisor too.
            if len(interrupts) > 1:
                log.warning("Second interrupt: exiting without waiting for requests")
                os._exit(1)
            return
        stopping.append(signum)
        if not worker:
            notify("STOPPING=1")
        (log.debug if worker else log.info)(
            "Received %s: stopping gracefully (in-flight requests have %ss)",
            signal.Signals(signum).name,
            server.config.graceful_timeout,
        )
        server.adapter.shutdown()  # returns at once; serve() returns once drained

    def hang_up(signum: int, frame: object) -> None:
        if server.adapter.restart():
            log.info("Received SIGHUP: restarting the workers gracefully")
        elif not worker:
            log.warning("Received SIGHUP: a single serving process has nothing to restart gracefully; ignored")

    def resize(signum: int, frame: object) -> None:
        # Their default action would suspend the process.
        log.warning(
            "Received %s: %s has no workers anyserve can add or remove; ignored",
            signal.Signals(signum).name,
            server.name,
        )

    def reopen(signum: int, frame: object) -> None:
        reopen_log_files_soon()
        server.adapter.reopen_logs()

    handlers = {
        signal.SIGTERM: stop,
        signal.SIGINT: stop,
        signal.SIGHUP: hang_up,
        signal.SIGTTIN: signal.SIG_IGN if worker else resize,
        signal.SIGTTOU: signal.SIG_IGN if worker else resize,
        signal.SIGUSR1: reopen,
    }
    previous = {signum: signal.signal(signum, handler) for signum, handler in handlers.items()}
    try:
        server.serve(announce=not worker)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if not worker:
        log.info("Stopped")
