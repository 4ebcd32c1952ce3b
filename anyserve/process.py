"""Process control for the ``anyserve`` command: the working directory and the
environment variables set before anything loads, the daemon, the pid file, and
the user, group and umask taken on once the listeners are bound."""

from __future__ import annotations

import errno
import grp
import logging
import os
import pwd
import re
from dataclasses import dataclass

from .config import Config
from .errors import EXIT_FAILURE, AnyserveError, AppLoadError, ConfigError

log = logging.getLogger("anyserve")


# -- the working directory and the environment -------------------------------------------


def change_directory(path: str) -> str:
    """``--chdir DIR``: make DIR the working directory; return it, absolute."""
    try:
        os.chdir(path)
    except FileNotFoundError:
        raise ConfigError(f"--chdir: the directory {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"--chdir: cannot change to {path}: {exc.strerror}") from None
    return os.getcwd()


def set_environment(config: Config) -> None:
    """``--env-file`` then ``--env``, into ``os.environ`` before the app loads.

    A variable already set keeps its value against the file (as uvicorn's
    --env-file, python-dotenv's default); ``--env`` sets it whatever it was
    (as gunicorn's --env)."""
    if config.env_file is not None:
        for key, value in read_env_file(config.env_file).items():
            os.environ.setdefault(key, value)
    os.environ.update(config.env)


_ENV_LINE = re.compile(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.]*)\s*=\s*(.*?)\s*")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$"}


def read_env_file(path: str) -> dict[str, str]:
    """A dotenv file: ``KEY=VALUE`` lines (``export`` allowed), ``#`` comments,
    values in single quotes (as written) or double quotes (``\\n``-style escapes).
    No ``${VAR}`` expansion and no value spanning lines."""
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except FileNotFoundError:
        raise ConfigError(f"--env-file: the file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--env-file: cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    result = {}
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _ENV_LINE.fullmatch(line)
        value = _env_value(match.group(2)) if match else None
        if match is None or value is None:
            raise ConfigError(f"--env-file {path}, line {number}: expected KEY=VALUE, got {line.strip()!r}")
        result[match.group(1)] = value
    return result


def _env_value(text: str) -> str | None:
    """The value of one line: quoted, or bare up to a `` #`` comment; None if malformed."""
    if not text or text[0] not in "'\"":
        return re.split(r"\s+#", text, maxsplit=1)[0].rstrip()
    quote, index = text[0], 1
    chars: list[str] = []
    while index < len(text):
        char = text[index]
        if char == quote:
            rest = text[index + 1 :].strip()
            return "".join(chars) if not rest or rest.startswith("#") else None
        if char == "\\" and quote == '"' and index + 1 < len(text):
            index += 1
            char = _ESCAPES.get(text[index], "\\" + text[index])
        chars.append(char)
        index += 1
    return None  # no closing quote


# -- the pid file ------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


class PidFile:
    """``--pid FILE``: refused when it names a live process, replaced when stale,
    written once bound, removed on exit by the process that wrote it."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self.pid: int | None = None

    def check(self) -> None:
        """Refuse a pid file that names another live process."""
        try:
            with open(self.path) as fh:
                text = fh.read().strip()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise ConfigError(f"--pid: cannot read {self.path}: {exc.strerror}") from None
        if text.isdigit() and int(text) != os.getpid() and _alive(int(text)):
            raise ConfigError(
                f"--pid: {self.path} names process {text}, which is running; stop it first, "
                "or remove the file if that process is not anyserve"
            )

    def write(self) -> None:
        self.check()
        temporary = f"{self.path}.{os.getpid()}.tmp"
        try:
            with open(temporary, "w") as fh:
                fh.write(f"{os.getpid()}\n")
            os.replace(temporary, self.path)  # a reader never sees a half-written file
        except OSError as exc:
            raise ConfigError(f"--pid: cannot write {self.path}: {exc.strerror}") from None
        self.pid = os.getpid()

    def remove(self) -> None:
        """Remove the file, only from the process that wrote it (not a forked worker)
        and only while it still names this process."""
        if self.pid is None or self.pid != os.getpid():
            return
        try:
            with open(self.path) as fh:
                if fh.read().strip() != str(self.pid):
                    return
            os.unlink(self.path)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                log.warning("could not remove the pid file %s: %s", self.path, exc.strerror)


# -- user, group, umask ------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """The user and group to serve as, resolved before anything starts."""

    uid: int
    gid: int
    name: str | None


def resolve_identity(config: Config) -> Identity | None:
    """What --user/--group name, checked now; None when neither was given.

    Also enforces --require-non-root."""
    if config.user is None and config.group is None:
        if config.require_non_root and os.geteuid() == 0:
            raise ConfigError(
                "refusing to serve as root (--require-non-root): add --user USER to drop the privileges "
                "once the listeners are bound, or start anyserve as another user"
            )
        return None
    name: str | None = None
    uid, gid = os.geteuid(), os.getegid()
    if config.user is not None:
        try:
            entry = pwd.getpwuid(int(config.user)) if config.user.isdigit() else pwd.getpwnam(config.user)
        except KeyError:
            if not config.user.isdigit():
                raise ConfigError(f"--user: there is no user {config.user!r} on this system") from None
            uid, name = int(config.user), None
        else:
            uid, gid, name = entry.pw_uid, entry.pw_gid, entry.pw_name
    if config.group is not None:
        try:
            entry = grp.getgrgid(int(config.group)) if config.group.isdigit() else grp.getgrnam(config.group)
            gid = entry.gr_gid
        except KeyError:
            if not config.group.isdigit():
                raise ConfigError(f"--group: there is no group {config.group!r} on this system") from None
            gid = int(config.group)
    if os.geteuid() != 0 and (uid != os.geteuid() or gid != os.getegid()):
        which = "--user" if uid != os.geteuid() else "--group"
        raise ConfigError(
            f"{which} needs root to change to another user or group (running as uid {os.geteuid()}); "
            f"start anyserve as root, or drop {which}"
        )
    if config.require_non_root and uid == 0:
        raise ConfigError("refusing to serve as root (--require-non-root): --user names root")
    return Identity(uid, gid, name)


def give_files(identity: Identity, paths: list[str]) -> None:
    """Give *paths* (the log files) to *identity*, so that it can still write them."""
    if os.geteuid() != 0:
        return
    for path in paths:
        try:
            os.chown(path, identity.uid, identity.gid)
        except OSError:
            pass  # not ours to change (e.g. /dev/stdout)


def drop_privileges(identity: Identity) -> None:
    """Become *identity*, for good (all threads, real and effective ids)."""
    if os.geteuid() != 0:
        return  # already done (gunicorn's workers), or nothing to change (resolve_identity checked)
    if identity.name is not None:
        os.initgroups(identity.name, identity.gid)
    else:
        os.setgroups([identity.gid])
    os.setgid(identity.gid)
    os.setuid(identity.uid)
    log.info("Running as uid %d, gid %d", identity.uid, identity.gid)


# -- the daemon --------------------------------------------------------------------------


class Daemon:
    """In the detached process: tells the launching command how the start went."""

    def __init__(self, write_fd: int) -> None:
        self._fd: int | None = write_fd

    def ready(self) -> None:
        self._send(b"ok\n")

    def failed(self, exc: BaseException) -> None:
        code = exc.exit_code if isinstance(exc, AnyserveError) else EXIT_FAILURE
        message = str(exc) if isinstance(exc, AnyserveError) else f"{type(exc).__name__}: {exc}"
        details = (exc.details or "") if isinstance(exc, AppLoadError) else ""
        self._send(f"failed\n{code}\n{message}\n{details}".encode())

    def _send(self, data: bytes) -> None:
        if self._fd is None:
            return
        try:
            os.write(self._fd, data)
        finally:
            os.close(self._fd)
            self._fd = None


@dataclass(frozen=True)
class Verdict:
    """What the launching command learnt from the daemon."""

    code: int
    message: str = ""
    details: str = ""


def daemonize(error_log: str) -> Daemon | Verdict:
    """Detach: fork, start a session, fork again. The launching process waits
    for the detached one to say it is ready (app loaded, listeners bound) or why
    it failed, and gets a :class:`Verdict`; the detached one gets a
    :class:`Daemon`, with its standard streams on *error_log* (or /dev/null)."""
    read_fd, write_fd = os.pipe()
    first = os.fork()
    if first > 0:
        os.close(write_fd)
        os.waitpid(first, 0)  # the intermediate process exits at once
        return _read_verdict(read_fd)
    try:
        os.close(read_fd)
        os.setsid()  # no controlling terminal: a closed terminal sends no HUP
        if os.fork() > 0:
            os._exit(0)
        null = os.open(os.devnull, os.O_RDWR)
        out = null
        if error_log != "-":
            try:
                out = os.open(error_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            except OSError:
                out = null  # configure_logging reports it through the pipe
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        for fd in {null, out}:
            os.close(fd)
    except BaseException:
        os._exit(EXIT_FAILURE)
    return Daemon(write_fd)


def _read_verdict(read_fd: int) -> Verdict:
    chunks = []
    while chunk := os.read(read_fd, 65536):
        chunks.append(chunk)
    os.close(read_fd)
    text = b"".join(chunks).decode(errors="replace")
    if text.startswith("ok\n"):
        return Verdict(0)
    if text.startswith("failed\n"):
        _, code, message, details = text.split("\n", 3)
        return Verdict(int(code), message, details)
    return Verdict(EXIT_FAILURE, "the daemon exited before it was ready; see the error log (--error-log)")
