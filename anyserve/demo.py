"""The demo app: ``anyserve anyserve.demo:app``.

A small CherryPy application whose page says which server, version, process and
worker serve it; a plain WSGI app with the same page when CherryPy is missing.
"""

from __future__ import annotations

import html
import os
import platform
import threading
from collections.abc import Callable, Iterable
from typing import Any

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>anyserve demo</title></head>
<body>
<h1>Served by {server}</h1>
<table>
<tr><th align=left>server</th><td>{server}</td></tr>
<tr><th align=left>SERVER_SOFTWARE</th><td>{software}</td></tr>
<tr><th align=left>process</th><td>{pid}</td></tr>
<tr><th align=left>worker</th><td>{worker}</td></tr>
<tr><th align=left>thread</th><td>{thread}</td></tr>
<tr><th align=left>framework</th><td>{framework}</td></tr>
<tr><th align=left>Python</th><td>{python}</td></tr>
<tr><th align=left>path</th><td>{path}</td></tr>
</table>
<p>Try another server: <code>anyserve -s waitress anyserve.demo:app</code>;
see them all with <code>anyserve list</code>.</p>
</body></html>
"""


def render(environ: dict[str, Any], framework: str) -> str:
    """The demo page for one request."""
    values = {
        "server": os.environ.get("ANYSERVE_SERVING", "an unknown server"),
        "software": environ.get("SERVER_SOFTWARE", "?"),
        "pid": os.getpid(),
        "worker": os.environ.get("ANYSERVE_WORKER", "1"),
        "thread": threading.current_thread().name,
        "framework": framework,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "path": environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""),
    }
    return PAGE.format(**{key: html.escape(str(value)) for key, value in values.items()})


def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """The demo as a plain WSGI application."""
    body = render(environ, "plain WSGI").encode()
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(body)))])
    return [body]


try:
    import cherrypy
except ImportError:  # pragma: no cover - depends on what is installed
    cherrypy = None

if cherrypy is not None:

    class Root:
        """The demo as a CherryPy application."""

        @cherrypy.expose
        def index(self) -> str:
            environ = cherrypy.request.wsgi_environ
            return render(environ, f"CherryPy {cherrypy.__version__}")

    # script_name None: CherryPy takes it from SCRIPT_NAME, so --root-path works.
    app: Callable[..., Any] = cherrypy.Application(Root(), script_name=None)
else:
    app = wsgi_app

application = app
