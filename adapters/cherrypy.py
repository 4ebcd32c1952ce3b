"""cherrypy: CherryPy's own server and engine, the way ``cherrypy.quickstart`` runs them.

The engine owns the HTTP servers (a ServerAdapter per listener, each a
CPWSGIServer on anyserve's socket) and starts and stops them itself; anyserve
starts the engine, publishes ``main`` and exits the engine on shutdown, as
``engine.block()`` would, but keeps the signals. CherryPy's ``server.*`` config
keys apply. A plain WSGI app is grafted onto ``cherrypy.tree``. This is the
"native" baseline to compare every other server with.
"""

from __future__ import annotations

import threading
from typing import Any

from anyserve.cherrypy_bridge import is_cherrypy_app
from anyserve.lifecycle import Lifecycle
from anyserve.sockets import Listener

from .base import Adapter, Capabilities, Deviations, WSGIApp
from .cheroot import adopt_listener, use_tls
from .draining import Drain, stop_within, wait_for


class CherryPyAdapter(Adapter):
    name = "cherrypy"
    requires = ("cherrypy",)
    module = "cherrypy"
    runs_cherrypy_engine = True
    capabilities = Capabilities(
        concurrency="CherryPy engine + cheroot thread pool of N per listener (--threads, default server.thread_pool)",
        threads=True,
        unix=True,
        tls=True,
        tls_mixed=True,
    )
    # cheroot joins only the headers it knows to be lists (Accept, ...); of
    # any other repeated header the app sees the last value.
    deviations = Deviations(last_repeated_header=True)
    keep_alive_timeout_by = "CherryPy's server.socket_timeout: cheroot's timeout (idle, and each read of a request)"
    note = "CherryPy's own server and engine, as cherrypy.quickstart runs them"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stopped = threading.Event()

    def serve(self, app: WSGIApp, listeners: list[Listener], lifecycle: Lifecycle) -> None:
        import cherrypy
        from cherrypy._cpwsgi_server import CPWSGIServer
        from cherrypy.process.servers import ServerAdapter

        if is_cherrypy_app(app):
            wsgi_app = app
        else:
            cherrypy.tree.graft(app, "")
            wsgi_app = cherrypy.tree
        config = self.config
        settings = cherrypy.server  # where CherryPy keeps its server.* config
        if config.threads:
            settings.thread_pool = config.threads
        settings.socket_queue_size = config.backlog
        settings.shutdown_timeout = config.graceful_timeout
        # The app's server.* config set these on cherrypy.server; anyserve's options
        # say what applies. cheroot answers a head over the limit with 413 as
        # anyserve would; a chunked body over it with a 500 in some cases, so the
        # body is left to anyserve's check (RequestLimits), the same on every server.
        settings.max_request_header_size = config.max_header_size
        settings.max_request_body_size = 0
        settings.socket_timeout = config.timeout_keep_alive

        class Plugin(ServerAdapter):
            """Says where it serves; with no tuple bind_addr it skips CherryPy's
            port-free checks, which would fail on a socket already bound."""

            url = ""

            @property
            def description(self) -> str:
                return self.url

        server_class = adopt_listener(CPWSGIServer)
        plugins = []
        for listener in listeners:
            httpserver = server_class(settings)
            httpserver.listener = listener
            httpserver.bind_addr = listener.address
            httpserver.wsgi_app = wsgi_app
            if listener.tls is not None:
                use_tls(httpserver, listener)
            plugin = Plugin(cherrypy.engine, httpserver, None)
            plugin.url = listener.url()
            plugin.subscribe()
            plugins.append(plugin)
        try:
            lifecycle.started()  # the bridge's engine.start() starts the HTTP servers
            stop_ticks = lifecycle.start_tick_thread()
            wait_for(self._stopped)
            stop_ticks()
            # engine.exit() would stop the HTTP servers too, but wait for every
            # request however long it runs: stopped here first, up to the timeout.
            drain = Drain(config.graceful_timeout)

            def stop_servers() -> int:
                for plugin in plugins:
                    plugin.httpserver.shutdown_timeout = drain.remaining()
                    plugin.httpserver.stop()
                return 0

            drain.end(lifecycle, stop_within(stop_servers, drain.deadline, "anyserve-cherrypy-stop"))
            lifecycle.stopping()
        finally:
            for plugin in plugins:
                plugin.unsubscribe()

    def shutdown(self) -> None:
        self._stopped.set()
