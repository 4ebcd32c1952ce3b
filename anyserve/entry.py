"""A process anyserve owns and serves from: the ``anyserve`` command, and
``anyserve.run()`` from the main thread.

It prepares the plan, binds once, and serves until TERM or INT: in this
process, through the server's own workers, or through anyserve's supervisor
for ``--workers`` on a server that has none.
"""

from __future__ import annotations

import atexit
import os
import sys
from collections.abc import Callable
from typing import Any

from .config import Config
from .plan import bind, prepare
from .server import Server
from .signals import serve_until_signalled
from .supervisor import Supervisor


def serve_in_process(
    config: Config,
    app: Any = None,
    *,
    bound: Callable[[], object] | None = None,
    serving: Callable[[Server], object] | None = None,
) -> bool:
    """Serve until TERM/INT; return whether the graceful stop cut requests short.

    *bound* runs once the listeners are bound, in this process (a pid file, the
    umask); *serving* gets each Server before it serves, in the process that
    serves (a worker, under the supervisor), to subscribe to its Lifecycle."""
    plan = prepare(config, app, owns_process=True)
    listeners = bind(plan)
    try:
        if bound is not None:
            bound()
        if plan.supervised:
            Supervisor(plan, listeners, serving=serving).run()
            return False
        server = Server.from_plan(plan, listeners, owns_process=True)
        if serving is not None:
            serving(server)
        serve_until_signalled(server)
        return server.lifecycle.requests_cut
    finally:
        for listener in listeners:
            listener.close()


def leave_cut_requests(code: int) -> None:
    """End this process at once, its exit handlers run, with *code*.

    After a graceful stop that cut requests short: a thread still in the app (a
    server's worker thread, a thread pool's) would hold up the interpreter's
    exit for as long as the app runs."""
    atexit._run_exitfuncs()  # logging's flush among them
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)
