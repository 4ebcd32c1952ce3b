"""The walk from what the user asked for to what serves it, each decision made once.

``prepare(config, app)`` turns the options and the APP into a frozen
:class:`Plan`: the server chosen and its ``-o`` options parsed, the TLS
settings made, the address a CherryPy config gives applied, and, where this
process imports the app, the app loaded with its middleware. ``bind(plan)``
binds the listeners, marks those that serve TLS and has the server refuse
what it cannot serve on. The single process, the supervisor's workers and the
Python API all serve from a Plan (see :class:`anyserve.server.Server`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .apps import Site, build_site
from .config import Config
from .errors import AnyserveError, ConfigError
from .loader import add_app_dir
from .registry import choose_adapter, suggesting_others
from .sockets import Listener, bind_listeners
from .tls import TLS, check_tls, make_adhoc_certificate

if TYPE_CHECKING:
    from anyserve.adapters.base import Adapter

log = logging.getLogger("anyserve.tls")


@dataclass(frozen=True)
class Plan:
    """What to serve and how, decided before anything is bound."""

    #: Every option, final: with the address a CherryPy config gives.
    config: Config
    adapter: type[Adapter]
    #: The adapter's ``-o`` options, parsed.
    settings: Mapping[str, Any]
    #: The TLS settings; checked already, unless each worker checks them (see prepare).
    tls: TLS | None
    #: The APP: a string to import, or a WSGI callable (None with mounts or hosts only).
    target: Any
    #: The app, imported here; None when each serving process imports it after the fork.
    site: Site | None

    @property
    def supervised(self) -> bool:
        """Whether anyserve's supervisor forks the workers (the server has no workers of its own)."""
        return self.config.workers > 1 and not self.adapter.capabilities.workers


def prepare(config: Config, app: Any = None, *, owns_process: bool = False, checking: bool = False) -> Plan:
    """Choose the server, parse its options, make the TLS settings and, unless
    workers import it after the fork, load the app: each once, before binding.

    *owns_process*: this process serves and is anyserve's own (the command,
    ``anyserve.run()`` from the main thread), so a green-thread server may
    patch the standard library first. *checking*: for ``anyserve check``, which
    serves nothing: the app is imported and the TLS settings checked here,
    whoever would do it when serving."""
    add_app_dir(config.app_dir)
    target = app if app is not None else config.app
    if target is None and not (config.mount or config.vhost):
        raise AnyserveError("no APP given: name the application as module:attr, e.g. myapp:application")
    adapter, settings = choose_adapter(config)
    here = checking or imports_app_here(config, adapter)
    if owns_process and here:
        adapter.prepare_process(config, settings)
    site = build_site(config, target, adapter) if here else None
    config = with_cherrypy_address(config, site)
    config = with_cherrypy_socket_timeout(config, site)
    if here or not (config.workers > 1 and not adapter.capabilities.workers):
        tls = load_tls(config, serving=not checking)  # after prepare_process: gevent and eventlet patch ssl first
    else:
        # Checked in each worker, once its server patched ssl; an --ssl-adhoc
        # certificate is made here, so that every worker serves the same one.
        config, tls = settings_for_workers(config)
    return Plan(config, adapter, settings, tls, target, site)


def imports_app_here(config: Config, adapter: type[Adapter]) -> bool:
    """Whether the process that prepares imports the app, rather than each worker
    after the fork: with --preload, or when this process serves. A pre-fork
    server's workers under --user import it here: they take on the user before
    they would import it, and the app's files need not be readable by that user."""
    if config.preload:
        return True
    if adapter.capabilities.workers:
        return bool(config.user or config.group)
    return config.workers <= 1


def with_cherrypy_address(config: Config, site: Site | None) -> Config:
    """*config* with ``server.socket_host``/``socket_port`` of the CherryPy config
    as the address, when no -b/-i/-p gave one: from the app's own config when it
    is loaded, else from the --cherrypy-config file."""
    if any(config.is_set(name) for name in ("bind", "host", "port")):
        return config
    if site is not None:
        address = site.bridge.bind_address() if site.bridge is not None else None
    elif config.cherrypy_config and config.cherrypy is not False:
        from .cherrypy_bridge import address_in_config_file

        address = address_in_config_file(config.cherrypy_config)
    else:
        address = None
    return config.replace(host=address[0], port=address[1]) if address else config


def with_cherrypy_socket_timeout(config: Config, site: Site | None) -> Config:
    """*config* with CherryPy's ``server.socket_timeout`` as --timeout-keep-alive
    (what it means to cheroot: the idle wait and each read), when no option gave
    one and the app set it: in its config, or on ``cherrypy.server`` itself
    (where the config puts it, and where it stays when the config is reset)."""
    if config.is_set("timeout_keep_alive") or site is None or site.bridge is None:
        return config
    import cherrypy

    timeout = cherrypy.config.get("server.socket_timeout")
    if timeout is None and cherrypy.server.socket_timeout != type(cherrypy.server).socket_timeout:
        timeout = cherrypy.server.socket_timeout
    return config.replace(timeout_keep_alive=timeout) if timeout is not None else config


def bind(plan: Plan) -> list[Listener]:
    """Bind the listeners, mark those that serve TLS, and have the server refuse
    the ones it cannot serve on (a unix socket systemd passed, say)."""
    config = plan.config
    listeners = bind_listeners(config.listen, backlog=config.backlog, uds_mode=config.uds_mode)
    try:
        mark_tls(listeners, config, plan.tls)
        with suggesting_others(plan.adapter.name):
            plan.adapter.refuse_listeners(config, listeners)
    except BaseException:
        for listener in listeners:
            listener.close()
        raise
    return listeners


# -- TLS --------------------------------------------------------------------------------


def load_tls(config: Config, *, serving: bool = True) -> TLS | None:
    """The TLS settings of *config*, checked by building a context; None without TLS.

    *serving*: say in the log that an --ssl-adhoc certificate is for development."""
    if not config.tls:
        return None
    if config.ssl_adhoc:
        certfile, keyfile = make_adhoc_certificate()
        log.log(
            logging.WARNING if serving else logging.DEBUG,
            "--ssl-adhoc: serving a self-signed certificate for localhost made at start; "
            "for development only (clients will not trust it)",
        )
        tls = TLS(certfile, keyfile, ca_certs=config.ca_certs, cert_reqs=config.cert_reqs, adhoc=True)
    else:
        assert config.certfile is not None
        tls = TLS(config.certfile, config.keyfile, config.keyfile_password, config.ca_certs, config.cert_reqs)
    check_tls(tls)
    return tls


def settings_for_workers(config: Config) -> tuple[Config, TLS | None]:
    """For a parent that forks workers: the TLS settings, not checked yet (each
    worker checks them, after gevent or eventlet patched ssl there), and with an
    --ssl-adhoc certificate made once here, so every worker serves the same one."""
    if not config.tls:
        return config, None
    if config.ssl_adhoc:
        certfile, keyfile = make_adhoc_certificate()
        log.warning(
            "--ssl-adhoc: serving a self-signed certificate for localhost made at start; "
            "for development only (clients will not trust it)"
        )
        config = config.replace(ssl_adhoc=False, certfile=certfile, keyfile=keyfile)
    assert config.certfile is not None
    return config, TLS(config.certfile, config.keyfile, config.keyfile_password, config.ca_certs, config.cert_reqs)


def mark_tls(listeners: list[Listener], config: Config, tls: TLS | None) -> None:
    """Put *tls* on the listeners that serve TLS: those --tls-bind names, or every one."""
    if tls is None:
        return
    if not config.tls_bind:
        for listener in listeners:
            listener.tls = tls
        return
    for spec in config.tls_bind:
        chosen = [listener for listener in listeners if listener.matches(spec)]
        if not chosen:
            where = ", ".join(listener.spec for listener in listeners)
            raise ConfigError(f"--tls-bind {spec} names none of the listeners ({where})")
        for listener in chosen:
            listener.tls = tls
