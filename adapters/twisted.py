"""twisted: twisted.web's WSGIResource on the reactor's thread pool.

The listeners are adopted by the reactor (``adoptStreamPort``); the app runs on
the reactor's thread pool, sized by --threads. The Lifecycle starts after the
reactor's startup (``callWhenRunning``), ticks from a ``LoopingCall`` and stops
in a ``before shutdown`` trigger that first waits for the requests in flight.
Twisted's own log goes to Python logging under ``twisted``. A TLS listener
wraps the site in ``TLSMemoryBIOFactory`` with a pyOpenSSL context made from the
same settings (``twisted[tls]``). A reactor runs once
per process, so this server cannot be restarted in one process; to serve from a
reactor you already run, use :class:`TwistedServing`.
"""

from __future__ import annotations

import importlib.util
import socket
import time
import weakref
from typing import Any

from anyserve.config import Config
from anyserve.errors import ServerError
from anyserve.lifecycle import Lifecycle
from anyserve.sockets import Listener

from .base import FIRST_REQUEST_GRACE, Adapter, Capabilities, WSGIApp, warn_requests_left

DEFAULT_THREADS = 10


class TwistedAdapter(Adapter):
    name = "twisted"
    requires = ("twisted",)
    module = "twisted"
    capabilities = Capabilities(
        head_without_body=True,
        concurrency=f"reactor for I/O + its thread pool of N running the app (--threads, default {DEFAULT_THREADS})",
        threads=True,
        unix=True,
        tls=True,
        tls_mixed=True,
        embed=True,
        background=False,  # a reactor cannot run twice in one process
    )

    @classmethod
    def check_tls(cls, config: Config, listeners: list[Listener] | None = None) -> None:
        super().check_tls(config, listeners)
        if importlib.util.find_spec("OpenSSL") is None:
            raise ServerError(
                "twisted serves TLS through pyOpenSSL, which is not installed: pip install 'twisted[tls]'"
            )

    def __init__(self) -> None:
        self._reactor: Any = None
        self._stop_requested = False

    def serve(self, app: WSGIApp, listeners: list[Listener], config: Config, lifecycle: Lifecycle) -> None:
        from twisted.internet import reactor

        route_twisted_logging()
        self._reactor = reactor
        if self._stop_requested:
            return
        serving = TwistedServing(app, listeners, config, lifecycle, reactor, owns_reactor=True)
        reactor.callWhenRunning(serving.start)
        reactor.addSystemEventTrigger("before", "shutdown", serving.stop)
        reactor.run(installSignalHandlers=False)  # anyserve owns the signals

    def shutdown(self) -> None:
        self._stop_requested = True
        if self._reactor is not None:
            self._reactor.callFromThread(self._stop_reactor)

    def embed(self, app: WSGIApp, listeners: list[Listener], config: Config, lifecycle: Lifecycle) -> Any:
        from twisted.internet import reactor

        route_twisted_logging()
        serving = TwistedServing(app, listeners, config, lifecycle, reactor)
        serving.start()  # stop() returns a Deferred
        return serving

    def _stop_reactor(self) -> None:
        if self._reactor.running:
            self._reactor.stop()


_logging_routed = False


def route_twisted_logging() -> None:
    """Send Twisted's log events to Python logging (logger ``twisted``), once per process."""
    global _logging_routed
    if _logging_routed:
        return
    from twisted.logger import STDLibLogObserver, globalLogBeginner

    globalLogBeginner.beginLoggingTo([STDLibLogObserver(name="twisted")], redirectStandardIO=False)
    _logging_routed = True


class TwistedServing:
    """The app served by a running reactor, which someone else may own.

    Call ``start()`` from the reactor thread once it runs; ``stop()`` returns a
    Deferred that fires once listening stopped, the requests in flight finished
    (up to the graceful timeout) and the ``stopping`` moment ran."""

    def __init__(
        self,
        app: WSGIApp,
        listeners: list[Listener],
        config: Config,
        lifecycle: Lifecycle,
        reactor: Any,
        *,
        owns_reactor: bool = False,
    ) -> None:
        self.app = app
        self.owns_reactor = owns_reactor
        self.listeners = listeners
        self.config = config
        self.lifecycle = lifecycle
        self.reactor = reactor
        self.in_flight = 0
        self.channels: weakref.WeakSet[Any] = weakref.WeakSet()
        self._ports: list[Any] = []
        self._ticker: Any = None

    def start(self) -> None:
        from twisted.internet.task import LoopingCall
        from twisted.web.server import NOT_DONE_YET, Site
        from twisted.web.wsgi import WSGIResource, _WSGIResponse

        serving = self

        class Resource(WSGIResource):
            """Says the body is complete: Twisted has read all of it, chunked or not,
            and a chunked upload has no CONTENT_LENGTH to tell the app."""

            def render(self, request: Any) -> Any:
                response = _WSGIResponse(self._reactor, self._threadpool, self._application, request)
                response.environ["wsgi.input_terminated"] = True
                response.start()
                return NOT_DONE_YET

        self.reactor.suggestThreadPoolSize(self.config.threads or DEFAULT_THREADS)
        resource = Resource(self.reactor, self.reactor.getThreadPool(), self.app)

        own_access_log = self.config.access_log is None

        class CountingSite(Site):
            """Counts the requests in flight, and knows the connections, so stop()
            can wait for both."""

            def buildProtocol(self, addr: Any) -> Any:
                channel = super().buildProtocol(addr)
                serving.channels.add(channel)
                return channel

            def log(self, request: Any) -> None:
                if own_access_log:  # else anyserve's --access-log has the line
                    super().log(request)

            def getResourceFor(self, request: Any) -> Any:
                request.channel.anyserve_answered = True
                serving.in_flight += 1
                request.notifyFinish().addBoth(serving._finished)
                return super().getResourceFor(request)

        site = CountingSite(resource)
        self.lifecycle.started()
        for listener in self.listeners:
            family = socket.AF_UNIX if listener.is_unix else listener.socket.family
            listener.socket.setblocking(False)  # the reactor accepts until EAGAIN
            factory = site if listener.tls is None else _tls_factory(listener, site)
            # The reactor listens on a duplicate; anyserve closes its own copy
            # once the serving stopped (Server.close).
            self._ports.append(self.reactor.adoptStreamPort(listener.socket.fileno(), family, factory))
        if self.lifecycle.wants_ticks:
            self._ticker = LoopingCall(self.lifecycle.tick)
            self._ticker.clock = self.reactor
            self._ticker.start(self.config.main_interval, now=False)

    def _finished(self, result: Any) -> None:
        self.in_flight -= 1

    def _receiving(self, fresh_until: float) -> bool:
        """A request is on its way: being received, or not begun on a connection
        accepted just before the stop (until *fresh_until*)."""
        for protocol in list(self.channels):
            channel = getattr(protocol, "_channel", protocol)  # Site wraps its HTTPChannel
            if getattr(channel.transport, "disconnected", True):
                continue
            if channel.requests:
                return True
            if not getattr(channel, "anyserve_answered", False) and time.monotonic() < fresh_until:
                return True
        return False

    def stop(self) -> Any:
        """Begin the graceful stop; the Deferred returned fires at its end."""
        from twisted.internet import defer, task

        @defer.inlineCallbacks
        def drain() -> Any:
            yield defer.gatherResults([defer.maybeDeferred(port.stopListening) for port in self._ports])
            deadline = time.monotonic() + self.config.graceful_timeout
            fresh_until = time.monotonic() + FIRST_REQUEST_GRACE
            while (self.in_flight or self._receiving(fresh_until)) and time.monotonic() < deadline:
                yield task.deferLater(self.reactor, 0.02, lambda: None)
            warn_requests_left(self.config.graceful_timeout, self.in_flight)
            if self.in_flight and self.owns_reactor:
                self._leave_thread_pool()
            if self._ticker is not None and self._ticker.running:
                self._ticker.stop()
            self.lifecycle.stopping()

        return drain()

    def _leave_thread_pool(self) -> None:
        """The reactor's shutdown joins its thread pool, whose threads still in
        the app wait for the reactor (to write): it would never end. The process
        exits without them (``leave_cut_requests``)."""
        trigger = getattr(self.reactor, "threadpoolShutdownID", None)
        if trigger is not None:
            self.reactor.removeSystemEventTrigger(trigger)
            self.reactor.threadpoolShutdownID = None


def _tls_factory(listener: Listener, site: Any) -> Any:
    """*site* behind TLS, with one pyOpenSSL context for every connection."""
    from OpenSSL import SSL
    from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
    from twisted.protocols.tls import TLSMemoryBIOFactory
    from zope.interface import implementer

    assert listener.tls is not None
    context = listener.tls.openssl_context()

    @implementer(IOpenSSLServerConnectionCreator)
    class ConnectionCreator:
        def serverConnectionForTLS(self, protocol: Any) -> Any:
            return SSL.Connection(context, None)

    return TLSMemoryBIOFactory(ConnectionCreator(), False, site)
