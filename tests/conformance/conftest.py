"""The every-server suite: a test that takes ``server`` runs once for each registered server.

``@pytest.mark.servers(has="tls")`` narrows it to the servers that declare a
capability (``lacks=``: those that do not; ``deviates=``: those with a declared
deviation), as ``harness.servers()`` reads them from the adapters. With the
[all] extra installed (as in CI) a registered server that is not installed is
a failure, not a skip: ``start_anyserve`` asserts it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..harness import APP, Running, servers, start_anyserve, suite_args

#: The module-scoped fixtures that run one server process for the module's cases.
SHARED = frozenset({"served", "rooted"})


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "server" not in metafunc.fixturenames or any(
        "server" in marker.args[0] for marker in metafunc.definition.iter_markers("parametrize")
    ):
        return
    marker = metafunc.definition.get_closest_marker("servers")
    names = servers(**(marker.kwargs if marker is not None else {}))
    # Module scope: the module's shared server process starts once per server (in
    # each xdist worker that runs its cases).
    metafunc.parametrize("server", names, ids=names, scope="module" if SHARED & set(metafunc.fixturenames) else None)


@pytest.fixture(scope="module")
def served(server: str) -> Iterator[Running]:
    """The test app on *server*, one process for the module's cases (a module may
    define its own ``served``)."""
    running = start_anyserve(server, APP, *suite_args(server))
    try:
        yield running
    finally:
        running.stop()
