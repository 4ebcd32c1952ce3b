"""The app anyserve serves: the APP, the --mount and --vhost apps around it, and
the middleware the options ask for, built in one place for every server."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from .cherrypy_bridge import CherryPyBridge, bridge_for, is_cherrypy_app
from .config import Config
from .errors import AnyserveError, ConfigError
from .loader import load_app
from .logs import ACCESS_LOGGER
from .middleware import (
    AccessLog,
    ContentLengthGuard,
    EnvironFlags,
    HeadWithoutBody,
    Mounts,
    Profiler,
    ProxyHeaders,
    RequestLimits,
    RequestTarget,
    RootPath,
    UnixPorts,
    VirtualHosts,
)

WSGIApp = Callable[..., Any]


class Site:
    """The loaded apps and the one WSGI callable that dispatches to them; once
    built (:func:`build_site`), the middleware around it and the CherryPy bridge."""

    def __init__(self, app: WSGIApp, loaded: list[WSGIApp], specs: list[Any] | None = None) -> None:
        #: The dispatch to the apps (before the middleware of :func:`wrap`).
        self.app = app
        #: Every app loaded, the default one first when there is one.
        self.loaded = loaded
        #: What named each of them (an APP string, or the object given), in the same order.
        self.specs = specs if specs is not None else list(loaded)
        #: What the server calls: the app with the middleware the options ask for.
        self.served: WSGIApp = app
        #: The CherryPy bridge, prepared, when the CherryPy engine is involved.
        self.bridge: CherryPyBridge | None = None

    def main_app(self) -> WSGIApp:
        """The app the CherryPy bridge looks at: the first CherryPy app (several
        share the one engine), else the first app loaded."""
        return next((app for app in self.loaded if is_cherrypy_app(app)), self.loaded[0] if self.loaded else self.app)


def load_site(config: Config, target: Any) -> Site:
    """Load APP (*target*) and the --mount and --vhost apps; dispatch between them.

    Mounts belong to the default site: ``--mount /a=m:a APP`` serves /a from m:a
    and the rest from APP; virtual hosts choose between whole sites, the default
    site serving every other host."""
    if target is None and not (config.mount or config.vhost):
        raise AnyserveError("no APP given: name the application as module:attr, e.g. myapp:application")

    def load(spec: Any, script_name: str | None = "") -> WSGIApp:
        app = load_app(spec, factory=config.factory, app_dir=config.app_dir, script_name=script_name)
        loaded.append(app)
        specs.append(spec)
        return app

    loaded: list[WSGIApp] = []
    specs: list[Any] = []
    default = load(target) if target is not None else None
    if config.mount:
        mounts = {prefix: load(spec, prefix) for prefix, spec in config.mount.items() if prefix}
        if "" in config.mount:
            if default is not None:
                raise ConfigError("--mount /=APP and the positional APP both name the default app; give only one")
            mounts[""] = default = load(config.mount[""])
        elif default is not None:
            mounts[""] = default
        default = Mounts(mounts)
    if config.vhost:
        # A CherryPy root serving a host is an application of its own: on
        # cherrypy.tree, the roots of several hosts would all claim '/'.
        hosts = {host: load(spec, None) for host, spec in config.vhost.items()}
        default = VirtualHosts(hosts, default)
    assert default is not None
    return Site(default, loaded, specs)


def build_site(config: Config, target: Any, adapter: Any) -> Site:
    """Import the apps, prepare CherryPy when one of them is a CherryPy app, and
    wrap them in the middleware the options and *adapter* (the server) ask for."""
    site = load_site(config, target)
    site.bridge = bridge_for(site.main_app(), config, native=adapter.runs_cherrypy_engine)
    if site.bridge is not None:
        site.bridge.prepare()
    wrap_site(site, config, adapter)
    return site


def wrap_site(site: Site, config: Config, adapter: Any) -> None:
    """Put around the site the middleware *config* and *adapter* ask for (again,
    once the app's CherryPy config gave options of its own)."""
    site.served = wrap(
        site.app,
        config,
        head_without_body=adapter.capabilities.head_without_body,
        environ_flags=adapter.environ_flags(config),
        app_may_close=adapter.app_may_close,
    )


def wrap(
    app: WSGIApp,
    config: Config,
    *,
    head_without_body: bool,
    environ_flags: dict[str, Any] | None = None,
    app_may_close: bool = True,
) -> WSGIApp:
    """The middleware the options ask for, and the one every server gets,
    outermost first: the WSGI flags the server gets wrong, the request target
    read the same on every server, the ports on a unix socket, the access log
    (it sees the request as it came and the client after the proxy headers), the
    proxy headers, the request size limits, HEAD without a body (for servers
    that would send one), no body longer than its Content-Length, the profiler,
    the root path."""
    if config.root_path:
        app = RootPath(app, config.root_path)
    if config.profile is not None:
        try:
            os.makedirs(config.profile, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"--profile: cannot create the directory {config.profile}: {exc.strerror}") from None
        app = Profiler(app, config.profile)
    app = ContentLengthGuard(app)
    if not head_without_body:
        app = HeadWithoutBody(app)
    if config.max_header_size or config.max_body_size:
        app = RequestLimits(app, config.max_header_size, config.max_body_size, may_close=app_may_close)
    if config.proxy_headers:
        app = ProxyHeaders(app, config.forwarded_allow_ips.split(","))
    if config.access_log is not None:
        app = AccessLog(app, config.access_log_format, logging.getLogger(ACCESS_LOGGER))
    if any(spec.startswith("unix:") for spec in config.listen):
        app = UnixPorts(app)
    app = RequestTarget(app)
    if environ_flags:
        app = EnvironFlags(app, environ_flags)
    return app
