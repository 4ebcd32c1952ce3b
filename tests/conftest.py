"""Shared helpers: run the real ``anyserve`` command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ANYSERVE = str(Path(sys.executable).parent / "anyserve")


def run_anyserve(*args: str, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``anyserve ARGS`` to completion and capture its output."""
    return subprocess.run([ANYSERVE, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def app_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory for test modules, importable, with what it imports forgotten afterwards."""
    before = set(sys.modules)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in set(sys.modules) - before:
        module = sys.modules.get(name)
        if getattr(module, "__file__", None) and str(tmp_path) in str(module.__file__):
            del sys.modules[name]


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A test CA with a server and a client certificate, made once per session (tests/pki.py)."""
    from .pki import make_pki

    return make_pki(tmp_path_factory.mktemp("pki"))
