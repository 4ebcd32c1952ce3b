"""Every example of the README, run as written: each ``anyserve`` command line of
its code blocks and each TOML example, with only the ports and the paths under
/run, /tmp and /var/log filled in (so that tests can run side by side), and an
app module standing for ``myapp``/``mod``.

A serving example must start, answer a request on each listener and stop with
exit 0 on TERM; an example shown with its error (``$ anyserve ...`` then the
line) must print that line; a ``bench`` example runs with short measurements.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import ssl
import subprocess
import time
from dataclasses import dataclass, fields
from pathlib import Path

import pytest

from anyserve.adapters.base import Capabilities, Deviations
from anyserve.cli import build_parser
from anyserve.registry import adapters
from tests.harness import ANYSERVE, REPO_ROOT, Running, fetch, free_port, https_fetch
from tests.pki import make_pki

README = REPO_ROOT / "README.md"

MYAPP = '''\
"""The app the README's examples call myapp."""
import cherrypy


def application(environ, start_response):
    body = f"myapp {environ.get('SCRIPT_NAME', '')}{environ.get('PATH_INFO', '')}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


app = wsgi = application


def create_app(*args, **kwargs):
    return application


class Root:
    @cherrypy.expose
    def index(self):
        return "a CherryPy root object"


root = Root()
'''

MOD = """\
from myapp import application as site, application as app0, application as app1
from myapp import application as app2, application as default
"""

CHERRYPY_CONF = """\
[global]
tools.encode.on = True
"""


@dataclass(frozen=True)
class Example:
    line: int  # where it starts in the README
    text: str  # continuation lines joined, the trailing comment dropped
    expected: str | None = None  # the output line shown under a "$ " example
    kind: str = "command"  # or "toml"

    @property
    def id(self) -> str:
        return f"README.md:{self.line}"


def code_blocks() -> list[tuple[int, str, list[str]]]:
    """(first line number, fence language or "", lines) of each code block: fenced or indented by 4."""
    blocks: list[tuple[int, str, list[str]]] = []
    lines = README.read_text().splitlines()
    number = 0
    while number < len(lines):
        line = lines[number]
        if line.startswith("```"):
            start, language, body = number + 2, line[3:].strip(), []
            number += 1
            while not lines[number].startswith("```"):
                body.append(lines[number])
                number += 1
            blocks.append((start, language, body))
        elif line.startswith("    ") and (number == 0 or not lines[number - 1].strip()):
            start, body = number + 1, []
            while number < len(lines) and (lines[number].startswith("    ") or not lines[number].strip()):
                body.append(lines[number][4:])
                number += 1
            blocks.append((start, "", body))
            continue
        number += 1
    return blocks


#: A command line: optional VAR=value assignments, then the command.
COMMAND = re.compile(r"^(?:\$ )?(?:[A-Z_]+=\S+ )*anyserve(?: |$)")


def examples() -> list[Example]:
    found = []
    for start, language, body in code_blocks():
        if language == "toml":
            found.append(Example(start, "\n".join(body), kind="toml"))
            continue
        if language not in ("", "sh", "shell", "console"):
            continue
        index = 0
        while index < len(body):
            line = body[index]
            number = start + index
            index += 1
            # The usage synopsis (a command, then its description in a column) is no example.
            if not COMMAND.match(line) or re.search(r"\S {2,}[a-z]", _drop_comment(line)):
                continue
            while line.endswith("\\"):
                line = line[:-1] + " " + body[index].strip()
                index += 1
            expected = None
            if line.startswith("$ "):  # the output follows, up to a blank line or the next command
                output = []
                while index < len(body) and body[index].strip() and not body[index].startswith("$ "):
                    output.append(body[index].strip())
                    index += 1
                line, expected = line[2:], "\n".join(output)
            found.append(Example(number, _drop_comment(line), expected))
    return found


def _drop_comment(line: str) -> str:
    return re.sub(r"\s+#\s.*$", "", line).strip()


class Site:
    """A folder with the README's app modules, certificates and config files, and the
    substitutions that make an example runnable here."""

    def __init__(self, path: Path) -> None:
        self.path = path
        (path / "myapp.py").write_text(MYAPP)
        (path / "mod.py").write_text(MOD)
        (path / "app.conf").write_text(CHERRYPY_CONF)
        (path / "pki").mkdir()
        pki = make_pki(path / "pki")
        (path / "site.pem").write_bytes(pki.combined.read_bytes())  # the key follows, as the README allows
        (path / "site.key").write_bytes(pki.key.read_bytes())
        self.ports: dict[str, str] = {}

    def fill_in(self, text: str) -> str:
        """The example with a free port for each port it names and its system paths under the site."""

        def port(match: re.Match[str]) -> str:
            return self.ports.setdefault(match.group(0), str(free_port()))

        text = re.sub(r"(?<=:)\d{2,5}\b|(?<=-p )\d+\b|(?<=--port )\d+\b", port, text)
        text = re.sub(r"(?<![\w.])/(run|tmp|var/log)/", lambda m: f"{self.path}/{m.group(1)}/", text)
        for directory in re.findall(rf"{re.escape(str(self.path))}/\S+(?=/[^/\s,\"']+)", text):
            Path(directory).mkdir(parents=True, exist_ok=True)
        return text


def split(text: str) -> tuple[dict[str, str], list[str]]:
    """The environment assignments and the argv of a command line."""
    words = shlex.split(text)
    env = {}
    while "=" in words[0] and words[0].split("=")[0].isupper():
        key, value = words.pop(0).split("=", 1)
        env[key] = value
    assert words[0] == "anyserve"
    return env, words[1:]


def names_an_address(env: dict[str, str], argv: list[str]) -> bool:
    flags = {"-b", "--bind", "-p", "--port", "-i", "--host", "--uds", "--fd"}
    return bool(flags & set(argv)) or any(key in env for key in ("ANYSERVE_BIND", "ANYSERVE_PORT"))


def get(url: str) -> int:
    """GET / on a listener the start-up lines named (http://, https://, unix:PATH); the status."""
    url = url.split(" ")[0]
    if url.startswith("https://"):
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        return https_fetch(url, "/", context, timeout=10)[0]
    for anywhere in ("0.0.0.0", "[::]"):
        url = url.replace(f"//{anywhere}:", "//127.0.0.1:")
    return fetch(url, "/", headers={"Host": "localhost"}, timeout=10).status


def serve_and_stop(site: Site, env: dict[str, str], argv: list[str], listeners: int) -> None:
    """Start the example, GET / on each of its listeners, TERM it: exit 0."""
    running = Running(None, argv, env=env, cwd=site.path)
    try:
        deadline = time.monotonic() + 30
        while True:
            urls = re.findall(r"Listening on (\S+(?: \(TLS\))?)", running.stderr_text())
            if len(urls) >= listeners:
                break
            assert running.proc.poll() is None, f"{running.name} exited:\n{running.stderr_text()}"
            assert time.monotonic() < deadline, f"{running.name} did not listen:\n{running.stderr_text()}"
            time.sleep(0.05)
        for url in urls:
            # 404: an example serving mounts alone answers / with it, as documented.
            assert get(url) in (200, 404), url
    finally:
        code = running.stop()
    assert code == 0, running.stderr_text()
    assert "Traceback" not in running.stderr_text()


def listener_count(env: dict[str, str], argv: list[str]) -> int:
    binds = [argv[i + 1] for i, word in enumerate(argv[:-1]) if word in ("-b", "--bind", "--tls-bind")]
    binds += env.get("ANYSERVE_BIND", "").split(",") if env.get("ANYSERVE_BIND") else []
    return max(1, len(set(binds)))


EXAMPLES = examples()
#: A bench example starts every server it names once per scenario: minutes for --all --scenario all.
LONG = [pytest.mark.long, pytest.mark.timeout(900)]


def test_the_readme_has_the_examples_this_file_runs() -> None:
    texts = " ".join(example.text for example in EXAMPLES)
    for part in ("-s waitress -p 8000", "--tls-bind", "ANYSERVE_SERVER=", "--daemon", "--vhost", "bench"):
        assert part in texts
    assert sum(example.kind == "toml" for example in EXAMPLES) >= 2


@pytest.mark.parametrize(
    "example",
    [pytest.param(ex, marks=LONG if " bench " in f" {ex.text} " else []) for ex in EXAMPLES],
    ids=[example.id for example in EXAMPLES],
)
def test_readme_example(example: Example, tmp_path: Path) -> None:
    site = Site(tmp_path)
    if example.kind == "toml":
        run_toml(site, example)
        return
    env, argv = split(site.fill_in(example.text))
    if example.expected is not None:
        run_shown(site, argv, example.expected)
        return
    if argv[0] == "bench":
        run_bench(site, argv)
        return
    if not names_an_address(env, argv):
        argv = ["-p", str(free_port()), *argv]
    if "--daemon" in argv:
        run_daemon(site, env, argv)
        return
    serve_and_stop(site, {**env}, argv, listener_count(env, argv))


def run_shown(site: Site, argv: list[str], shown: str) -> None:
    """An example shown with its output: the same output (an error on stderr, else stdout),
    "..." standing for anything, versions for any version, the ports and paths filled in."""
    result = subprocess.run([ANYSERVE, *argv], cwd=site.path, capture_output=True, text=True, timeout=60)
    succeeds = shown.splitlines()[-1].startswith("ok:")
    assert (result.returncode == 0) == succeeds, result.stdout + result.stderr
    version = re.compile(r"(?<=[a-z] )\d+\.\d+\.\d+(?:\.\w+)?")  # "cheroot 11.1.2"
    pattern = ".*".join(
        r"\S+".join(re.escape(piece) for piece in version.split(part)) for part in site.fill_in(shown).split("...")
    )
    output = (result.stdout if succeeds else result.stderr).strip()
    assert re.fullmatch(pattern, output, re.DOTALL), f"{output}\n--- does not match ---\n{shown}"


def run_toml(site: Site, example: Example) -> None:
    text = site.fill_in(example.text)
    if text.lstrip().startswith("[tool.anyserve]"):
        (site.path / "pyproject.toml").write_text(text)
        argv: list[str] = []
    else:
        (site.path / "anyserve.toml").write_text(text)
        argv = ["-c", "anyserve.toml"]
    binds = re.search(r"^bind = \[(.*)\]", text, re.MULTILINE)
    if not binds:
        argv += ["-p", str(free_port())]
    serve_and_stop(site, {}, argv, len(binds.group(1).split(",")) if binds else 1)


def run_bench(site: Site, argv: list[str]) -> None:
    """A bench example with short runs: every server and scenario it names, measured once."""
    short = {"--duration": "0.2s", "--warmup": "0s", "--repeat": "1"}
    for flag, value in short.items():
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    result = subprocess.run([ANYSERVE, *argv], cwd=site.path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    for flag in ("--json", "--html"):
        if flag in argv:
            assert (site.path / argv[argv.index(flag) + 1]).stat().st_size > 0


def run_daemon(site: Site, env: dict[str, str], argv: list[str]) -> None:
    """The daemon returns once bound; it serves; TERM to the pid in its pid file ends it."""
    as_root = os.geteuid() == 0
    if "--user" in argv and as_root:
        os.chmod(site.path, 0o755)
        for folder in (site.path / "run", site.path / "var"):
            for path in [folder, *folder.rglob("*")]:
                os.chmod(path, 0o777)
    result = subprocess.run([ANYSERVE, *argv], cwd=site.path, env={**os.environ, **env}, capture_output=True, text=True)
    if "--user" in argv and not as_root:
        assert result.returncode == 2 and "root" in result.stderr, result.stderr
        return
    assert result.returncode == 0, result.stderr
    pid = int(Path(argv[argv.index("--pid") + 1]).read_text())
    bind = argv[argv.index("-b") + 1]
    try:
        assert get(f"http://{bind}") == 200
    finally:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            os.kill(pid, signal.SIGKILL)
            raise AssertionError("the daemon did not stop on TERM")


def test_scripts_test_says_what_it_cannot_install(tmp_path: Path) -> None:
    """scripts/test (the README's second command) checks for the system packages the tests
    need and names the ones it cannot install, before creating anything."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "id", "python3"):
        found = subprocess.run(["bash", "-c", f"command -v {tool}"], capture_output=True, text=True).stdout.strip()
        (bin_dir / tool).symlink_to(found)
    result = subprocess.run(
        [str(REPO_ROOT / "scripts" / "test")], env={"PATH": str(bin_dir)}, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "the tests need" in result.stderr and "wrk" in result.stderr and "apt-get" in result.stderr


def test_ci_runs_the_readmes_test_command_word_for_word() -> None:
    readme = README.read_text()
    second = re.search(r"Install everything the tests need.*?\n\n    ([^\n]+)\n", readme, re.DOTALL)
    assert second is not None
    command = second.group(1)
    ci = [
        line
        for line in (REPO_ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.startswith(("#", "set ", "cd ", "export "))
    ]
    assert ci == [command] == ["scripts/test"]


def test_every_word_of_anyserve_list_is_explained() -> None:
    """The capability and deviation words ``anyserve list`` prints each have a row in the README."""
    readme = README.read_text()
    words = [field.name for field in fields(Capabilities) if field.type in ("bool", bool)]
    words += Deviations(**{field.name: True for field in fields(Deviations)}).names()
    assert [word for word in words if f"| `{word}` |" not in readme] == []


def test_the_opening_names_every_server() -> None:
    opening = README.read_text().split("\n\n", 2)[1].lower()
    assert [name for name in adapters() if name not in opening] == []


def test_the_flags_of_the_coming_from_table_exist() -> None:
    """Every flag in the table's anyserve column, and every alias in brackets, is one the command takes."""
    readme = README.read_text()
    table = readme[readme.index("## Coming from") : readme.index("From code:")]
    known = {option for action in build_parser()._actions for option in action.option_strings}
    flags = set()
    for row in table.splitlines():
        if row.startswith("| ") and not row.startswith(("| to ", "| ---")):
            anyserve_cell = row.rstrip(" |").rsplit(" | ", 1)[1]
            for span in re.findall(r"`([^`]+)`", anyserve_cell):
                flags |= {word.split("=")[0] for word in span.split() if re.match(r"--?[a-zA-Z]", word)}
    assert flags and sorted(flags - known) == []
