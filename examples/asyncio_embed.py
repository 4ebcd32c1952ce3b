"""An asyncio program that serves a CherryPy app and a plain WSGI app.

The program owns the asyncio loop; anyserve serves through Tornado's asyncio
integration on that loop. Send SIGUSR1 to stop the WSGI apps (the program's own
asyncio work goes on: it prints a heartbeat); SIGTERM or Ctrl-C (SIGINT) stops
them gracefully, if they still serve, and ends the program.

    python examples/asyncio_embed.py [CHERRYPY_PORT PLAIN_PORT]
"""

from __future__ import annotations

import asyncio
import signal
import sys
import threading

from apps import Root, plain

import anyserve


async def heartbeat(beats: list[int]) -> None:
    while True:
        await asyncio.sleep(0.05)
        beats[0] += 1


async def main(ports: list[int]) -> None:
    loop = asyncio.get_running_loop()
    beats = [0]
    beating = asyncio.create_task(heartbeat(beats))
    cp = anyserve.embed(Root(threading.get_native_id()), server="tornado", bind=f"127.0.0.1:{ports[0]}")
    wsgi = anyserve.embed(plain, server="tornado", bind=f"127.0.0.1:{ports[1]}")
    print(f"cherrypy {cp.url}\nplain {wsgi.url}", flush=True)

    stop_wsgi, done = asyncio.Event(), asyncio.Event()
    loop.add_signal_handler(signal.SIGUSR1, stop_wsgi.set)
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, done.set)
    await first_of(stop_wsgi, done)
    await cp.stop()
    await wsgi.stop()
    if not done.is_set():
        before = beats[0]
        await asyncio.sleep(0.3)
        print(f"wsgi stopped; the loop runs on: {beats[0] > before}", flush=True)
        await done.wait()
    beating.cancel()


async def first_of(*events: asyncio.Event) -> None:
    """Wait until one of *events* is set."""
    waits = [asyncio.create_task(event.wait()) for event in events]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for wait in waits:
        wait.cancel()


if __name__ == "__main__":
    asyncio.run(main([int(p) for p in sys.argv[1:3]] if len(sys.argv) > 2 else [8002, 8003]))
