"""A Twisted program that serves a CherryPy app and a plain WSGI app.

Twisted owns the reactor; anyserve adopts its listeners into that reactor and
CherryPy's engine ticks from a LoopingCall. Twisted's own site keeps serving on
its port. Send SIGUSR1 to stop the WSGI apps; SIGTERM or Ctrl-C (SIGINT) stops
the reactor, which lets the WSGI apps finish their requests first, and ends the program.

    python examples/twisted_embed.py [TWISTED_PORT CHERRYPY_PORT PLAIN_PORT]
"""

from __future__ import annotations

import signal
import sys
import threading

from apps import Root, plain
from twisted.internet import reactor
from twisted.web import resource, server

import anyserve


class Own(resource.Resource):
    isLeaf = True

    def render_GET(self, request: object) -> bytes:
        return b"twisted's own resource\n"


def main(ports: list[int]) -> None:
    own = reactor.listenTCP(ports[0], server.Site(Own()), interface="127.0.0.1")
    embedded: list[anyserve.Embedded] = []

    def start() -> None:
        embedded.append(anyserve.embed(Root(threading.get_native_id()), server="twisted", bind=f"127.0.0.1:{ports[1]}"))
        embedded.append(anyserve.embed(plain, server="twisted", bind=f"127.0.0.1:{ports[2]}"))
        print(f"twisted http://127.0.0.1:{own.getHost().port}\ncherrypy {embedded[0].url}\nplain {embedded[1].url}")
        sys.stdout.flush()

    def stop_wsgi() -> None:
        from twisted.internet import defer

        def report(_: object) -> None:
            print("wsgi stopped; the loop runs on", flush=True)

        defer.gatherResults([e.stop() for e in embedded]).addCallback(report)

    signal.signal(signal.SIGUSR1, lambda *_: reactor.callFromThread(stop_wsgi))
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: reactor.callFromThread(reactor.stop))
    reactor.callWhenRunning(start)
    reactor.run(installSignalHandlers=False)


if __name__ == "__main__":
    main([int(p) for p in sys.argv[1:4]] if len(sys.argv) > 3 else [8001, 8002, 8003])
