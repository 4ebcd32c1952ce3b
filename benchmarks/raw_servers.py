"""Each server started the way its own documentation shows, with no anyserve.

    python benchmarks/raw_servers.py NAME PORT APP_NAME [THREADS]

NAME: tornado-default (``WSGIContainer(app)``, the form Tornado's docs show),
tornado (the same with ``executor=ThreadPoolExecutor(THREADS)``), twisted,
gevent, eventlet. APP_NAME is an app of scenario_apps.py.
"""

from __future__ import annotations

import sys

import scenario_apps


def main(name: str, port: int, app_name: str, threads: int) -> None:
    app = getattr(scenario_apps, app_name)
    if name.startswith("tornado"):
        import asyncio
        from concurrent.futures import ThreadPoolExecutor

        import tornado.httpserver
        import tornado.wsgi

        async def serve() -> None:
            executor = None if name == "tornado-default" else ThreadPoolExecutor(threads)
            container = tornado.wsgi.WSGIContainer(app, executor=executor)
            tornado.httpserver.HTTPServer(container).listen(port, "127.0.0.1")
            await asyncio.Event().wait()

        asyncio.run(serve())
    elif name == "twisted":
        from twisted.internet import reactor
        from twisted.web.server import Site
        from twisted.web.wsgi import WSGIResource

        reactor.suggestThreadPoolSize(threads)
        resource = WSGIResource(reactor, reactor.getThreadPool(), app)
        reactor.listenTCP(port, Site(resource), interface="127.0.0.1")
        reactor.run()
    elif name == "gevent":
        from gevent.pywsgi import WSGIServer

        WSGIServer(("127.0.0.1", port), app, log=None).serve_forever()
    elif name == "eventlet":
        import eventlet
        import eventlet.wsgi

        eventlet.wsgi.server(eventlet.listen(("127.0.0.1", port)), app, log_output=False)
    else:
        raise SystemExit(f"unknown raw server {name!r}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else 10)
