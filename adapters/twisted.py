"""twisted: twisted.web's WSGIResource on the reactor's thread pool.

The listeners are adopted by the reactor (``adoptStreamPort``); the app runs on
the reactor's thread pool, sized by --threads. Serving begins once the reactor
runs (``callWhenRunning``); a reactor stopped by someone else still drains
first (a ``before shutdown`` trigger). Twisted's own log goes to Python logging
under ``twisted``. A TLS listener wraps the site in ``TLSMemoryBIOFactory``
with a pyOpenSSL context made from the same settings (``twisted[tls]``). A
reactor runs once per process, so this server cannot be restarted in one
process; to serve from a reactor you already run, use ``anyserve.embed``.
"""

from __future__ import annotations

import importlib.util
import socket
from collections.abc import Callable
from typing import Any

from anyserve.config import Config
from anyserve.errors import ServerError
from anyserve.lifecycle import Lifecycle
from anyserve.sockets import Listener

from .base import Capabilities, Deviations, WSGIApp
from .draining import Drain
from .eventloop import Cancel, EventLoopAdapter, LoopServing

DEFAULT_THREADS = 10


class TwistedAdapter(EventLoopAdapter):
    name = "twisted"
    requires = ("twisted",)
    module = "twisted"
    capabilities = Capabilities(
        default_threads=DEFAULT_THREADS,
        head_without_body=True,
        concurrency=f"reactor for I/O + its thread pool of N running the app (--threads, default {DEFAULT_THREADS})",
        threads=True,
        unix=True,
        tls=True,
        tls_mixed=True,
        embed=True,
        background=False,  # a reactor cannot run twice in one process
    )
    deviations = Deviations(
        respelled_header_names=True, waits_on_bare_lf=True, repeated_header_joined_without_space=True
    )
    loggers = ("twisted",)

    @classmethod
    def refuse(cls, config: Config) -> None:
        super().refuse(config)
        if config.tls and importlib.util.find_spec("OpenSSL") is None:
            raise ServerError(
                "twisted serves TLS through pyOpenSSL, which is not installed: pip install 'twisted[tls]'"
            )

    #: Whether the reactor is this adapter's own (serve), not the caller's (embed).
    owns_reactor = False

    @property
    def reactor(self) -> Any:
        from twisted.internet import reactor

        return reactor

    def make_serving(self, app: WSGIApp, listeners: list[Listener], lifecycle: Lifecycle) -> LoopServing:
        route_twisted_logging()
        return TwistedServing(self, app, listeners, lifecycle)

    def run_loop(self, main: Callable[[], None]) -> None:
        reactor = self.reactor
        self.owns_reactor = True
        reactor.callWhenRunning(main)
        reactor.addSystemEventTrigger("before", "shutdown", self._drain_first)
        reactor.run(installSignalHandlers=False)  # anyserve owns the signals

    def _drain_first(self) -> Any:
        """Whoever stops the reactor: the requests in flight finish first."""
        from twisted.internet import defer

        self._race.request()  # a later shutdown() has nothing more to do
        serving = self._race.target
        if serving is None:
            return None
        drained = defer.Deferred()
        serving.stop(lambda: drained.called or drained.callback(None))
        return drained

    def stop_loop(self) -> None:
        if self.reactor.running:
            self.reactor.stop()

    def call_threadsafe(self, function: Callable[[], object]) -> None:
        self.reactor.callFromThread(function)

    def call_later(self, delay: float, function: Callable[[], object]) -> Cancel:
        call = self.reactor.callLater(delay, function)
        return lambda: call.active() and call.cancel()

    def stop_embedded(self, serving: LoopServing) -> Any:
        from twisted.internet import defer

        done = defer.Deferred()
        serving.stop(lambda: done.called or done.callback(None))
        return done


_logging_routed = False


def route_twisted_logging() -> None:
    """Send Twisted's log events to Python logging (logger ``twisted``), once per process."""
    global _logging_routed
    if _logging_routed:
        return
    from twisted.logger import STDLibLogObserver, globalLogBeginner

    globalLogBeginner.beginLoggingTo([STDLibLogObserver(name="twisted")], redirectStandardIO=False)
    _logging_routed = True


class TwistedServing(LoopServing):
    """The app served by a running reactor, which someone else may own."""

    adapter: TwistedAdapter

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.reactor = self.adapter.reactor
        self.in_flight = 0
        #: The open connections' protocols (each an HTTPChannel, or Site's wrapper of one).
        self.channels: set[Any] = set()
        self._ports: list[Any] = []
        self._closing: list[Any] = []  # the ports' stopListening() Deferreds
        site = self._make_site()
        self._factories = [_tls_factory(listener, site) if listener.tls else site for listener in self.listeners]

    def _make_site(self) -> Any:
        from twisted.internet.address import IPv4Address, UNIXAddress
        from twisted.web.server import NOT_DONE_YET, Site
        from twisted.web.wsgi import WSGIResource, _WSGIResponse

        serving = self

        class Resource(WSGIResource):
            """Says the body is complete: Twisted has read all of it, chunked or not,
            and a chunked upload has no CONTENT_LENGTH to tell the app."""

            def render(self, request: Any) -> Any:
                if isinstance(request.getHost(), UNIXAddress):
                    # Twisted's WSGI environ wants a host and port of both ends,
                    # which a unix socket has not: empty, as other servers leave them.
                    request.client = request.host = IPv4Address("TCP", "", 0)
                response = _WSGIResponse(self._reactor, self._threadpool, self._application, request)
                response.environ["wsgi.input_terminated"] = True
                response.start()
                return NOT_DONE_YET

        self.reactor.suggestThreadPoolSize(self.config.threads or DEFAULT_THREADS)
        resource = Resource(self.reactor, self.reactor.getThreadPool(), self.app)

        class CountingSite(Site):
            """Counts the requests in flight, and knows the open connections."""

            # Twisted logs a factory by its repr and its log prefix ("Starting factory ...").
            def __repr__(self) -> str:
                return "anyserve site"

            def logPrefix(self) -> str:
                return "anyserve site"

            def buildProtocol(self, addr: Any) -> Any:
                channel = super().buildProtocol(addr)
                serving.channels.add(channel)
                lost = channel.connectionLost

                def connection_lost(reason: Any) -> Any:
                    serving.channels.discard(channel)
                    return lost(reason)

                channel.connectionLost = connection_lost
                return channel

            def log(self, request: Any) -> None:
                pass  # no line per request of its own (Adapter.loggers)

            def getResourceFor(self, request: Any) -> Any:
                request.channel.anyserve_answered = True
                serving.in_flight += 1
                request.notifyFinish().addBoth(serving._finished)
                return super().getResourceFor(request)

        return CountingSite(resource)

    def listen(self) -> None:
        for listener, factory in zip(self.listeners, self._factories, strict=True):
            family = socket.AF_UNIX if listener.is_unix else listener.socket.family
            listener.socket.setblocking(False)  # the reactor accepts until EAGAIN
            # The reactor listens on a duplicate; anyserve closes its own copy
            # once the serving stopped (Server.close).
            self._ports.append(self.reactor.adoptStreamPort(listener.socket.fileno(), family, factory))

    def _finished(self, result: Any) -> None:
        self.in_flight -= 1

    def stop_accepting(self, drain: Drain) -> None:
        from twisted.internet import defer

        self._closing = [defer.maybeDeferred(port.stopListening) for port in self._ports]

    def pending(self, drain: Drain) -> int:
        for protocol in list(self.channels):
            channel = _channel(protocol)
            if channel.requests or (not getattr(channel, "anyserve_answered", False) and drain.awaits_fresh()):
                continue
            # Its own loseConnection: the transport sends what is left, then closes;
            # it lets go of the channel as a producer first, or a transport that
            # once paused it would wait for it forever.
            channel.loseConnection()
        # Each connection closes once all of its responses are sent; each port once
        # the reactor let go of it.
        return len(self.channels) + sum(not closing.called for closing in self._closing)

    def running(self) -> int:
        return self.in_flight

    def abort(self) -> None:
        if self.in_flight and self.adapter.owns_reactor:
            self._leave_thread_pool()
        for protocol in list(self.channels):
            _channel(protocol).transport.abortConnection()

    def _leave_thread_pool(self) -> None:
        """The reactor's shutdown joins its thread pool, whose threads still in
        the app wait for the reactor (to write): it would never end. The process
        exits without them (requests cut short end the ``anyserve`` command)."""
        trigger = getattr(self.reactor, "threadpoolShutdownID", None)
        if trigger is not None:
            self.reactor.removeSystemEventTrigger(trigger)
            self.reactor.threadpoolShutdownID = None


def _channel(protocol: Any) -> Any:
    """The HTTPChannel of a connection (Site wraps it in a protocol of its own)."""
    return getattr(protocol, "_channel", protocol)


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
