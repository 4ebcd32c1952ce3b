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

from .apps import Site, build_site, wrap_site
from .config import CHERRYPY_CONFIG, Config
from .errors import AnyserveError, ConfigError, Unsupported
from .loader import add_app_dir
from .registry import choose_adapter, suggesting_others
from .sockets import Listener, bind_listeners
from .tls import TLS, check_tls, make_adhoc_certificate

if TYPE_CHECKING:
    from anyserve.adapters.base import Adapter

    from .cherrypy_bridge import ExtraServer

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
    #: The app's other CherryPy servers (``cherrypy._cpserver.Server``), each a listener with its own TLS.
    extra_servers: tuple[ExtraServer, ...] = ()

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
    config, extras = with_cherrypy_config(config, site)
    if site is not None and config.sources_matching(CHERRYPY_CONFIG):
        wrap_site(site, config, adapter)
    refuse_cherrypy_config(config, adapter, extras)
    if here or not (config.workers > 1 and not adapter.capabilities.workers):
        tls = load_tls(config, serving=not checking)  # after prepare_process: gevent and eventlet patch ssl first
    else:
        # Checked in each worker, once its server patched ssl; an --ssl-adhoc
        # certificate is made here, so that every worker serves the same one.
        config, tls = settings_for_workers(config)
    return Plan(config, adapter, settings, tls, target, site, extras)


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


def with_cherrypy_config(config: Config, site: Site | None) -> tuple[Config, tuple[ExtraServer, ...]]:
    """*config* with the options the ``server.*`` keys of the CherryPy config give,
    each where no source of the user's gave it (an address where no -b/-i/-p
    did): from the app's own config when it is loaded, else from the
    --cherrypy-config file; and the app's other CherryPy servers, as listeners."""
    from .cherrypy_bridge import SOURCE, options_in_config_file

    if site is not None:
        if site.bridge is None:
            return config, ()
        found, extras = site.bridge.server_options(), tuple(site.bridge.extra_servers)
    elif config.cherrypy_config and config.cherrypy is not False:
        found, extras = options_in_config_file(config.cherrypy_config), ()
    else:
        return config, ()
    for warning in found.warnings:
        logging.getLogger("anyserve.cherrypy").warning("%s", warning)
    changes: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for option, (value, key) in found.options.items():
        given = ("bind", "host", "port") if option == "bind" else (option,)
        if not any(config.is_set(name) for name in given):
            changes[option], sources[option] = value, SOURCE.format(key)
    address_given = any(config.is_set(name) for name in ("bind", "host", "port", "tls_bind")) or "bind" in changes
    if extras and not address_given and site is not None and site.bridge is not None and not site.bridge.main_server:
        # The app serves on its own servers only (it unsubscribed cherrypy.server):
        # the first one's address is the main listener's, the others come after it.
        first, extras = extras[0], extras[1:]
        changes["bind"], sources["bind"] = [first.bind], f"{CHERRYPY_CONFIG} ({first.name})"
        if first.tls is not None and not config.tls:
            tls = {"certfile": first.tls.certfile, "keyfile": first.tls.keyfile, "ca_certs": first.tls.ca_certs}
            for option, value in tls.items():
                if value is not None:
                    changes[option], sources[option] = value, sources["bind"]
    return (config.replace(sources=sources, **changes) if changes else config), extras


def refuse_cherrypy_config(config: Config, adapter: type[Adapter], extras: tuple[ExtraServer, ...]) -> None:
    """Have the server refuse what the app's CherryPy config asks for and it cannot
    do (chosen before the app was imported), naming the key and the servers that can."""
    if not config.sources_matching(CHERRYPY_CONFIG) and not extras:
        return
    with suggesting_others(adapter.name):
        adapter.refuse(config)
        certificates = {extra.tls for extra in extras if extra.tls is not None}
        if certificates and not adapter.capabilities.tls:
            raise Unsupported(f"{adapter.name} cannot serve TLS ({extras[0].name} has a certificate)", "tls")
        if extras and not adapter.capabilities.tls_mixed and len({extra.tls for extra in extras} | {None}) > 1:
            raise Unsupported(
                f"{adapter.name} serves one TLS setting on all its listeners, so it cannot serve the app's other "
                f"CherryPy servers ({', '.join(extra.name for extra in extras)}) with their own",
                "tls_mixed",
            )
    for extra in extras:
        if extra.tls is not None:
            try:
                check_tls(extra.tls)
            except ConfigError as exc:
                raise ConfigError(f"{extra.name}: {exc}") from None


def bind(plan: Plan) -> list[Listener]:
    """Bind the listeners, mark those that serve TLS, and have the server refuse
    the ones it cannot serve on (a unix socket systemd passed, say). The app's
    other CherryPy servers come last, each with its own TLS."""
    config = plan.config
    listeners = bind_listeners(config.listen, backlog=config.backlog, uds_mode=config.uds_mode)
    try:
        mark_tls(listeners, config, plan.tls)
        if plan.extra_servers:
            extra = bind_listeners(
                [server.bind for server in plan.extra_servers], backlog=config.backlog, uds_mode=config.uds_mode
            )
            for listener, server in zip(extra, plan.extra_servers, strict=True):
                listener.tls = server.tls
                listeners.append(listener)
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
