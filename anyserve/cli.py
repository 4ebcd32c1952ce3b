"""The ``anyserve`` command: argv -> Config -> serve, list or check.

``main(argv)`` returns an exit code, so each error case is one line to test.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import os
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from . import __version__
from .config import COMMAND_LINE, Alias, Config, Setting, env_var, settings, unknown_env_vars
from .errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, AnyserveError, AppLoadError, Reported, report

COMMANDS = ("serve", "list", "check", "bench")
GROUPS = {
    "application": "application",
    "server": "server",
    "listeners": "listeners",
    "tls": "TLS (HTTPS)",
    "development": "development",
    "lifecycle": "lifecycle hooks",
    "cherrypy": "CherryPy",
    "logging": "logging",
    "proxy": "behind a proxy",
    "process": "process control",
}

DESCRIPTION = """\
Serve one WSGI application on any of many Python servers.

commands:
  anyserve [serve] [OPTIONS] APP   serve APP (the default command)
  anyserve list                    known servers: installed?, version, capabilities
  anyserve check [OPTIONS] APP     every check serve makes, then what it would serve; start nothing
  anyserve bench [APP] -s S1,S2    servers side by side on one app (see anyserve bench --help)

APP is module:attr, module:factory(args) or path/file.py[:attr]; with no
attribute, 'application' then 'app' is used.
"""

EPILOG = """\
Options can also come from ANYSERVE_<OPTION> environment variables (e.g.
ANYSERVE_PORT=9000) and from a TOML file (-c FILE, or [tool.anyserve] in
./pyproject.toml). The command line wins, then the environment, then the file;
then $PORT (binds 0.0.0.0:$PORT) and $WEB_CONCURRENCY (--workers), as gunicorn's.
anyserve check prints each option that is not a default, and where it came from.

examples:
  anyserve -s cheroot -p 8000 myapp:application
  anyserve -s waitress -t 8 -b 0.0.0.0:8080 -b unix:/run/app.sock myapp:app
  anyserve --reload -s werkzeug 'myapp:create_app(debug=True)'
"""


_SERVER_SETTING = "each server's own setting (see anyserve list):"
#: Flags of gunicorn's, uvicorn's and waitress-serve's commands that anyserve
#: spells otherwise, or has none for: what to write instead.
OTHER_SPELLINGS = {
    "--timeout": "anyserve has no worker timeout of its own (gunicorn's): -o timeout=N under -s gunicorn, "
    "-o harakiri=N under -s uwsgi; --graceful-timeout bounds the shutdown (and -t is --threads here)",
    "-k": "anyserve spells it -s/--server NAME (e.g. -s gevent; see anyserve list); "
    "under -s gunicorn, -o worker_class=NAME",
    "--max-requests": f"a worker's request limit is {_SERVER_SETTING} -o max_requests=N under gunicorn and uwsgi",
    "--max-requests-jitter": f"{_SERVER_SETTING} -o max_requests_jitter=N under -s gunicorn",
    "--worker-connections": f"{_SERVER_SETTING} -o worker_connections=N under gunicorn, "
    "-o pool_size=N under gevent and eventlet",
    "--limit-concurrency": "--workers and --threads bound it (-o pool_size=N under gevent and eventlet)",
    "--limit-request-line": f"{_SERVER_SETTING} -o limit_request_line=N under -s gunicorn",
    "--limit-request-fields": f"{_SERVER_SETTING} -o limit_request_fields=N under -s gunicorn",
    "--name": f"{_SERVER_SETTING} -o proc_name=NAME under -s gunicorn",
    "--check-config": "anyserve check [OPTIONS] APP runs every check serve makes and starts nothing",
    "--reload-extra-file": "--reload-dir DIR also watches the files under DIR",
    "--proxy-allow-from": "anyserve spells it --forwarded-allow-ips ADDRS",
    "--ssl": "HTTPS is --certfile FILE [--keyfile FILE], or --ssl-adhoc for a self-signed certificate (development)",
    "--ssl-cert-reqs": "anyserve spells it --cert-reqs none|optional|required",
    "--ssl-version": "anyserve serves TLS 1.2 and newer; there is no version to choose",
    "--ssl-ciphers": "anyserve uses the ssl module's default ciphers, with TLS 1.2 and newer",
    "--interface": "anyserve serves WSGI applications: APP is a WSGI callable",
    "--lifespan": "anyserve serves WSGI: --on-start/--on-stop MODULE:FUNC run in each serving process",
    "--loop": "anyserve chooses the server with -s/--server NAME (see anyserve list)",
    "--listen": "anyserve spells it -b/--bind HOST:PORT (repeatable)",
    "--call": "anyserve spells it --factory",
    "--url-prefix": "anyserve spells it --root-path PREFIX",
    "--unix-socket": "anyserve spells it --uds PATH (or -b unix:PATH)",
    "--unix-socket-perms": "anyserve spells it --uds-mode MODE",
}
OTHER_SPELLINGS.update(
    {
        flag: OTHER_SPELLINGS[same]
        for flag, same in {
            "--worker-class": "-k",
            "--limit-max-requests": "--max-requests",
            "--print-config": "--check-config",
            "--ciphers": "--ssl-ciphers",
            "--http": "--loop",
        }.items()
    }
)


class _ArgumentParser(argparse.ArgumentParser):
    """One line per mistake; no abbreviated flags (--uds is not --uds-mode); for a
    flag it does not know, the flag meant or anyserve's spelling of another command's."""

    def __init__(
        self, *args: Any, hints: Mapping[str, str] | None = None, commands: Sequence[str] = (), **kwargs: Any
    ) -> None:
        super().__init__(*args, allow_abbrev=False, **kwargs)
        self.hints = hints or {}
        self.commands = commands

    def error(self, message: str) -> Any:  # one line, no usage dump
        raise _UsageError(f"{message} (see {self.prog} --help)")

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:  # type: ignore[override]
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            self.error(self._unrecognized(extras, parsed))
        return parsed

    def flags_given(self, args: Sequence[str]) -> dict[str, str]:
        """The flag each option was last given with (``-p``, ``--uds``), by option name."""
        given = {}
        for arg in args:
            if arg == "--":
                break
            name = arg.split("=", 1)[0]
            action = self._option_string_actions.get(name) or self._option_string_actions.get(arg[:2])
            if arg.startswith("-") and action is not None:
                given[action.dest] = name if name in self._option_string_actions else arg[:2]
        return given

    def _unrecognized(self, extras: list[str], parsed: argparse.Namespace) -> str:
        flags = [arg.split("=", 1)[0] for arg in extras if arg.startswith("-") and arg != "-"]
        if flags:
            hint = self.hints.get(flags[0])
            if hint is None:
                known = [flag for action in self._actions for flag in action.option_strings if len(flag) > 2]
                close = difflib.get_close_matches(flags[0], known, n=1)
                hint = f"did you mean {close[0]}?" if close else None
            if hint is not None:
                return f"unrecognized argument {flags[0]}: {hint}"
        else:
            command = _close_command(getattr(parsed, "app", None), self.commands)
            if command == parsed.app:
                return f"{command!r} is a command and comes first: anyserve {command} [OPTIONS] APP"
            if command is not None:
                return f"unknown command {parsed.app!r}: did you mean 'anyserve {command}'?"
        return f"unrecognized arguments: {' '.join(extras)}"


def _close_command(word: Any, commands: Sequence[str]) -> str | None:
    if not isinstance(word, str) or not word.isidentifier():
        return None
    close = difflib.get_close_matches(word, commands, n=1)
    return close[0] if close else None


class _AliasAction(argparse.Action):
    """An :class:`~anyserve.config.Alias`: sets (or adds to) its option's value."""

    def __init__(self, option_strings: list[str], dest: str, alias: Alias, append: bool, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=None if alias.metavar else 0, metavar=alias.metavar, **kwargs)
        self.alias = alias
        self.append = append

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: str | None = None) -> None:
        value = self.alias.template.format(values) if self.alias.metavar else self.alias.const
        if self.append:
            value = [*(getattr(namespace, self.dest, None) or []), value]
        setattr(namespace, self.dest, value)


class _UsageError(Exception):
    pass


def build_parser(command: str = "serve") -> _ArgumentParser:
    """The parser for ``serve`` and ``check``, derived from the Config declarations."""
    parser = _ArgumentParser(
        prog="anyserve" if command == "serve" else f"anyserve {command}",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
        hints=OTHER_SPELLINGS,
        commands=COMMANDS if command == "serve" else (),
    )
    parser.add_argument("-V", "--version", action="version", version=f"anyserve {__version__}")
    parser.add_argument("-c", "--config", metavar="FILE", help="read options from this TOML file")
    groups = {key: parser.add_argument_group(title) for key, title in GROUPS.items()}
    for setting in settings():
        _add_setting(parser, groups[setting.group], setting)
    return parser


def _add_setting(parser: argparse.ArgumentParser, group: Any, setting: Setting) -> None:
    help_text = f"{setting.help} [{env_var(setting.name)}]"
    if setting.name == "app":
        parser.add_argument("app", nargs="?", metavar="APP", help=setting.help)
    elif setting.kind == "flag":
        group.add_argument(*setting.flags, dest=setting.name, action=argparse.BooleanOptionalAction, help=help_text)
    elif setting.kind in ("append", "mapping"):
        group.add_argument(*setting.flags, dest=setting.name, action="append", metavar=setting.metavar, help=help_text)
    else:
        group.add_argument(*setting.flags, dest=setting.name, metavar=setting.metavar, help=help_text)
    for alias in setting.aliases:
        append = setting.kind == "append"
        group.add_argument(
            alias.flag, dest=setting.name, action=_AliasAction, alias=alias, append=append, help=alias.help
        )


#: An APP string, where a PATH is expected.
_APP_LIKE = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*(\(.*\))?")


def parse(argv: Sequence[str], command: str = "serve") -> tuple[Config, str | None]:
    """Parse *argv* into a validated Config; the second value is the -c file.

    A --chdir on the command line applies first, so that the config file and
    ./pyproject.toml are found there (as gunicorn's); then one from a file or a
    variable, then --env-file and --env: all before the app loads."""
    parser = build_parser(command)
    namespace = vars(parser.parse_args(list(argv)))
    config_file = namespace.pop("config", None)
    if "chdir" in namespace:
        namespace["chdir"] = _enter(namespace["chdir"])
    flags = parser.flags_given(argv)
    config = Config.load(cli=namespace, file=config_file, process_defaults=True, cli_flags=flags)
    if config.chdir is not None and config.source("chdir") != COMMAND_LINE:
        _enter(config.chdir)
    access_log = namespace.get("access_log")
    if isinstance(access_log, str) and _APP_LIKE.fullmatch(access_log):
        raise _UsageError(
            f"--access-log takes a PATH (or - for stdout), and {access_log!r} looks like an APP "
            f"(uvicorn's --access-log is a switch, anyserve's takes a value): write --access-log - {access_log}"
        )
    from .process import set_environment

    set_environment(config)
    return config, config_file


def _enter(directory: str) -> str:
    from .process import change_directory
    from .reloader import is_child

    # A --reload child starts in the directory its parent changed to, which a
    # relative DIR would be taken from again.
    return os.getcwd() if is_child() else change_directory(directory)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; return its exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    command = "serve"
    if args and args[0] in COMMANDS:
        command = args.pop(0)
    try:
        if command == "list":
            return cmd_list(args)
        if command == "bench":
            return cmd_bench(args)
        config, _ = parse(args, command)
        try:
            if command == "check":
                return cmd_check(config)
            return cmd_serve(config, args)
        except AppLoadError as exc:
            raise _with_command_hint(exc, config.app) from None
    except _UsageError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except Reported as exc:
        return exc.exit_code
    except AnyserveError as exc:
        return report(exc)
    except KeyboardInterrupt:
        return EXIT_FAILURE


def _with_command_hint(exc: AppLoadError, app: Any) -> AppLoadError:
    """A module not found whose name is close to a command's (``anyserve chek``)."""
    command = _close_command(app, COMMANDS)
    if command is None or exc.details or not str(exc).startswith("could not import module"):
        return exc
    return AppLoadError(f"{exc}; or did you mean the command 'anyserve {command}'?")


def print_sources(config: Config) -> None:
    """For ``anyserve check``: the misspelled ANYSERVE_* variables (on stderr), then
    each option that is not at its default, with where it came from."""
    for text in unknown_env_vars():
        sys.stderr.write(f"anyserve: warning: {text}\n")
    for line in config.described_sources():
        print(f"option: {line}")


def log_sources(config: Config) -> None:
    """At start: the misspelled ANYSERVE_* variables as warnings and, at --log-level
    debug, where each option came from. A --reload child leaves that to its parent."""
    from .reloader import is_child

    if is_child():
        return
    log = logging.getLogger("anyserve")
    for text in unknown_env_vars():
        log.warning(text)
    for line in config.described_sources():
        log.debug("Option %s", line)


def _fail(message: str, code: int) -> int:
    sys.stderr.write(f"anyserve: error: {message}\n")
    return code


def cmd_serve(config: Config, argv: list[str]) -> int:
    from .process import PidFile, Verdict, daemonize, resolve_identity

    if config.app is None and not (config.mount or config.vhost):
        raise _UsageError("no APP given: name the application as module:attr, e.g. myapp:application")
    identity = resolve_identity(config)
    pid_file = PidFile(config.pid) if config.pid else None
    if pid_file is not None:
        pid_file.check()
    if not config.daemon:
        return _serve(config, argv, identity, pid_file, None)
    outcome = daemonize(config.error_log)
    if isinstance(outcome, Verdict):  # the launching process: how the daemon's start went
        if outcome.code:
            sys.stderr.write(outcome.details)
            return _fail(outcome.message, outcome.code)
        return EXIT_OK
    try:
        return _serve(config, argv, identity, pid_file, outcome)
    except BaseException as exc:
        outcome.failed(exc)  # nothing happens once ready() was sent
        raise


def _serve(config: Config, argv: list[str], identity: Any, pid_file: Any, daemon: Any) -> int:
    from .entry import leave_cut_requests, serve_in_process
    from .logs import configure_logging
    from .process import drop_privileges, give_files
    from .server import Server

    configure_logging(
        config.log_level, error_log=config.error_log, access_log=config.access_log, log_config=config.log_config
    )
    log_sources(config)
    if config.reload:
        from .reloader import run_with_reloader

        return run_with_reloader(config, argv)

    def bound() -> None:  # in this process, once the listeners are bound
        if pid_file is not None:
            pid_file.write()
        if config.umask is not None:
            os.umask(config.umask)
        if identity is not None:
            give_files(identity, [path for path in (config.error_log, config.access_log) if path and path != "-"])
        if daemon is not None:
            daemon.ready()

    def serving(server: Server) -> None:  # in each process that serves
        if identity is not None:
            # Once the server is set up (in each worker: gunicorn's, the
            # supervisor's; a master stays as it started, as gunicorn's own
            # --user does), so its modules are imported while still readable.
            server.adapter_class.version()  # the start-up line reads package metadata
            server.lifecycle.subscribe("started", lambda: drop_privileges(identity))

    try:
        cut = serve_in_process(config, bound=bound, serving=serving)
    finally:
        if pid_file is not None:
            pid_file.remove()
    if cut:
        leave_cut_requests(EXIT_OK)
    return EXIT_OK


def cmd_check(config: Config) -> int:
    """Every check ``serve`` makes, short of serving; then what would be served."""
    from .check import check

    if config.app is None and not (config.mount or config.vhost):
        raise _UsageError("no APP given: name the application as module:attr, e.g. myapp:application")
    print("\n".join(check(config)))
    print_sources(config)
    print("ok: nothing was started")
    return EXIT_OK


def cmd_bench(argv: list[str]) -> int:
    from .bench.command import DESCRIPTION, EPILOG, add_arguments, run_bench

    parser = _ArgumentParser(
        prog="anyserve bench",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    return run_bench(parser.parse_args(argv))


def cmd_list(argv: list[str]) -> int:
    from .registry import adapters

    if argv and argv[0] in ("-h", "--help"):
        print("usage: anyserve list\n\nKnown servers: installed?, version, how requests run, capabilities, -o options.")
        return EXIT_OK
    if argv:
        raise _UsageError(f"anyserve list takes no arguments, got {' '.join(argv)}")
    known = adapters()
    versions = {
        name: (cls.version() or "installed") if cls.is_installed() else "not installed" for name, cls in known.items()
    }
    name_width = max(len("server"), *map(len, known))
    version_width = max(len("version"), *map(len, versions.values()))
    indent = " " * (name_width + 2)
    print(f"{'server':<{name_width}}  {'version':<{version_width}}  capabilities")
    for name, cls in known.items():
        print(f"{name:<{name_width}}  {versions[name]:<{version_width}}  {', '.join(cls.capabilities.flags())}")
        print(f"{indent}concurrency: {cls.capabilities.concurrency}")
        if cls.note:
            print(f"{indent}note: {cls.note}")
        if cls.deviations.names():
            print(f"{indent}deviations: {', '.join(cls.deviations.names())}")
        if cls.keep_alive_timeout_by:
            print(f"{indent}--timeout-keep-alive: {cls.keep_alive_timeout_by}")
        if cls.options:
            print(f"{indent}-o options: {', '.join(cls.options)}")
        if not cls.is_installed():
            print(f"{indent}install: {cls.install_hint()}")
    return EXIT_OK


def console_script() -> None:
    """Entry point of the ``anyserve`` console script."""
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:  # `anyserve list | head`: the reader left, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = EXIT_OK
    sys.exit(code)
