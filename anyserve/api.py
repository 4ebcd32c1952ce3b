"""The Python API: serve an app from a program, blocking, from a background
thread, or inside a loop the program runs."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .config import Config
from .errors import ConfigError
from .logs import configure_logging
from .plan import prepare
from .registry import suggesting_others
from .server import Server, refuse_workers_in_thread

#: Options of the ``anyserve`` command's own process, which the Python API leaves to its caller.
PROCESS_OPTIONS = ("daemon", "pid", "user", "group", "umask", "require_non_root", "chdir", "env", "env_file")


def run(app: Any = None, **options: Any) -> None:
    """Serve *app* (a WSGI callable or an APP string) until TERM/INT; blocks.

    *options* are the options of ``anyserve --help`` by their Python names
    (``server="cheroot"``, ``bind=["127.0.0.1:8000"]``, ``threads=8``...)."""
    config = _config(app, options, "anyserve.run()")
    configure_logging(
        config.log_level, error_log=config.error_log, access_log=config.access_log, log_config=config.log_config
    )
    if threading.current_thread() is threading.main_thread():
        from .entry import serve_in_process

        serve_in_process(config)
        return
    server = Server(config)
    refuse_workers_in_thread(server)
    server.serve()


def start(app: Any = None, **options: Any) -> Server:
    """Serve *app* from a background thread and return the running :class:`Server`
    once it takes requests; its ``stop()`` ends the serving.

    ``srv = anyserve.start(app)``, then ``srv.url`` is where it listens (a free
    port on 127.0.0.1 unless *bind*, *host* or *port*, or the app's CherryPy
    config, say otherwise)."""
    server = _server(_config(app, options, "anyserve.start()"), options)
    return server.start()


@contextmanager
def serving(app: Any = None, **options: Any) -> Iterator[Server]:
    """Serve *app* from a background thread for the duration of a ``with`` block.

    ``with anyserve.serving(app, server="cheroot") as srv:`` then ``srv.url`` is
    where it listens (a free port on 127.0.0.1 unless *bind*, *host* or *port*,
    or the app's ``server.socket_host``/``socket_port``, say otherwise)."""
    server = _server(_config(app, options, "anyserve.serving()"), options)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class Embedded:
    """A server started inside a loop the caller runs; see :func:`embed`."""

    def __init__(self, server: Server, handle: Any) -> None:
        self.server = server
        self._handle = handle

    @property
    def urls(self) -> list[str]:
        return self.server.urls

    @property
    def url(self) -> str:
        return self.server.url

    def stop(self) -> Any:
        """Begin the graceful stop: stop accepting, let requests in flight finish,
        run the ``stopping`` hooks (CherryPy's engine exits). Returns what the
        host loop waits on: an asyncio future (tornado), a Deferred (twisted);
        under gevent it blocks the calling greenlet and returns None."""
        result = self._handle.stop()
        for attribute in ("add_done_callback", "addBoth"):  # asyncio future, Deferred
            if hasattr(result, attribute):
                getattr(result, attribute)(lambda outcome: self._closed(outcome))
                return result
        self.server.close()
        return result

    def _closed(self, outcome: Any) -> Any:
        self.server.close()
        return outcome


def embed(app: Any = None, **options: Any) -> Embedded:
    """Serve *app* from inside a loop the caller already runs, and return at once.

    Call it from that loop: a running asyncio loop or Tornado IOLoop
    (``server="tornado"``), a running Twisted reactor (``server="twisted"``), a
    gevent hub (``server="gevent"``). The Lifecycle, and so CherryPy's engine,
    is driven from that loop; ``stop()`` ends the serving and leaves the loop
    running. For a background thread instead, see :func:`serving`."""
    server = _server(_config(app, options, "anyserve.embed()"), options)
    refuse_workers_in_thread(server)
    if not server.adapter_class.capabilities.embed:
        with suggesting_others(server.name):
            server.adapter.embed(server.app, [], server.lifecycle)  # raises the refusal
    server.embedded = True
    server.bind()
    server.announce()
    try:
        handle = server.adapter.embed(server.load(), server.listeners, server.lifecycle)
    except BaseException:
        server.close()  # its listeners, and CherryPy as it was
        raise
    return Embedded(server, handle)


def _server(config: Config, options: dict[str, Any]) -> Server:
    """A Server for a program: on the address the caller names, else on the one
    the app's CherryPy config gives (``server.socket_host``/``socket_port``),
    else on a free port."""
    plan = prepare(config)
    address = ("bind", "host", "port")
    from_cherrypy = any(plan.config.is_set(name) and not config.is_set(name) for name in address)
    if "bind" not in options and "port" not in options and not from_cherrypy:
        plan = dataclasses.replace(plan, config=plan.config.replace(port=0))
    return Server.from_plan(plan)


def _config(app: Any, options: dict[str, Any], api: str) -> Config:
    """The Config of an API call, refusing the options of the command's own process."""
    if isinstance(options.get("bind"), str):
        options["bind"] = [options["bind"]]
    config = Config.load(kwargs={**options, "app": app} if app is not None else options)
    if config.reload:
        raise ConfigError(
            f"{api} cannot reload: reload belongs to the anyserve command, which serves from a child process "
            f"it starts again on each change, while {api} serves in the calling program "
            "(run anyserve --reload APP instead)"
        )
    given = [name for name in PROCESS_OPTIONS if config.is_set(name)]
    if given:
        names = given[0] if len(given) == 1 else f"{', '.join(given[:-1])} and {given[-1]}"
        raise ConfigError(
            f"{api} serves in the calling program and leaves its process alone: {names} "
            f"{'belongs' if len(given) == 1 else 'belong'} to the anyserve command "
            "(anyserve --daemon --pid FILE --user USER ...)"
        )
    return config
