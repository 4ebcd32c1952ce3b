"""The two adapters of docs/adapters.md, taken from the page and run as written:
a request, and graceful stops with a request in flight."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest

from .apps.app import pattern
from .harness import APP, REPO_ROOT, fetch, one_stop, start_anyserve

PAGE = REPO_ROOT / "docs" / "adapters.md"
ADAPTERS = {
    "threaded_wsgiref": "ThreadedWsgirefAdapter",
    "tornado_container": "TornadoContainerAdapter",
}


def write_modules(folder: Path) -> None:
    """Each python block of the page whose docstring names a module, as that module."""
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(), re.S)
    for block in blocks:
        name = re.match(r'"""(\w+):', block)
        if name is not None:
            (folder / f"{name.group(1)}.py").write_text(block)
    assert {path.stem for path in folder.glob("*.py")} == set(ADAPTERS)


@pytest.mark.parametrize("module", ADAPTERS)
def test_the_documented_adapter_serves_and_stops(module: str, tmp_path: Path) -> None:
    modules = tmp_path / "modules"
    modules.mkdir()
    write_modules(modules)
    server = f"{module}:{ADAPTERS[module]}"
    env = {"PYTHONPATH": str(modules)}
    running = start_anyserve(server, APP, env=env)
    try:
        assert fetch(running.url, "/echo").status == 200
        assert fetch(running.url, "/big?size=300000").body == b"".join(pattern(300000))
    finally:
        assert running.stop() == 0, running.stderr_text()
    for number, (to_group, signum, workers) in enumerate(
        [(False, signal.SIGTERM, 1), (True, signal.SIGINT, 1), (True, signal.SIGTERM, 2)]
    ):
        problem = one_stop(server, workers, to_group, signum, None, tmp_path / str(number), env=env)
        assert problem is None, problem
