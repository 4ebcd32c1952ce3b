"""The Adapter contract: what a server declares, and the calls anyserve makes on it.

An adapter declares; it does not decide. It never parses argv, never binds a
socket and never imports a server at module level: the server is imported inside
``serve()``, so a missing server costs nothing until it is chosen. It receives
its settings already checked (the Config and its own ``-o`` options, parsed
once), its listeners already bound, and drives the Lifecycle from inside its
server's loop. Shared machinery lives beside this module: ``threaded.py`` for
servers with a blocking serving call, ``eventloop.py`` for servers that live in
an event loop, ``draining.py`` for the graceful stop they share.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from anyserve.config import Config
from anyserve.errors import ServerError, Unsupported, install_hint
from anyserve.lifecycle import Lifecycle
from anyserve.sockets import Listener

WSGIApp = Callable[..., Any]


@dataclass(frozen=True)
class Capabilities:
    """What a server can do, known without starting or importing it; anyserve
    refuses an option that needs a capability the server lacks."""

    #: How requests run, in the user's words ("thread pool of N (default 10)").
    concurrency: str
    threads: bool = False  # honours --threads
    workers: bool = False  # has its own worker processes (--workers)
    unix: bool = False  # serves on unix sockets
    fd: bool = True  # serves on inherited descriptors (fd://N, systemd)
    tls: bool = False  # serves HTTPS (--certfile, --ssl-adhoc)
    tls_mixed: bool = False  # serves HTTP and HTTPS listeners at once (--tls-bind)
    embed: bool = False  # can run inside a loop it does not own (anyserve.embed)
    background: bool = True  # can serve from a background thread (anyserve.serving)
    head_without_body: bool = False  # drops the app's body from a HEAD response itself
    #: Threads per process running the app when --threads is not given; None when
    #: the server has no fixed number (a green thread or a thread per connection).
    default_threads: int | None = None

    def flags(self) -> list[str]:
        """The names of the capabilities it has, for ``anyserve list``."""
        return [f.name for f in fields(self) if f.type in ("bool", bool) and getattr(self, f.name)]


@dataclass(frozen=True)
class Deviations:
    """Where the server, with anyserve's defaults, departs from what the conformance
    suite expects of an HTTP/1.1 server. Each one is asserted there, never skipped."""

    one_request_at_a_time: bool = False  # a slow request holds up every other one
    no_keep_alive: bool = False  # closes the connection after every response
    no_http10_keep_alive: bool = False  # closes an HTTP/1.0 connection even when the client asks to keep it
    no_chunked_request: bool = False  # hands a chunked upload to the app undecoded
    last_repeated_header: bool = False  # of a repeated request header the app sees the last value only
    any_http_version: bool = False  # serves a request line that names no HTTP/1.x version
    respelled_header_names: bool = False  # writes response header names its own way (Www-Authenticate)
    no_chunk_extensions_or_trailers: bool = False  # refuses a chunked body with chunk extensions or trailers
    bare_bad_request: bool = False  # answers a request it cannot parse with a bare 400: no body says why
    waits_on_bare_lf: bool = False  # takes no bare LF as a line end: such a request waits for its timeout, unanswered
    made_up_content_type: bool = False  # gives the app a Content-Type (text/plain) the request did not have
    #: a connection that sends nothing, or stops in the middle of a request head,
    #: is not closed after --timeout-keep-alive (it holds its worker or thread)
    no_read_timeout: bool = False
    #: closes a connection whose first request did not come whole within
    #: --timeout-keep-alive without answering it 408 (Request Timeout)
    silent_request_timeout: bool = False
    repeated_header_joined_without_space: bool = False  # joins a repeated request header's values with ","
    bad_header_line_unanswered: bool = False  # closes, unanswered, a request with a header line that is not a field

    def names(self) -> list[str]:
        """The deviations it has, in words, for ``anyserve list``."""
        return [f.name.replace("_", " ") for f in fields(self) if getattr(self, f.name)]


def join_repeated_headers(environ: dict[str, Any], headers: Iterable[tuple[str, str]]) -> None:
    """Give each request header that came more than once its values joined with
    ", ", in the order they came (RFC 9110 section 5.3), as cheroot and waitress
    give them: servers built on ``http.server`` join them with "," alone. Only
    the variables the server put in *environ* are replaced."""
    from anyserve.middleware import header_environ

    for key, value in header_environ((name, value.strip()) for name, value in headers).items():
        if key in environ:
            environ[key] = value


def drop_made_up_content_headers(environ: dict[str, Any], headers: Any) -> None:
    """Take out the CONTENT_TYPE and CONTENT_LENGTH a server made up: servers built
    on ``http.server`` give ``text/plain`` (and wsgiref an empty CONTENT_LENGTH)
    when the request had none, and apps read them as sent (CherryPy answers a
    POST without Content-Length 411, and tells a missing Content-Type from one)."""
    if headers.get("Content-Type") is None:
        environ.pop("CONTENT_TYPE", None)
    if not environ.get("CONTENT_LENGTH"):
        environ.pop("CONTENT_LENGTH", None)


def header_lines_lost(headers: Any) -> bool:
    """True when ``http.client``'s parse of a request's header section (which
    http.server and gevent use) stopped at a line that is not a field, such as
    one without a colon: it drops that line and every one after it, where the
    request should get a 400 (RFC 9112 section 5)."""
    from email.errors import MissingHeaderBodySeparatorDefect

    return any(isinstance(defect, MissingHeaderBodySeparatorDefect) for defect in getattr(headers, "defects", ()))


#: The reason a request with a header line that is not a field gets, in cheroot's words.
BAD_HEADER_LINE = "Illegal header line."


@dataclass(frozen=True)
class Option:
    """A server-specific setting given with ``-o KEY=VALUE``."""

    convert: Callable[[Any], Any]
    help: str


class Adapter(ABC):
    """One server. Subclasses set the class attributes and implement serve and shutdown.

    An instance serves once: anyserve makes it with the checked Config and the
    parsed ``-o`` options, then calls :meth:`serve` (or :meth:`embed`)."""

    #: The name users pass to ``-s``.
    name: ClassVar[str]
    #: Distributions the server needs; the first one gives the version shown.
    requires: ClassVar[tuple[str, ...]] = ()
    #: The top-level module that must be importable for the server to be installed.
    module: ClassVar[str]
    #: The extra that installs it: ``pip install anyserve-wsgi[EXTRA]``.
    extra: ClassVar[str | None] = None
    capabilities: ClassVar[Capabilities]
    deviations: ClassVar[Deviations] = Deviations()
    #: Settings accepted with ``-o KEY=VALUE``.
    options: ClassVar[Mapping[str, Option]] = {}
    #: A note shown by ``anyserve list`` (e.g. "development server").
    note: ClassVar[str] = ""
    #: What closes a connection after --timeout-keep-alive on this server, for
    #: ``anyserve list``: the server's own setting, or anyserve.
    keep_alive_timeout_by: ClassVar[str] = ""
    #: True for the adapter whose server is run by the CherryPy engine itself (-s cherrypy).
    runs_cherrypy_engine: ClassVar[bool] = False
    #: The server's own loggers. Where anyserve owns the process they write where
    #: anyserve's messages go, in its format, their INFO lines only with
    #: ``--log-level debug`` (anyserve.logs.route_server_loggers). A server writes
    #: no line per request of its own: anyserve's ``--access-log`` is the one
    #: access log, the same on every server, so each adapter turns its server's off.
    loggers: ClassVar[tuple[str, ...]] = ()
    #: Whether the app may send ``Connection: close`` (anyserve's 413 does, as it
    #: leaves the body unread); False for a server that refuses hop-by-hop headers
    #: from the app and closes every connection after its response itself.
    app_may_close: ClassVar[bool] = True

    def __init__(self, config: Config, settings: Mapping[str, Any] | None = None) -> None:
        self.config = config
        #: The ``-o`` options, parsed by :meth:`parse_options`.
        self.settings: Mapping[str, Any] = settings or {}
        self._when_serving: Callable[[], object] | None = None

    # -- what it is, known without importing the server -------------------------

    @classmethod
    def is_installed(cls) -> bool:
        return importlib.util.find_spec(cls.module) is not None

    @classmethod
    def version(cls) -> str | None:
        if not cls.requires:
            return None
        try:
            return importlib.metadata.version(cls.requires[0])
        except importlib.metadata.PackageNotFoundError:
            return None

    @classmethod
    def described(cls) -> str:
        """The server's name and version, e.g. "cheroot 11.1.2"."""
        version = cls.version()
        return f"{cls.name} {version}" if version else cls.name

    @classmethod
    def install_hint(cls) -> str:
        return install_hint(cls.extra or cls.name)

    @classmethod
    def environ_flags(cls, config: Config) -> dict[str, Any]:
        """WSGI environ values anyserve sets on every request where the server's own
        would be wrong: ``wsgi.multiprocess`` when several processes serve the app
        (anyserve's supervisor forks workers the server knows nothing of)."""
        return {"wsgi.multiprocess": True} if config.workers > 1 else {}

    # -- before anything starts ----------------------------------------------------

    @classmethod
    def refuse(cls, config: Config) -> None:
        """Raise :class:`~anyserve.errors.Unsupported` (or ServerError) for an option
        this server cannot honour."""
        caps = cls.capabilities
        if config.threads is not None and not caps.threads:
            given = config.given_as("threads")
            if given != "--threads":  # the app's own config: the servers that honour it are named
                raise Unsupported(f"{cls.name} cannot honour {given} ({caps.concurrency}); remove the key", "threads")
            raise ServerError(f"{cls.name} cannot honour --threads: {caps.concurrency}; drop --threads")
        try:
            cls._refuse_kinds(config.listen, config.tls_mixed)
        except Unsupported as exc:
            given = config.given_as("bind")
            if given.startswith("-"):
                raise
            raise Unsupported(f"{exc} ({given})", exc.capability) from None
        if config.tls and not caps.tls:
            given = config.given_as("certfile") if config.certfile else "--ssl-adhoc"
            raise Unsupported(f"{cls.name} cannot serve TLS" + ("" if given.startswith("-") else f" ({given})"), "tls")

    @classmethod
    def refuse_listeners(cls, config: Config, listeners: list[Listener]) -> None:
        """The same, once the listeners are bound: an inherited descriptor may turn
        out to be a unix socket, ``--tls-bind fd://NAME`` to mix HTTP and HTTPS."""
        kinds = [listener.spec if not listener.is_unix else "unix:" for listener in listeners]
        cls._refuse_kinds(kinds, len({listener.tls is None for listener in listeners}) > 1)

    @classmethod
    def _refuse_kinds(cls, specs: list[str], tls_mixed: bool) -> None:
        caps = cls.capabilities
        if not caps.unix and any(spec.startswith("unix:") for spec in specs):
            raise Unsupported(f"{cls.name} cannot serve on a unix socket", "unix")
        if not caps.fd and any(spec.startswith(("fd://", "systemd:")) for spec in specs):
            raise Unsupported(f"{cls.name} cannot serve on an inherited descriptor", "fd")
        if tls_mixed and not caps.tls_mixed:
            raise Unsupported(
                f"{cls.name} serves TLS on all its listeners or on none, so it cannot mix HTTP and HTTPS "
                "listeners (--tls-bind); run one anyserve per scheme",
                "tls_mixed",
            )

    @classmethod
    def parse_options(cls, raw: Mapping[str, Any]) -> dict[str, Any]:
        """The ``-o`` options, each checked and converted."""
        settings: dict[str, Any] = {}
        for key, value in raw.items():
            name = key.replace("-", "_")
            spec = cls.options.get(name)
            if spec is None:
                known = ", ".join(sorted(cls.options)) or "none"
                raise ServerError(f"unknown option -o {key} for server {cls.name}; it accepts: {known}")
            try:
                settings[name] = spec.convert(value)
            except ValueError as exc:
                raise ServerError(f"invalid value for -o {key}={value} (server {cls.name}): {exc}") from None
        return settings

    @classmethod
    def prepare_process(cls, config: Config, settings: Mapping[str, Any]) -> None:
        """Called first thing in a process that anyserve owns and serves from,
        before the app is imported (gevent's monkey-patching goes here); not
        called when serving from a background thread of someone else's program."""
        return None

    # -- serving -----------------------------------------------------------------

    @abstractmethod
    def serve(self, app: WSGIApp, listeners: list[Listener], lifecycle: Lifecycle) -> None:
        """Serve *app* on the bound *listeners* until :meth:`shutdown`; block until then.

        Calls ``lifecycle.started()`` once ready to take requests, drives ``tick``
        and calls ``lifecycle.stopping()`` when shutdown begins."""

    def embed(self, app: WSGIApp, listeners: list[Listener], lifecycle: Lifecycle) -> Any:
        """Serve from the loop the caller runs (capability ``embed``) and return at once.

        Returns an object whose ``stop()`` begins the graceful stop and returns what
        that loop waits on (an asyncio future, a Deferred), or blocks the calling
        greenlet until done."""
        raise Unsupported(f"{self.name} cannot be embedded in a loop you run", "embed")

    @abstractmethod
    def shutdown(self) -> None:
        """Begin a graceful stop and return at once: stop accepting, let in-flight
        requests finish (up to the graceful timeout), then make :meth:`serve` return.
        Safe to call from any thread or a signal handler, and more than once."""

    def when_serving(self, hook: Callable[[], object]) -> None:
        """A server with worker processes of its own (capability ``workers``): have
        *hook* run once, in this process, when its workers serve; the adapter
        calls :meth:`workers_serve` from its master then. (Where this process serves,
        anyserve runs such a hook as the last ``started`` hook instead.)"""
        self._when_serving = hook

    def workers_serve(self) -> None:
        """Called by a server with workers of its own, in its master, once they
        serve: runs the :meth:`when_serving` hook, the first time only."""
        hook, self._when_serving = self._when_serving, None
        if hook is not None:
            hook()

    def reopen_logs(self) -> None:
        """On SIGUSR1, in anyserve's process: have the server's own worker processes
        reopen their log files too (anyserve's process reopens its own)."""
        return None

    def restart(self) -> bool:
        """On SIGHUP: begin replacing the server's worker processes gracefully and
        return at once; False when it has none that anyserve's signal reaches."""
        return False
