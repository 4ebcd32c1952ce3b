"""The deployment recipes of docs/deployment/, read the way the tests run them.

A recipe file is used as it is, with only the values a test must change
(ports, paths, the app, the user) replaced by plain substitution; every value
replaced must be in the file, so a recipe that changes cannot leave its test
running something else.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from ..harness import REPO_ROOT

DOCS = REPO_ROOT / "docs" / "deployment"
#: What the recipes say, and what a test puts in its place.
APP_DIR = "/srv/myapp"
INSTALLED = "/srv/myapp/.venv/bin/anyserve"
APP = "myapp:app"


def recipe(name: str, substitutions: dict[str, str] | None = None) -> str:
    """The text of docs/deployment/NAME with each key replaced by its value (each key must occur)."""
    text = (DOCS / name).read_text()
    for old, new in (substitutions or {}).items():
        assert old in text, f"docs/deployment/{name} no longer has {old!r}"
        text = text.replace(old, new)
    return text


def commands(page: str) -> list[list[str]]:
    """The ``anyserve ...`` command lines of a recipe page's ``sh`` blocks, split as a shell would."""
    blocks = re.findall(r"```sh\n(.*?)```", (DOCS / page).read_text(), re.S)
    found = [shlex.split(line) for block in blocks for line in block.splitlines() if line.startswith("anyserve ")]
    assert found, f"docs/deployment/{page} has no anyserve command"
    return found


def as_tested(argv: list[str], app: str, substitutions: dict[str, str] | None = None) -> tuple[str, list[str]]:
    """A recipe's anyserve command line -> (server, the other arguments) for ``Running``:
    the installed command replaced by this venv's, /srv/myapp by the repository, myapp:app by *app*."""
    assert Path(argv[0]).name == "anyserve", argv
    assert argv.count(APP) == 1, f"the recipe's command does not serve {APP}: {argv}"
    args = [{APP: app, APP_DIR: str(REPO_ROOT)}.get(arg, arg) for arg in argv[1:]]
    for old, new in (substitutions or {}).items():
        assert old in args, f"the recipe's command no longer has {old!r}: {argv}"
        args = [new if arg == old else arg for arg in args]
    where = args.index("-s")
    server = args[where + 1]
    return server, args[:where] + args[where + 2 :]


__all__ = ["APP", "APP_DIR", "DOCS", "INSTALLED", "as_tested", "commands", "recipe"]
