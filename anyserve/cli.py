"""The ``anyserve`` command: argv -> Config -> serve, list or check.

``main(argv)`` returns an exit code, so each error case is one line to test.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from . import __version__
from .config import Config, Setting, env_var, settings
from .errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, AnyserveError, Reported, report

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
  anyserve check [OPTIONS] APP     load APP and check the options; start nothing
  anyserve bench [APP] -s S1,S2    servers side by side on one app (see anyserve bench --help)

APP is module:attr, module:factory(args) or path/file.py[:attr]; with no
attribute, 'application' then 'app' is used.
"""

EPILOG = """\
Options can also come from a TOML file (-c FILE, or [tool.anyserve] in
./pyproject.toml) and from ANYSERVE_<OPTION> environment variables (e.g.
ANYSERVE_PORT=9000); the command line wins over both.

examples:
  anyserve -s cheroot -p 8000 myapp:application
  anyserve -s waitress -t 8 -b 0.0.0.0:8080 -b unix:/run/app.sock myapp:app
  anyserve --reload -s werkzeug 'myapp:create_app(debug=True)'
"""


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, no usage dump
        raise _UsageError(f"{message} (see anyserve --help)")


class _UsageError(Exception):
    pass


def build_parser(command: str = "serve") -> argparse.ArgumentParser:
    """The parser for ``serve`` and ``check``, derived from the Config declarations."""
    parser = _ArgumentParser(
        prog="anyserve" if command == "serve" else f"anyserve {command}",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
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


def parse(argv: Sequence[str], command: str = "serve") -> tuple[Config, str | None]:
    """Parse *argv* into a validated Config; the second value is the -c file."""
    namespace = vars(build_parser(command).parse_args(list(argv)))
    config_file = namespace.pop("config", None)
    return Config.load(cli=namespace, file=config_file), config_file


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
        if command == "check":
            return cmd_check(config)
        return cmd_serve(config, args)
    except _UsageError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except Reported as exc:
        return exc.exit_code
    except AnyserveError as exc:
        return report(exc)
    except KeyboardInterrupt:
        return EXIT_FAILURE


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
