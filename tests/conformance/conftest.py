"""The every-server suite: a test that takes ``server`` runs once for each registered server.

``@pytest.mark.servers(has="tls")`` narrows it to the servers that declare a
capability (``lacks=``: those that do not; ``deviates=``: those with a declared
deviation), as ``harness.servers()`` reads them from the adapters. With the
[all] extra installed (as in CI) a registered server that is not installed is
a failure, not a skip: ``start_anyserve`` asserts it.
"""

from __future__ import annotations

import pytest

from ..harness import servers

#: The module-scoped fixtures that run one server process for the module's cases.
SHARED = frozenset({"served", "rooted"})


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "server" not in metafunc.fixturenames or any(
        "server" in marker.args[0] for marker in metafunc.definition.iter_markers("parametrize")
    ):
        return
    marker = metafunc.definition.get_closest_marker("servers")
    names = servers(**(marker.kwargs if marker is not None else {}))
    if SHARED.isdisjoint(metafunc.fixturenames):
        metafunc.parametrize("server", names, ids=names)
        return
    # Module scope, and one xdist worker for a module's cases of one server: the
    # module's shared server process starts once per server.
    group = metafunc.module.__name__.rsplit(".", 1)[-1]
    params = [pytest.param(name, marks=pytest.mark.xdist_group(f"{group}-{name}")) for name in names]
    metafunc.parametrize("server", params, ids=names, scope="module")
