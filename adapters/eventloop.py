"""Servers that live in an event loop: tornado (asyncio), twisted, gevent, eventlet.

Everything such a server needs done the same way is here, once:

- the stop race and the wake-up handshake: :meth:`EventLoopAdapter.shutdown`
  may come from any thread or a signal handler, before the loop runs or while
  it does, and more than once; it hands the stop to the loop;
- tick driving: ``tick`` from the loop itself, every ``--main-interval``;
- the graceful stop (:meth:`LoopServing.stop`): stop accepting, close what waits
  for no request, give a connection accepted just before the stop its first
  request, wait for the requests under way until the graceful timeout, say how
  many it cut short, then the ``stopping`` moment;
- embedding: the same serving inside a loop the caller runs.

An adapter gives its loop's own calls (run it, stop it, call into it from
another thread, call later; :class:`AsyncioLoop` has asyncio's) and a
:class:`LoopServing` subclass with its server's own: listen, stop accepting,
the connections still waited for, the requests still running, and closing what
is left.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from anyserve.lifecycle import Lifecycle
from anyserve.sockets import Listener

from .base import Adapter, WSGIApp
from .draining import POLL, Drain, StopRace

Cancel = Callable[[], object]
log = logging.getLogger("anyserve")


class LoopServing(ABC):
    """The app served in an event loop, which its adapter runs or someone else does.

    Every method runs in the loop. ``start()`` serves and returns; ``stop(done)``
    drains and calls *done* once the ``stopping`` moment has run (at once if it
    has already)."""

    def __init__(self, adapter: EventLoopAdapter, app: WSGIApp, listeners: list[Listener], lifecycle: Lifecycle):
        self.adapter = adapter
        self.config = adapter.config
        self.app = app
        self.listeners = listeners
        self.lifecycle = lifecycle
        self._cancel_tick: Cancel | None = None
        self._waiters: list[Callable[[], object]] | None = None  # None: no stop begun
        self._stopped = False

    # -- the server's own calls -----------------------------------------------------

    @abstractmethod
    def listen(self) -> None:
        """Take requests on the listeners. The server objects are made before, in
        ``__init__``, importing what they need: the ``started`` moment comes in
        between, and may take on another user (--user) who cannot import them."""

    @abstractmethod
    def stop_accepting(self, drain: Drain) -> None:
        """Accept no more connections; from now on a connection closes once it no
        longer has a request under way."""

    @abstractmethod
    def pending(self, drain: Drain) -> int:
        """How many connections the stop still waits for: a request under way, a
        response not all sent, or (while ``drain.awaits_fresh()``) no request yet
        on a connection accepted before the stop. Close the others."""

    @abstractmethod
    def running(self) -> int:
        """How many requests are still in the app (once the wait is over)."""

    @abstractmethod
    def abort(self) -> None:
        """Close every connection left, however far its request has gone."""

    # -- the same for every loop -------------------------------------------------------

    def start(self) -> None:
        self.lifecycle.started()  # before any request: the loop runs none until this returns
        self.listen()
        if self.lifecycle.wants_ticks:
            self._cancel_tick = self.adapter.call_later(self.config.main_interval, self._tick)

    def _tick(self) -> None:
        if self._waiters is not None:
            return
        self.lifecycle.tick()
        self._cancel_tick = self.adapter.call_later(self.config.main_interval, self._tick)

    def stop(self, done: Callable[[], object]) -> None:
        if self._stopped:
            done()
            return
        if self._waiters is not None:
            self._waiters.append(done)
            return
        self._waiters = [done]
        if self._cancel_tick is not None:
            self._cancel_tick()
        drain = Drain(self.config.graceful_timeout)
        self.stop_accepting(drain)
        self._step(drain)

    def _step(self, drain: Drain) -> None:
        if self.pending(drain) and not drain.expired():
            self.adapter.call_later(POLL, lambda: self._step(drain))
            return
        try:
            drain.end(self.lifecycle, self.running())
            self.abort()
        except Exception:  # the stop goes on: a loop left waiting would never end
            log.exception("error closing what the graceful stop left")
        finally:
            self.lifecycle.stopping()
            self._stopped = True
            waiters, self._waiters = self._waiters or [], []
            for waiter in waiters:
                waiter()


class EventLoopAdapter(Adapter):
    """Base for servers that live in an event loop; see the module's docstring."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._race = StopRace()

    # -- the loop's own calls -----------------------------------------------------------

    @abstractmethod
    def make_serving(self, app: WSGIApp, listeners: list[Listener], lifecycle: Lifecycle) -> LoopServing:
        """The server's LoopServing, not started."""

    @abstractmethod
    def run_loop(self, main: Callable[[], None]) -> None:
        """Run the loop in this thread, call *main* in it once it runs, and return
        once :meth:`stop_loop` has been called."""

    @abstractmethod
    def stop_loop(self) -> None:
        """From the loop: make :meth:`run_loop` return."""

    @abstractmethod
    def call_threadsafe(self, function: Callable[[], object]) -> None:
        """Have the running loop call *function* soon; from any thread or a signal handler."""

    @abstractmethod
    def call_later(self, delay: float, function: Callable[[], object]) -> Cancel:
        """From the loop: call *function* in *delay* seconds; return what cancels it."""

    def stop_embedded(self, serving: LoopServing) -> Any:
        """From the caller's loop: begin *serving*'s stop, and return what that loop
        waits on for its end (an asyncio future, a Deferred), or wait for it. A
        server with the ``embed`` capability says how."""
        raise NotImplementedError(f"{self.name} declares no embed capability")

    # -- the same for every loop -------------------------------------------------------

    def serve(self, app: WSGIApp, listeners: list[Listener], lifecycle: Lifecycle) -> None:
        if self._race.requested:
            return
        serving = self.make_serving(app, listeners, lifecycle)
        failed: list[BaseException] = []

        def main() -> None:
            try:
                serving.start()
            except BaseException as exc:  # a started hook failed: nothing serves, the loop ends
                failed.append(exc)
                self.stop_loop()
                return
            if not self._race.ready(serving):  # shutdown() came while the loop started
                serving.stop(self.stop_loop)

        self.run_loop(main)
        if failed:
            raise failed[0]

    def shutdown(self) -> None:
        first, serving = self._race.request()
        if first and serving is not None:
            self.call_threadsafe(lambda: serving.stop(self.stop_loop))

    def embed(self, app: WSGIApp, listeners: list[Listener], lifecycle: Lifecycle) -> Any:
        serving = self.make_serving(app, listeners, lifecycle)
        serving.start()
        return Embedding(self, serving)


class Embedding:
    """A serving in a loop the caller runs, as :func:`anyserve.embed` hands it back."""

    def __init__(self, adapter: EventLoopAdapter, serving: LoopServing) -> None:
        self.adapter = adapter
        self.serving = serving

    def stop(self) -> Any:
        """Begin the graceful stop; see :meth:`EventLoopAdapter.stop_embedded`."""
        return self.adapter.stop_embedded(self.serving)


class AsyncioLoop:
    """The loop's own calls for a server on asyncio (Tornado's IOLoop runs on it):
    mixed in before EventLoopAdapter. An embedded serving's ``stop()`` returns
    a future to await.

    asyncio is imported in the calls: it imports ssl, which gevent and eventlet
    must patch before anyone imports it."""

    def run_loop(self, main: Callable[[], None]) -> None:
        import asyncio

        async def run() -> None:
            self._loop = asyncio.get_running_loop()
            self._done = asyncio.Event()
            main()
            await self._done.wait()

        asyncio.run(run())

    def stop_loop(self) -> None:
        self._done.set()

    def call_threadsafe(self, function: Callable[[], object]) -> None:
        self._loop.call_soon_threadsafe(function)

    def call_later(self, delay: float, function: Callable[[], object]) -> Cancel:
        import asyncio

        return asyncio.get_running_loop().call_later(delay, function).cancel

    def stop_embedded(self, serving: LoopServing) -> Any:
        import asyncio

        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        serving.stop(lambda: done.done() or done.set_result(None))
        return done
