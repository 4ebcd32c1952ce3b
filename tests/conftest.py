"""Fixtures for the whole suite; the harness itself is tests/harness.py."""

from __future__ import annotations

import socket
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


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


@pytest.fixture
def notify_socket() -> Iterator[tuple[str, socket.socket]]:
    """A datagram socket in the abstract namespace, as systemd's NOTIFY_SOCKET names it: @name."""
    name = f"anyserve-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(20)
        yield "@" + name, sock


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest single cases first (the README's benchmark examples, minutes each),
    so that no worker is left with one at the end; the repeated stops last: with their
    CPU hogs the machine is at its busiest, and the cases that time a stop
    (tests/conformance/test_lifecycle.py) run before."""

    def order(item: pytest.Item) -> int:
        if item.get_closest_marker("long"):
            return 0
        return 2 if item.nodeid.startswith("tests/conformance/test_stop.py") else 1

    items.sort(key=order)
