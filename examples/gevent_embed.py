"""A gevent program that serves a CherryPy app and a plain WSGI app in its hub.

The program owns the gevent hub (and monkey-patches, as gevent programs do);
anyserve starts its servers in that hub and CherryPy's engine ticks from a
greenlet. Send SIGUSR1 to stop the WSGI apps (the program's own greenlet keeps
beating); SIGTERM or Ctrl-C (SIGINT) stops them gracefully, if they still
serve, and ends the program.

    python examples/gevent_embed.py [CHERRYPY_PORT PLAIN_PORT]
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import signal  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402

import gevent  # noqa: E402
from apps import Root, plain  # noqa: E402
from gevent.event import Event  # noqa: E402

import anyserve  # noqa: E402


def main(ports: list[int]) -> None:
    beats = [0]

    def heartbeat() -> None:
        while True:
            gevent.sleep(0.05)
            beats[0] += 1

    beating = gevent.spawn(heartbeat)
    cp = anyserve.embed(Root(threading.get_native_id()), server="gevent", bind=f"127.0.0.1:{ports[0]}")
    wsgi = anyserve.embed(plain, server="gevent", bind=f"127.0.0.1:{ports[1]}")
    print(f"cherrypy {cp.url}\nplain {wsgi.url}", flush=True)

    stop_wsgi, done = Event(), Event()
    gevent.signal_handler(signal.SIGUSR1, stop_wsgi.set)
    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, done.set)
    gevent.wait([stop_wsgi, done], count=1)
    cp.stop()
    wsgi.stop()
    if not done.is_set():
        before = beats[0]
        gevent.sleep(0.3)
        print(f"wsgi stopped; the loop runs on: {beats[0] > before}", flush=True)
        done.wait()
    beating.kill()


if __name__ == "__main__":
    main([int(p) for p in sys.argv[1:3]] if len(sys.argv) > 2 else [8002, 8003])
