"""What anyserve serves and how, in a few lines: the app and its mounts and
hosts, the server and its process model, the listeners, TLS and the access log.

``anyserve check`` prints these lines; ``anyserve serve`` logs the same lines
at start, once, from its own process, when requests are answered.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from .config import CHERRYPY_CONFIG, COMBINED_LOG_FORMAT
from .errors import BindError
from .plan import Plan
from .sockets import Listener, parse_bind

log = logging.getLogger("anyserve")


def summary(plan: Plan, listeners: list[Listener], *, serving: bool) -> list[str]:
    """The lines that say what *plan* serves on *listeners*.

    *serving*: the listeners take requests ("Listening on URL"); else they were
    bound as a check and released ("listen: URL")."""
    config = plan.config
    lines = [f"app: {_app(plan, plan.target)}"] if plan.target is not None else []
    lines += [f"mount: {prefix or '/'} = {_app(plan, spec)}" for prefix, spec in config.mount.items()]
    lines += [f"vhost: {host} = {_app(plan, spec)}" for host, spec in config.vhost.items()]
    lines.append(f"server: {plan.adapter.described()}, {process_model(plan)}")
    urls = [listener.url() if serving else _checked(listener) for listener in listeners]
    # The app's other CherryPy servers: the listeners bound last, for their addresses.
    extra = {
        len(listeners) - len(plan.extra_servers) + index: server.name for index, server in enumerate(plan.extra_servers)
    }
    for index, url in enumerate(urls):
        shown = f"{url} ({extra[index]})" if index in extra else url
        lines.append(f"Listening on {shown}" if serving else f"listen: {shown}")
    for tls in dict.fromkeys(listener.tls for listener in listeners if listener.tls is not None):
        served = [url for url, listener in zip(urls, listeners, strict=True) if listener.tls == tls]
        where = "every listener" if len(served) == len(listeners) else ", ".join(served)
        source = "self-signed for localhost (--ssl-adhoc)" if tls.adhoc else tls.certfile
        lines.append(f"tls: {source} on {where}; client certificates: {tls.cert_reqs}")
    lines += [f"option: {line}" for line in config.described_sources() if CHERRYPY_CONFIG in line]
    lines.append(f"access log: {access_log(config.access_log, config.access_log_format)}")
    return lines


def log_summary(plan: Plan, listeners: list[Listener], *, owns_process: bool = True) -> None:
    """Log the summary of what serves, one line each, at INFO; then, in a process
    of anyserve's own (*owns_process*) whose messages a person watches on a
    terminal, how to stop it."""
    for line in summary(plan, listeners, serving=True):
        log.info("%s", line)
    if owns_process and plan.config.error_log in (None, "-") and sys.stderr is not None and sys.stderr.isatty():
        log.info("Press Ctrl-C to quit")


def process_model(plan: Plan) -> str:
    """Workers and threads: "2 workers, 4 threads each (the server's default)"."""
    config, capabilities = plan.config, plan.adapter.capabilities
    workers = config.workers
    shown = f"{workers} worker{'s' if workers > 1 else ''}"
    if plan.supervised:
        shown += " (anyserve's supervisor)"
    threads = config.threads or capabilities.default_threads
    if threads is None:
        return f"{shown}, {capabilities.concurrency}"
    shown += f", {threads} thread{'s' if threads > 1 else ''}{' each' if workers > 1 else ''}"
    return shown if config.threads else f"{shown} (the server's default)"


def access_log(target: str | None, log_format: str) -> str:
    if target is None:
        return "off"
    where = "stdout" if target == "-" else target
    return f"{where}, {'combined' if log_format == COMBINED_LOG_FORMAT else 'custom'} format"


def describe(obj: Any) -> str:
    """An object as module.name: "myapp.application"."""
    name = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    module = getattr(obj, "__module__", None) or type(obj).__module__
    return f"{module}.{name}"


def _checked(listener: Listener) -> str:
    """The URL of a listener bound as a check: a port 0 asked for stays 0, as the
    port bound then says nothing of the one picked at start."""
    url = listener.url()
    try:
        kind, where = parse_bind(listener.spec)
    except BindError:  # systemd:NAME
        return url
    if kind == "tcp" and where[1] == 0:  # type: ignore[index]
        return f"{url.rsplit(':', 1)[0]}:0 (a free port, picked at start)"
    return url


def _app(plan: Plan, spec: Any) -> str:
    """An APP string, and what it named once loaded: "myapp -> myapp.application"."""
    if not isinstance(spec, str):
        return describe(spec)
    if plan.site is None or spec not in plan.site.specs:  # imported by each worker, after the fork
        return spec
    return f"{spec} -> {describe(plan.site.loaded[plan.site.specs.index(spec)])}"
