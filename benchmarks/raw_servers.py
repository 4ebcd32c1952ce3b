"""Each server started the way its own documentation shows, with no anyserve.

    python benchmarks/raw_servers.py NAME PORT APP_NAME [THREADS [BACKLOG]] [--workers N]

NAME: cheroot, waitress, gunicorn, uwsgi, tornado-default (``WSGIContainer(app)``, the
form Tornado's docs show), tornado (the same with
``executor=ThreadPoolExecutor(THREADS)``), twisted, gevent, eventlet, cherrypy,
werkzeug, wsgiref. APP_NAME is an app of scenario_apps.py. Where a server has a
thread pool its own default size is kept, except tornado and twisted (THREADS,
default 10, which is also anyserve's default for them). No access logs.

BACKLOG (cheroot, cherrypy and wsgiref, whose own listen backlog is 5): the
listen backlog to use instead of the server's own, e.g. anyserve's 2048.

--workers N (gunicorn and uwsgi): N worker processes, the way each one's docs
start several: ``gunicorn -w N``, ``uwsgi --master --processes N``.
"""

from __future__ import annotations

import argparse
import os
import sys

import scenario_apps

#: The servers this script can start by hand, by the name anyserve gives them.
RAW = (
    "cheroot",
    "waitress",
    "gunicorn",
    "uwsgi",
    "tornado",
    "twisted",
    "gevent",
    "eventlet",
    "cherrypy",
    "werkzeug",
    "wsgiref",
)


#: The servers that take BACKLOG.
SMALL_BACKLOG = ("cheroot", "cherrypy", "wsgiref")
#: The servers that take --workers.
PREFORK = ("gunicorn", "uwsgi")


def main(name: str, port: int, app_name: str, threads: int, backlog: int | None, workers: int | None) -> None:
    app = getattr(scenario_apps, app_name)
    if backlog is not None and name not in SMALL_BACKLOG:
        raise SystemExit(f"{name} takes no BACKLOG here")
    if workers is not None and name not in PREFORK:
        raise SystemExit(f"{name} takes no --workers here")
    if name == "cheroot":
        from cheroot import wsgi

        wsgi.Server(("127.0.0.1", port), app, **({"request_queue_size": backlog} if backlog else {})).safe_start()
    elif name == "waitress":
        import waitress

        waitress.serve(app, host="127.0.0.1", port=port, _quiet=True)
    elif name == "gunicorn":
        here = os.path.dirname(os.path.abspath(__file__))
        argv = [sys.executable, "-m", "gunicorn", "--chdir", here, "-b", f"127.0.0.1:{port}"]
        argv += ["-w", str(workers)] if workers else []
        os.execvp(sys.executable, [*argv, f"scenario_apps:{app_name}"])
    elif name == "uwsgi":
        here = os.path.dirname(os.path.abspath(__file__))
        uwsgi = os.path.join(os.path.dirname(sys.executable), "uwsgi")
        # As uWSGI's quickstart runs an app: one process, or a master and its workers; TERM
        # stops it rather than reloading it (uWSGI 2.0's default), so a run ends when it is told to.
        # It closes every connection after its response; "Connection: close" says so (as
        # anyserve's uwsgi does), else a load generator counts a read error per request.
        argv = [uwsgi, "--http-socket", f"127.0.0.1:{port}", "--chdir", here, "--module", f"scenario_apps:{app_name}"]
        argv += ["--master", "--processes", str(workers)] if workers else []
        os.execv(uwsgi, [*argv, "--disable-logging", "--die-on-term", "--add-header", "Connection: close"])
    elif name.startswith("tornado"):
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
    elif name == "cherrypy":
        import cherrypy

        cherrypy.tree.graft(app, "/")
        cherrypy.config.update(
            {"server.socket_host": "127.0.0.1", "server.socket_port": port, "environment": "production"}
        )
        if backlog:
            cherrypy.config.update({"server.socket_queue_size": backlog})
        cherrypy.engine.start()
        cherrypy.engine.block()
    elif name == "werkzeug":
        import logging

        from werkzeug.serving import run_simple

        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        run_simple("127.0.0.1", port, app, threaded=True)
    elif name == "wsgiref":
        from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

        class QuietHandler(WSGIRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

        class Server(WSGIServer):
            request_queue_size = backlog or WSGIServer.request_queue_size

        make_server("127.0.0.1", port, app, server_class=Server, handler_class=QuietHandler).serve_forever()
    else:
        raise SystemExit(f"unknown raw server {name!r}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name")
    parser.add_argument("port", type=int)
    parser.add_argument("app_name")
    parser.add_argument("threads", type=int, nargs="?", default=10)
    parser.add_argument("backlog", type=int, nargs="?")
    parser.add_argument("--workers", type=int)
    args = parser.parse_args()
    main(args.name, args.port, args.app_name, args.threads, args.backlog, args.workers)
