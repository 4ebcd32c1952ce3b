"""How anyserve is installed: the distribution name every install hint uses.

The name ``anyserve`` on the package index belongs to another project, so anyserve
is installed as ``anyserve-wsgi``; the import name and the command stay ``anyserve``.
"""

from __future__ import annotations

import importlib.metadata
import re
import sys
from pathlib import Path

from anyserve.errors import DISTRIBUTION, install_hint

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
#: A pip command installing anyserve by some name, with or without extras.
PIP_INSTALL = re.compile(r"pip install\s+['\"]?(anyserve[\w.-]*)(\[[^\]'\"]*\])?")


def test_the_project_is_named_as_the_hints_say() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == DISTRIBUTION == "anyserve-wsgi"
    assert install_hint("tornado") == "pip install 'anyserve-wsgi[tornado]'"
    assert install_hint() == "pip install anyserve-wsgi"


def test_the_installed_distribution_gives_the_anyserve_command_and_package() -> None:
    dist = importlib.metadata.distribution(DISTRIBUTION)
    scripts = {ep.name: ep.value for ep in dist.entry_points if ep.group == "console_scripts"}
    assert scripts == {"anyserve": "anyserve.cli:console_script"}
    extras = dist.metadata.get_all("Provides-Extra") or []
    assert {"all", "test", "tornado", "tls", "bench"} <= set(extras)


def test_every_install_hint_names_anyserve_wsgi() -> None:
    """Code, docs and examples: no hint points at the other project's package."""
    places = [ROOT / "README.md", *ROOT.glob("docs/**/*.md")]
    for folder in ("anyserve", "adapters", "examples", "benchmarks", "scripts"):
        places += (ROOT / folder).glob("**/*.py")
    wrong = []
    for path in places:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for match in PIP_INSTALL.finditer(line):
                if match.group(1) != DISTRIBUTION:
                    wrong.append(f"{path.relative_to(ROOT)}:{number}: {match.group(0)}")
    assert not wrong
