"""Lifecycle: the three moments every host loop has, driven by each adapter.

- ``started``: in each serving process, after any fork, before the first request;
- ``tick``: every ``main_interval`` seconds, from the host's own loop (or a thread
  of the adapter's for threaded servers);
- ``stopping``: once, on graceful shutdown, in each serving process.

The names mirror CherryPy's bus channels (start, main, stop) so the CherryPy
bridge is a thin subscriber.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("anyserve.lifecycle")

MOMENTS = ("started", "tick", "stopping")
Hook = Callable[[], object]


class Lifecycle:
    """Hooks for started/tick/stopping, called by the adapter that serves."""

    def __init__(self, main_interval: float = 0.1) -> None:
        self.main_interval = main_interval
        self._hooks: dict[str, list[Hook]] = {moment: [] for moment in MOMENTS}
        self._last: dict[str, list[Hook]] = {moment: [] for moment in MOMENTS}
        self._lock = threading.Lock()
        self._stopped = False
        #: Set once ``started()`` has run: the server accepts requests.
        self.ready = threading.Event()
        #: Whether the graceful stop ended with requests still running (see :meth:`cut`).
        self.requests_cut = False

    def subscribe(self, moment: str, hook: Hook, *, last: bool = False) -> None:
        """Call *hook* at *moment* (one of started, tick, stopping).

        Hooks run in the order they were subscribed (``stopping`` in reverse);
        *last* ones after all the others, whenever they were subscribed."""
        if moment not in self._hooks:
            raise ValueError(f"unknown lifecycle moment {moment!r}; expected one of {', '.join(MOMENTS)}")
        (self._last if last else self._hooks)[moment].append(hook)

    def hooks(self, moment: str) -> list[Hook]:
        return [*self._hooks[moment], *self._last[moment]]

    @property
    def wants_ticks(self) -> bool:
        return bool(self.hooks("tick"))

    def started(self) -> None:
        """The server is about to take its first request in this process.

        A failing ``started`` hook propagates: the adapter must not serve."""
        for hook in self.hooks("started"):
            hook()
        self.ready.set()

    def tick(self) -> None:
        for hook in self.hooks("tick"):
            try:
                hook()
            except Exception:
                log.exception("lifecycle tick hook %r failed", hook)

    def stopping(self) -> None:
        """Graceful shutdown: runs the hooks once, whoever calls it again, in the
        reverse order of subscription, so what started first stops last."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        for hook in reversed(self.hooks("stopping")):
            try:
                hook()
            except Exception:
                log.exception("lifecycle stopping hook %r failed", hook)

    def cut(self, graceful_timeout: float, left: int | None) -> None:
        """The graceful stop is over with *left* requests still running (None: some,
        the server does not say how many): they are cut short. Say so."""
        if left == 0:
            return
        self.requests_cut = True
        stopped = logging.getLogger("anyserve")
        if left is None:
            stopped.warning(
                "graceful timeout (%ss) reached with requests still running; they are cut short", graceful_timeout
            )
        else:
            stopped.warning("graceful timeout (%ss) reached with %d request(s) still running", graceful_timeout, left)

    def start_tick_thread(self) -> Callable[[], None]:
        """For threaded servers: call ``tick()`` from a thread of its own.

        Returns a function that stops the thread. No thread is started when
        nothing subscribed to ``tick``."""
        if not self.wants_ticks:
            return lambda: None
        done = threading.Event()

        def run() -> None:
            while not done.wait(self.main_interval):
                self.tick()

        thread = threading.Thread(target=run, name="anyserve-tick", daemon=True)
        thread.start()

        def stop() -> None:
            done.set()
            if thread is not threading.current_thread():
                thread.join()

        return stop
