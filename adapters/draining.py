"""The graceful stop, as every adapter does it.

A stop stops accepting, closes the connections that wait for a request, lets
the requests under way finish until ``--graceful-timeout`` and then cuts the
rest short, saying so. One connection is treated with care: one accepted just
before the stop whose first request has not arrived yet. Its client has done
nothing wrong (with several workers on one listener, the one about to stop may
be the one that accepted), so it gets :data:`FIRST_REQUEST_GRACE` seconds for
that request. :class:`Drain` is the clock of one stop; :class:`ConnectionTracker`
knows the state of each connection for servers that say when a request begins
and ends.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from anyserve.lifecycle import Lifecycle

#: How long a connection accepted just before the stop may take to send its first request.
FIRST_REQUEST_GRACE = 2.0
#: How long past the graceful timeout a server may take to let go of the requests
#: it cut short (closing their connections) before anyserve stops waiting for it.
STOP_MARGIN = 1.0
#: How often a drain looks again at what it waits for.
POLL = 0.01
#: The answer, before closing, to a connection that served no request yet and
#: whose first request did not come whole within --timeout-keep-alive (cheroot's,
#: which CherryPy's own tests expect): between two requests it just closes.
REQUEST_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
#: What ``anyserve list`` says closes a connection after --timeout-keep-alive on a
#: server without a setting of its own (ConnectionTracker's timeout).
ENFORCED_BY_ANYSERVE = "anyserve (a socket timeout on each connection: waiting for a request, reading one)"


class Drain:
    """The clock of one graceful stop, started when it begins."""

    def __init__(self, graceful_timeout: float) -> None:
        self.graceful_timeout = graceful_timeout
        self.started = time.monotonic()
        #: Until when requests under way may run.
        self.deadline = self.started + graceful_timeout
        #: Until when a connection accepted before the stop may send its first request.
        self.fresh_until = self.started + min(FIRST_REQUEST_GRACE, graceful_timeout)

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self.deadline

    def awaits_fresh(self) -> bool:
        """Whether a connection that has not sent its first request is still waited for."""
        return time.monotonic() < self.fresh_until

    def end(self, lifecycle: Lifecycle, left: int | None) -> None:
        """The waiting is over, with *left* requests still running (None: some,
        the server does not say how many)."""
        lifecycle.cut(self.graceful_timeout, left)


class StopRace:
    """``shutdown()`` may come from any thread or a signal handler (one that
    interrupts ``serve()`` itself), before ``serve()`` has anything to stop or
    after: whichever of the two comes second sets the stop going, once."""

    def __init__(self) -> None:
        self._lock = threading.RLock()  # reentrant: a signal handler may interrupt its holder
        self._requested = False
        self._target: Any = None

    @property
    def requested(self) -> bool:
        return self._requested

    @property
    def target(self) -> Any:
        """What ``serve()`` made ready to stop, if it has."""
        return self._target

    def ready(self, target: Any) -> bool:
        """``serve()`` now has *target* to stop; False if a stop was asked for
        already (and so is serve()'s to do)."""
        with self._lock:
            self._target = target
            return not self._requested

    def request(self) -> tuple[bool, Any]:
        """``shutdown()``: whether this is the first call, and the target ``serve()``
        made ready (None: not yet, serve() will see the request)."""
        with self._lock:
            if self._requested:
                return False, None
            self._requested = True
            return True, self._target


def stop_within(stop: Callable[[], int], deadline: float, name: str) -> int | None:
    """Run *stop* (it returns how many requests it left running) in a thread named
    *name*; return its result, or None if it still runs at *deadline* +
    STOP_MARGIN. Some servers wait for every request however long it runs
    (cheroot joins its workers; socketserver waits for the request it serves in
    its accepting thread): past the graceful timeout, anyserve stops waiting."""
    left: list[int] = []
    stopper = threading.Thread(target=lambda: left.append(stop()), name=name, daemon=True)
    stopper.start()
    stopper.join(max(0.0, deadline + STOP_MARGIN - time.monotonic()))
    return left[0] if left else None


def wait_for(event: threading.Event) -> None:
    """Wait for *event* so that signal handlers still run. The kernel may hand a
    signal to any thread; its Python handler then runs only once the main thread
    runs Python code, which a wait without a timeout never does."""
    while not event.wait(0.2):
        pass


class ConnectionTracker:
    """Which connections wait for their first request (fresh), wait for another
    (idle) or serve one (busy).

    A drain closes the idle ones at once, so a keep-alive client does not hold
    up the stop, gives the fresh ones until the drain's ``fresh_until`` for their
    request, and leaves the busy ones to finish theirs; each then closes as it
    becomes idle. *close* shuts a connection (by default a socket, which wakes
    the reader blocked on it).

    With a *timeout* (``--timeout-keep-alive``, for servers that have no setting
    of their own), each socket accepted gets it as its timeout: a wait for a
    request, or a read or write of one, that makes no progress for that long
    raises TimeoutError in the server, which closes the connection."""

    def __init__(self, close: Callable[[Any], None] | None = None, timeout: float | None = None) -> None:
        self._conns: dict[Any, str] = {}  # connection -> fresh, idle or busy
        self._lock = threading.Lock()
        self._close = close or shutdown_socket
        self.timeout = timeout
        self.draining = False

    def accepted(self, conn: Any) -> None:
        if self.timeout is not None:
            conn.settimeout(self.timeout)
        with self._lock:
            self._conns[conn] = "fresh"

    def is_fresh(self, conn: Any) -> bool:
        return self._conns.get(conn, "fresh") == "fresh"

    def is_idle(self, conn: Any) -> bool:
        """Whether it waits for a request after serving one."""
        return self._conns.get(conn) == "idle"

    def waiting(self, conn: Any) -> None:
        """The connection waits for a request: its first, or another (idle)."""
        if not self.is_fresh(conn):
            self.mark(conn, busy=False)

    def mark(self, conn: Any, busy: bool) -> None:
        with self._lock:
            if conn not in self._conns:
                return
            self._conns[conn] = "busy" if busy else "idle"
            if self.draining and not busy:
                self._close(conn)

    def forget(self, conn: Any) -> None:
        with self._lock:
            self._conns.pop(conn, None)

    def close(self, conn: Any) -> None:
        self._close(conn)

    def count(self, *states: str) -> int:
        with self._lock:
            return sum(1 for state in self._conns.values() if state in states)

    def drain(self, drain: Drain) -> None:
        """From now on no connection waits for another request; the fresh ones
        are closed at ``drain.fresh_until`` if their request has not come."""
        with self._lock:
            self.draining = True
            fresh = []
            for conn, state in self._conns.items():
                if state == "idle":
                    self._close(conn)
                elif state == "fresh":
                    fresh.append(conn)
        if fresh:
            timer = threading.Timer(max(0.0, drain.fresh_until - time.monotonic()), self._close_if_fresh, [fresh])
            timer.daemon = True
            timer.start()

    def _close_if_fresh(self, conns: list[Any]) -> None:
        with self._lock:
            for conn in conns:
                if self._conns.get(conn) == "fresh":
                    self._close(conn)


def shutdown_socket(conn: Any) -> None:
    """Shut a socket down both ways, waking whoever reads it."""
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
