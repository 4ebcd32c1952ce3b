"""A Tornado application that also serves a CherryPy app and a plain WSGI app.

Tornado owns the IOLoop; anyserve serves the two WSGI apps on two more ports
from that same loop, and CherryPy's engine ticks from it. Send SIGUSR1 to stop
the WSGI apps while Tornado's own app keeps serving; SIGTERM or Ctrl-C (SIGINT)
stops them gracefully, if they still serve, and ends the program.

    python examples/tornado_embed.py [TORNADO_PORT CHERRYPY_PORT PLAIN_PORT]
"""

from __future__ import annotations

import asyncio
import signal
import sys
import threading

import tornado.web
from apps import Root, plain

import anyserve


class Own(tornado.web.RequestHandler):
    def get(self) -> None:
        self.write("tornado's own handler\n")


async def main(ports: list[int]) -> None:
    loop = asyncio.get_running_loop()
    own = tornado.web.Application([(r"/", Own)]).listen(ports[0], "127.0.0.1")
    cp = anyserve.embed(Root(threading.get_native_id()), server="tornado", bind=f"127.0.0.1:{ports[1]}")
    wsgi = anyserve.embed(plain, server="tornado", bind=f"127.0.0.1:{ports[2]}")
    port = next(iter(own._sockets.values())).getsockname()[1]
    print(f"tornado http://127.0.0.1:{port}\ncherrypy {cp.url}\nplain {wsgi.url}", flush=True)

    stop_wsgi, done = asyncio.Event(), asyncio.Event()
    loop.add_signal_handler(signal.SIGUSR1, stop_wsgi.set)
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, done.set)
    await first_of(stop_wsgi, done)
    await cp.stop()
    await wsgi.stop()
    if not done.is_set():
        print("wsgi stopped; the loop runs on", flush=True)
        await done.wait()
    own.stop()


async def first_of(*events: asyncio.Event) -> None:
    """Wait until one of *events* is set."""
    waits = [asyncio.create_task(event.wait()) for event in events]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for wait in waits:
        wait.cancel()


if __name__ == "__main__":
    asyncio.run(main([int(p) for p in sys.argv[1:4]] if len(sys.argv) > 3 else [8001, 8002, 8003]))
