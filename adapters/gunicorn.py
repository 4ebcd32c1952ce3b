"""gunicorn: run in-process through its application API, on anyserve's listeners.

gunicorn's arbiter forks --workers processes; each runs the sync worker, or the
gthread worker with a pool of --threads when that is above 1 (``-o
worker_class=...`` picks another). The listeners anyserve bound are handed over
as ``fd://N`` binds. Each worker imports the app after the fork (the arbiter
does, once, with --preload). The Lifecycle runs in each worker: ``post_worker_init`` ->
``started`` (and a tick thread), ``worker_exit`` -> ``stopping``, so the
CherryPy engine starts after the fork in every worker. gunicorn's master owns
the signals: TERM stops gracefully, INT at once, HUP restarts the workers
gracefully, TTIN/TTOU add and remove one. TLS: gunicorn serves it on every
listener or none; its ``ssl_context`` hook hands it anyserve's context, built
once per process instead of once per connection.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
from typing import Any

from anyserve.config import to_bool, to_int, to_str
from anyserve.entry import leave_cut_requests
from anyserve.errors import AnyserveError, Reported
from anyserve.lifecycle import Lifecycle
from anyserve.loader import DeferredApp
from anyserve.logs import reopen_log_files, route_server_loggers
from anyserve.notify import notify
from anyserve.process import drop_privileges, resolve_identity
from anyserve.sockets import Listener
from anyserve.workers import BootReports

from .base import Adapter, Capabilities, Deviations, Option, WSGIApp

#: gunicorn's arbiter halts, rather than replacing the worker, when one exits with this code.
BOOT_ERROR = 3


class GunicornAdapter(Adapter):
    name = "gunicorn"
    requires = ("gunicorn",)
    module = "gunicorn"
    capabilities = Capabilities(
        default_threads=1,
        head_without_body=True,
        concurrency="pre-fork workers (--workers), each one request at a time (sync worker), "
        "or a pool of --threads when above 1 (gthread worker)",
        threads=True,
        workers=True,
        unix=True,
        tls=True,  # on all listeners or none: tls_mixed is false
        background=False,  # the arbiter forks and owns the signals of its process
    )
    # With the defaults (one sync worker) requests run one at a time and every
    # connection closes after its response.
    # Its sync worker reads a request with no timeout: a client that sends
    # nothing, or half a head, holds the worker until gunicorn's worker timeout
    # (-o timeout, default 30 s) has the worker killed and replaced.
    deviations = Deviations(
        one_request_at_a_time=True, no_keep_alive=True, no_read_timeout=True, repeated_header_joined_without_space=True
    )
    keep_alive_timeout_by = "gunicorn's keepalive (whole seconds), between two requests with --threads above 1"
    loggers = ("gunicorn.error", "gunicorn.access")
    options = {
        "worker_class": Option(to_str, "gunicorn worker class: sync, gthread, gevent, eventlet, tornado or a path"),
        "timeout": Option(to_int, "seconds a silent worker is given before it is killed and replaced"),
        "keepalive": Option(
            to_int, "seconds to wait for the next request on a keep-alive connection (default: --timeout-keep-alive)"
        ),
        "max_requests": Option(to_int, "restart a worker after this many requests"),
        "max_requests_jitter": Option(to_int, "add up to this many to max_requests, per worker"),
        "worker_connections": Option(to_int, "most connections per worker (gthread, gevent, eventlet)"),
        "limit_request_line": Option(to_int, "largest request line in bytes"),
        "limit_request_fields": Option(to_int, "most header fields in a request"),
        "proc_name": Option(to_str, "the process name shown by ps"),
        "control_socket": Option(to_str, "path of gunicorn's control socket (gunicorn 27 and later)"),
        "control_socket_disable": Option(to_bool, "do not open gunicorn's control socket (gunicorn 27 and later)"),
    }

    def serve(self, app: WSGIApp, listeners: list[Listener], lifecycle: Lifecycle) -> None:
        from gunicorn import util
        from gunicorn.app.base import BaseApplication
        from gunicorn.arbiter import Arbiter
        from gunicorn.errors import HaltServer

        # gunicorn takes over the descriptors it is given (and closes them):
        # it gets duplicates, so anyserve's listeners stay its own.
        config = self.config
        fds = [os.dup(listener.socket.fileno()) for listener in listeners]
        settings = {
            "bind": [f"fd://{fd}" for fd in fds],
            "workers": config.workers,
            "threads": config.threads or 1,
            "backlog": config.backlog,
            "graceful_timeout": math.ceil(config.graceful_timeout),  # gunicorn takes whole seconds
            "keepalive": math.ceil(config.timeout_keep_alive),
            "raw_env": [],
            "loglevel": config.log_level,
            # gunicorn's messages through anyserve's handlers (--error-log,
            # --log-config); the access lines come from anyserve's --access-log.
            "logger_class": _logger_class(self.loggers, config.log_level),
            "accesslog": None,
            # anyserve applies the proxy headers itself, only with --proxy-headers:
            # gunicorn's own (X-Forwarded-Proto from 127.0.0.1 by default) stay off.
            "secure_scheme_headers": {},
            "forwarder_headers": "",
            **self.settings,
        }
        identity = resolve_identity(config) if config.user is not None or config.group is not None else None
        if identity is not None:
            # gunicorn hands each worker its heartbeat file as this user; the
            # worker takes on the user, group and supplementary groups in
            # post_fork (gunicorn's own initgroups leaves the primary group as root).
            settings["user"], settings["group"], settings["initgroups"] = identity.uid, identity.gid, False
        if (config.threads or 1) > 1 and "worker_class" not in settings:
            settings["worker_class"] = "gthread"
        tls = listeners[0].tls if listeners else None
        if tls is not None:
            contexts: dict[int, Any] = {}

            def ssl_context(conf: Any, default_factory: Any) -> Any:
                pid = os.getpid()
                if pid not in contexts:
                    contexts[pid] = tls.context()
                return contexts[pid]

            settings.update(
                certfile=tls.certfile,
                keyfile=tls.keyfile,
                ca_certs=tls.ca_certs,
                cert_reqs=int(tls.verify_mode),
                ssl_context=ssl_context,
            )
        worker_ticks: dict[int, Any] = {}

        def post_fork(server: Any, worker: Any) -> None:
            if identity is not None:
                drop_privileges(identity)

        def post_worker_init(worker: Any) -> None:
            # INT that reaches the worker (Ctrl-C, or systemd signalling the whole
            # group) stops it gracefully, as TERM does: it is anyserve's one stop.
            signal.signal(signal.SIGINT, worker.handle_exit)
            util.close_graceful = _lingering_close(worker)
            lifecycle.started()  # in the worker, after the fork
            reports.served()
            # Through the arbiter's wake-up pipe, which the worker inherited: the
            # arbiter sees it at once (NotifyingArbiter.manage_workers), whatever user
            # the worker took on.
            with contextlib.suppress(OSError):
                arbiter.wakeup()
            worker_ticks[os.getpid()] = lifecycle.start_tick_thread()

        def worker_exit(server: Any, worker: Any) -> None:
            stop = worker_ticks.pop(os.getpid(), None)
            if stop is not None:
                stop()
            lifecycle.stopping()

        class Application(BaseApplication):  # type: ignore[misc]
            def load_config(self) -> None:
                for key, value in {
                    **settings,
                    "post_fork": post_fork,
                    "post_worker_init": post_worker_init,
                    "worker_exit": worker_exit,
                }.items():
                    self.cfg.set(key, value)

            def load(self) -> WSGIApp:
                # In each worker, after the fork (in the arbiter with --preload).
                if not isinstance(app, DeferredApp):
                    return app
                try:
                    return app.load()
                except AnyserveError as exc:
                    reports.failed(exc)
                    os._exit(BOOT_ERROR)  # the arbiter halts on this code

        adapter = self

        class NotifyingArbiter(Arbiter):  # type: ignore[misc]
            """Tells the service manager it stops (gunicorn tells it READY=1 itself), says
            when the first worker serves and when the graceful timeout cut requests short,
            and stops gracefully on INT as on TERM (a second INT during the stop is
            gunicorn's quick shutdown)."""

            def handle_int(self) -> None:
                raise StopIteration  # as handle_term: the arbiter's graceful halt

            def stop(self, graceful: bool = True) -> None:
                notify("STOPPING=1")
                super().stop(graceful)

            def manage_workers(self) -> None:
                super().manage_workers()
                if len(reports.serving_pids()) >= self.num_workers:
                    adapter.workers_serve()  # once: "Listening on", from the master

            def kill_workers(self, sig: int) -> None:
                # stop() kills the workers still serving at the graceful timeout, silently.
                if sig == signal.SIGKILL and self.WORKERS:
                    lifecycle.cut(config.graceful_timeout, None)
                super().kill_workers(sig)

        for fd in fds:
            os.set_inheritable(fd, True)  # gunicorn re-execs itself on USR2
        adapter = self
        reports = BootReports()
        if identity is not None:
            reports.give_to(identity.uid, identity.gid)
        arbiter = NotifyingArbiter(Application())
        master = os.getpid()
        try:
            arbiter.run()
            code: Any = 0
        except RuntimeError as exc:  # as BaseApplication.run reports it, in one line
            raise AnyserveError(f"gunicorn: {exc}") from None
        except SystemExit as exc:  # the arbiter ends with sys.exit(), and so does each worker
            if os.getpid() != master:
                # A worker ends here, as gunicorn's own do: the rest of anyserve's
                # command (its "Stopped", the pid file) is the master's.
                leave_cut_requests(exc.code if isinstance(exc.code, int) else int(exc.code is not None))
            code = exc.code
        except HaltServer as exc:
            # gunicorn 27 raises it a second time from halt() when more than
            # one worker failed to boot; finish its stop here.
            arbiter.kill_workers(signal.SIGKILL)
            code = exc.exit_status
        finally:
            reported = reports.reported()
            reports.close()
        if code == BOOT_ERROR and reported is not None:
            raise Reported(reported)  # a worker said why
        if code not in (0, None):
            raise SystemExit(code)

    def shutdown(self) -> None:
        os.kill(os.getpid(), signal.SIGTERM)  # the arbiter's own graceful stop


def _lingering_close(worker: Any) -> Any:
    """gunicorn's lingering close (RFC 9112 section 9.6: FIN, then read what the
    client still sends for up to 2 s so that the kernel sends no RST over the
    response), looking at the worker between reads: once it stops, only what
    has already arrived is read, and a client that keeps its end open no
    longer holds up the stop."""
    import socket
    import time

    def close_graceful(sock: Any, timeout: float = 2.0, max_drain: int = 65536) -> None:
        try:
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                return
            deadline = time.monotonic() + timeout
            drained = 0
            while drained < max_drain and (remaining := deadline - time.monotonic()) > 0:
                try:
                    sock.settimeout(min(remaining, 0.1) if worker.alive else 0.0)
                    data = sock.recv(4096)
                except TimeoutError:
                    continue
                except OSError:  # nothing more to read now, the worker stopping
                    break
                if not data:
                    break
                drained += len(data)
        finally:
            try:
                sock.close()
            except OSError:
                pass

    return close_graceful


def _logger_class(loggers: tuple[str, ...], level: str) -> type:
    """gunicorn's Logger without handlers of its own: its loggers write where
    anyserve's do (route_server_loggers). USR1 still reopens every log file
    (gunicorn's reopen_files walks all loggers), in the master and workers."""
    from gunicorn.glogging import Logger

    class PropagatingLogger(Logger):  # type: ignore[misc]
        def setup(self, cfg: Any) -> None:
            super().setup(cfg)
            for log in (self.error_log, self.access_log):
                for handler in list(log.handlers):
                    if getattr(handler, "_gunicorn", False):
                        log.removeHandler(handler)
            route_server_loggers(loggers, level)

        def reopen_files(self) -> None:
            super().reopen_files()
            reopen_log_files()  # the root logger's files too (--error-log), which gunicorn's walk skips

    return PropagatingLogger
