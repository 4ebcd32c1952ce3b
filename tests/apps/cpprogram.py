"""A program that serves the cpengine app with anyserve from inside itself.

    python -m tests.apps.cpprogram SCENARIO SERVER [PORT]

It serves with ``anyserve.serving()``, or, for a server that only embeds
(twisted), with ``anyserve.embed()`` in a reactor that runs in the main thread
while the scenario runs in another. It prints one JSON object per line and
ends with exit code 3 (its own), so a test tells a program that finished from
one CherryPy's bus ended (70). Scenarios:

- ``restore``: CherryPy's state (engine subscriptions, signal handlers, loggers,
  config, ``cherrypy.server``) before serving, while serving and after;
- ``then-native``: serve with anyserve, then with CherryPy's own server
  (``engine.start()`` with ``cherrypy.server``) on PORT, and fetch a page there;
- ``serve``: serve, fetch a page, stop;
- ``exit-call``: while anyserve serves, the program calls ``engine.exit()``;
- ``socket-port``: ``server.socket_port = PORT`` in the app's config, served
  without naming an address;
- ``start-fails``: a ``start`` listener raises (run with CP_FAILING=start).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import cherrypy

import anyserve
from anyserve.registry import get_adapter
from tests.apps import cpengine

#: The program's own exit code, after every scenario.
EXIT_CODE = 3


def say(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def get(url: str, path: str = "/") -> str:
    with urllib.request.urlopen(url + path, timeout=15) as response:
        return response.read().decode()


def name(listener: Any) -> str:
    """A listener or a signal handler, by what it is rather than by its identity."""
    owner = getattr(listener, "__self__", None)
    if owner is not None:
        return f"{type(owner).__name__}.{listener.__name__}"
    return getattr(listener, "__qualname__", None) or type(listener).__name__


def handlers(logger: str) -> list[list[Any]]:
    return [[type(h).__name__, getattr(h, "_cpbuiltin", None), h.level] for h in logging.getLogger(logger).handlers]


def snapshot() -> dict[str, Any]:
    """What the bridge may change in CherryPy, comparable across time."""
    engine = cherrypy.engine
    server = cherrypy.server
    return {
        "listeners": {channel: sorted(map(name, listeners)) for channel, listeners in engine.listeners.items()},
        "signals": {sig.name: name(signal.getsignal(sig)) for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1)},
        "propagate": logging.getLogger("cherrypy").propagate,
        "error_handlers": handlers("cherrypy.error"),
        "access_handlers": handlers("cherrypy.access"),
        "config": {key: repr(value) for key, value in sorted(cherrypy.config.items())},
        "screen": cherrypy.log.screen,
        "checker": cherrypy.checker.on,
        "server": {
            "httpserver": repr(server.httpserver),
            "running": server.running,
            "bind_addr": server.bind_addr,
        },
        "exit_is_the_bus_own": "exit" not in vars(engine),
    }


@contextlib.contextmanager
def served(server: str, **options: Any) -> Iterator[str]:
    """``cherrypy.tree`` (the cpengine app) served by anyserve on *server*; its URL."""
    if get_adapter(server).capabilities.background:
        with anyserve.serving(cherrypy.tree, server=server, **options) as srv:
            yield srv.url
        return
    from twisted.internet import reactor
    from twisted.internet.threads import blockingCallFromThread

    embedded = blockingCallFromThread(reactor, lambda: anyserve.embed(cherrypy.tree, server=server, **options))
    try:
        yield embedded.url
    finally:
        blockingCallFromThread(reactor, embedded.stop)


def restore(server: str) -> None:
    cherrypy.engine.signal_handler.subscribe()  # as cherrypy.quickstart() does
    before = snapshot()
    with served(server) as url:
        get(url)
        during = snapshot()
    say(before=before, during=during, after=snapshot())


def then_native(server: str, port: int) -> None:
    with served(server) as url:
        say(anyserve=get(url))
    cherrypy.config.update({"server.socket_host": "127.0.0.1", "server.socket_port": port})
    cherrypy.engine.start()
    try:
        say(native=get(f"http://127.0.0.1:{port}"), httpserver=type(cherrypy.server.httpserver).__name__)
    finally:
        cherrypy.engine.exit()


def serve(server: str) -> None:
    with served(server) as url:
        get(url)
    say(state_after=str(cherrypy.engine.state))


def exit_call(server: str) -> None:
    with served(server) as url:
        get(url)
        cherrypy.engine.exit()
        try:
            still = get(url)
        except OSError:
            still = ""
        # serving(): anyserve has stopped by now; embed(): it serves on until Embedded.stop().
        say(state=str(cherrypy.engine.state), serves_after_exit=bool(still))
    say(state_after=str(cherrypy.engine.state))


def start_fails(server: str) -> None:
    try:
        with served(server):
            say(served=True)
    except Exception as exc:  # the start listener's failure, raised to the program
        say(error=type(exc).__name__, state=str(cherrypy.engine.state))


def socket_port(server: str, port: int) -> None:
    cherrypy.config.update({"server.socket_host": "127.0.0.1", "server.socket_port": port})
    with served(server) as url:
        say(url=url, answer=get(url))


SCENARIOS: dict[str, Callable[..., None]] = {
    "restore": restore,
    "then-native": then_native,
    "serve": serve,
    "exit-call": exit_call,
    "socket-port": socket_port,
    "start-fails": start_fails,
}


def main(argv: list[str]) -> int:
    scenario, server, *rest = argv
    run = SCENARIOS[scenario]
    args = [server, *map(int, rest)]
    cherrypy.tree.mount(cpengine.application)
    if get_adapter(server).capabilities.background:
        run(*args)
    else:  # the reactor in the main thread, as an embedding program runs it
        from twisted.internet import reactor

        def in_thread() -> None:
            try:
                run(*args)
            finally:
                reactor.callFromThread(reactor.stop)

        reactor.callWhenRunning(lambda: threading.Thread(target=in_thread, name="scenario").start())
        reactor.run(installSignalHandlers=False)
    say(done=True, pid=os.getpid())
    return EXIT_CODE


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
