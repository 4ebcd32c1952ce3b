"""Runs inside uWSGI's workers (and, with --preload, its master): anyserve's app
and Lifecycle, as any other server runs them.

uWSGI calls :func:`application` for each worker (``--eval``), or once in the
master before it forks. In the worker, after the fork, the Lifecycle starts
(``started``, a tick thread), and at the worker's exit (``uwsgi.atexit``) it
stops. The stop signals stay blocked in the worker (``master.py``); a thread
of its own waits for them and asks uWSGI for this worker's graceful stop
(SIGHUP, ``gracefully_kill``: it finishes its requests, then exits through
the atexit hooks), whether the signal came from the master or from the whole
process group at once.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
from typing import Any

from anyserve.config import Config
from anyserve.errors import AnyserveError
from anyserve.sockets import SD_LISTEN_FDS_START, Listener
from anyserve.workers import BootReports, process_title, set_process_title

#: What a service manager or a terminal sends to stop: blocked in uWSGI's processes.
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}
#: How the anyserve process tells the uWSGI process what to serve (JSON).
SPEC_ENV = "_ANYSERVE_UWSGI"

WSGIApp = Any


def application() -> WSGIApp:
    """Load the app as anyserve would, and run its Lifecycle in each worker."""
    import uwsgi  # provided by uWSGI in its processes

    from anyserve.logs import configure_logging
    from anyserve.plan import mark_tls, prepare
    from anyserve.server import Server

    spec = json.loads(os.environ[SPEC_ENV])
    config = Config.load(kwargs=spec["config"])
    configure_logging(
        config.log_level, error_log=config.error_log, access_log=config.access_log, log_config=config.log_config
    )
    reports = BootReports(spec["reports"])
    try:
        plan = prepare(config, owns_process=True)
        listeners = uwsgi_listeners(config)
        mark_tls(listeners, config, plan.tls)
        server = Server.from_plan(plan, listeners, owns_process=True)
        server.adapter.in_worker = True  # type: ignore[attr-defined]
        app = server.load()
    except AnyserveError as exc:
        code = reports.failed(exc)
        if not reports.ever_served():
            # The master would start the same failing worker again and again:
            # a graceful shutdown through its FIFO, and the workers still
            # loading the app finish that quietly, then exit.
            fifo_command(spec["fifo"], b"q")
        os._exit(code)
    lifecycle = server.lifecycle
    os.environ["ANYSERVE_SERVING"] = spec["described"]
    logs_to_files = any(path and path != "-" for path in (config.error_log, config.access_log, config.log_config))

    def started() -> None:
        threading.Thread(target=_stop_on_signal, name="anyserve-stop-signals", daemon=True).start()
        if logs_to_files:
            threading.Thread(target=_watch_reopen, args=(spec["reopen"],), name="anyserve-reopen", daemon=True).start()
        set_process_title(process_title("uwsgi", config.app, f"worker {uwsgi.worker_id()}"))
        lifecycle.started()
        reports.served()
        stop_ticks = lifecycle.start_tick_thread()

        def at_exit() -> None:
            # A stop signal now would run uWSGI's exit a second time, under this one.
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP, *STOP_SIGNALS})
            stop_ticks()
            lifecycle.stopping()

        uwsgi.atexit = at_exit

    if uwsgi.worker_id() > 0:
        started()  # --lazy-apps: this is the worker
    else:
        uwsgi.post_fork_hook = started  # the master, before it forks the workers
    return answering_errors(app)


def uwsgi_listeners(config: Config) -> list[Listener]:
    """The sockets uWSGI serves on, where the launcher placed them (descriptors 3,
    4, ..., as systemd passes them), each with the address it was bound for: what
    the app sees of its server (``cherrypy.server.bound_addr``)."""
    count = int(os.environ.get("LISTEN_FDS", "0"))
    return [
        Listener(socket.socket(fileno=os.dup(fd)), spec)
        for fd, spec in zip(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count), config.listen, strict=False)
    ]


def _stop_on_signal() -> None:
    """In a worker: the first TERM or INT begins its graceful stop, once."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})  # the main thread takes uWSGI's
    signal.sigwait(STOP_SIGNALS)
    signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGHUP)
    while True:  # the later ones: the stop is under way
        signal.sigwait(STOP_SIGNALS)


def fifo_command(fifo: str, letter: bytes) -> bool:
    """Write a command to uWSGI's master FIFO; False when it is not there."""
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        os.write(fd, letter)
    finally:
        os.close(fd)
    return True


def _watch_reopen(marker: str) -> None:
    """Reopen the log files when anyserve's process got USR1 and touched *marker*:
    uWSGI keeps the workers' USR1 for itself."""
    from anyserve.logs import reopen_log_files

    def stamp() -> float | None:
        try:
            return os.stat(marker).st_mtime_ns
        except OSError:
            return None

    seen = stamp()
    while True:
        time.sleep(0.2)
        now = stamp()
        if now != seen:
            seen = now
            reopen_log_files()


def answering_errors(app: WSGIApp) -> WSGIApp:
    """uWSGI closes the connection unanswered when the app raises: answer 500,
    and log the traceback, as every other server does."""
    errors = logging.getLogger("anyserve.uwsgi")

    def guarded(environ: dict[str, Any], start_response: Any) -> Any:
        try:
            return app(environ, start_response)
        except Exception:
            errors.exception(
                "Error in the app, answering 500: %s %s", environ.get("REQUEST_METHOD"), environ.get("PATH_INFO")
            )
            body = b"Internal Server Error"
            # No exc_info: nothing was sent yet, and uWSGI drops the body given with it.
            start_response(
                "500 Internal Server Error", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
            )
            return [body]

    return guarded
