"""The registry: servers found through entry points, chosen by name or by order."""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from anyserve.adapters.base import Adapter
from anyserve.adapters.wsgiref import WsgirefAdapter
from anyserve.config import Config
from anyserve.errors import ServerError
from anyserve.registry import (
    AUTO_ORDER,
    ENTRY_POINT_GROUP,
    adapters,
    choose_adapter,
    get_adapter,
    server_names,
    servers_with,
)

#: The four servers anyserve's own tests rely on; each has its entry point.
FOUR = {
    "cheroot": "anyserve.adapters.cheroot:CherootAdapter",
    "waitress": "anyserve.adapters.waitress:WaitressAdapter",
    "werkzeug": "anyserve.adapters.werkzeug:WerkzeugAdapter",
    "wsgiref": "anyserve.adapters.wsgiref:WsgirefAdapter",
}


class PluginAdapter(WsgirefAdapter):
    name = "plugin"


class NotAnAdapter:
    name = "nope"


def load(**options: Any) -> Config:
    return Config.load(kwargs=options, env={})


@pytest.fixture(autouse=True)
def _no_pyproject(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def plugin_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory on sys.path for adapter modules; forgotten afterwards."""
    root = tmp_path / "plugins"
    root.mkdir()
    path, names = list(sys.path), set(sys.modules)
    sys.path.insert(0, str(root))
    try:
        yield root
    finally:
        sys.path[:] = path
        for name in set(sys.modules) - names:
            if (getattr(sys.modules[name], "__file__", None) or "").startswith(str(root)):
                del sys.modules[name]


def not_installed(monkeypatch: pytest.MonkeyPatch, name: str) -> type[Adapter]:
    """Make the registry see a registered server as missing (nothing is uninstalled)."""
    cls = get_adapter(name)
    monkeypatch.setattr(cls, "is_installed", classmethod(lambda c: False))
    return cls


# -- what is registered ---------------------------------------------------------------------


def test_the_four_built_ins_are_registered_through_entry_points() -> None:
    entry_points = {ep.name: ep.value for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    for name, value in FOUR.items():
        assert entry_points.get(name) == value
        cls = get_adapter(name)
        assert cls.name == name and issubclass(cls, Adapter)
        assert f"{cls.__module__}:{cls.__qualname__}" == value
        assert cls.is_installed()


def test_every_registered_adapter_is_an_adapter_named_after_its_entry_point() -> None:
    registered = adapters()
    assert set(FOUR) <= set(registered)
    for name, cls in registered.items():
        assert issubclass(cls, Adapter) and cls.name == name
        assert cls.capabilities.concurrency  # known without importing the server


def test_server_names_follow_the_auto_order_then_the_alphabet() -> None:
    registered = {ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    names = server_names()
    assert sorted(names) == sorted(registered)
    ordered = [name for name in AUTO_ORDER if name in registered]
    assert names == ordered + sorted(registered - set(ordered))
    assert names.index("cheroot") < names.index("waitress") < names.index("werkzeug") < names.index("wsgiref")


def test_servers_with_a_capability() -> None:
    assert {"cheroot", "waitress", "wsgiref"} <= set(servers_with("unix"))
    assert "waitress" not in servers_with("tls")


# -- -s module:Class --------------------------------------------------------------------------------


def test_module_class_loads_an_unregistered_adapter() -> None:
    assert get_adapter(f"{__name__}:PluginAdapter") is PluginAdapter
    assert "plugin" not in server_names()


def test_module_class_from_a_module_of_its_own(plugin_dir: Path) -> None:
    (plugin_dir / "my_plugin_q.py").write_text(
        "from anyserve.adapters.wsgiref import WsgirefAdapter\nclass MyAdapter(WsgirefAdapter):\n    name = 'mine'\n"
    )
    importlib.invalidate_caches()
    cls = get_adapter("my_plugin_q:MyAdapter")
    assert cls.name == "mine" and issubclass(cls, Adapter)
    assert choose_adapter(load(server="my_plugin_q:MyAdapter")) == (cls, {})


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_such_module_q:Thing", "cannot import adapter module 'no_such_module_q' of -s no_such_module_q:Thing"),
        (f"{__name__}:Nothing", f"module '{__name__}' has no adapter class 'Nothing'"),
        (f"{__name__}:NotAnAdapter", "is not an adapter: .*NotAnAdapter.* is not a subclass of anyserve.adapters"),
        (f"{__name__}:FOUR", "is not an adapter"),
        (f"{__name__}:load", "is not an adapter"),
        (":Thing", "bad -s ':Thing': expected a server name \\(see 'anyserve list'\\) or module:Class"),
        (".relative:Thing", "bad -s '.relative:Thing'"),
        ("module:", "bad -s 'module:'"),
        ("a b:C", "bad -s 'a b:C'"),
    ],
)
def test_bad_module_class(spec: str, message: str) -> None:
    with pytest.raises(ServerError, match=message):
        get_adapter(spec)


def test_an_adapter_module_that_raises_on_import(plugin_dir: Path) -> None:
    (plugin_dir / "broken_plugin_q.py").write_text("raise RuntimeError('plugin broken')\n")
    importlib.invalidate_caches()
    with pytest.raises(
        ServerError,
        match="adapter module 'broken_plugin_q' of -s broken_plugin_q:X raised RuntimeError on import: plugin broken",
    ):
        get_adapter("broken_plugin_q:X")


# -- unknown servers --------------------------------------------------------------------------------


def test_unknown_server_with_a_close_match() -> None:
    with pytest.raises(ServerError) as info:
        get_adapter("cheroo")
    message = str(info.value)
    assert message.startswith("unknown server 'cheroo'; did you mean 'cheroot'? known servers: ")
    installed = message.split("(installed: ", 1)[1]
    for name in FOUR:
        assert name in installed
    assert message.endswith("or give an adapter class as module:Class")


def test_unknown_server_without_a_close_match_lists_them_all() -> None:
    with pytest.raises(ServerError, match=r"unknown server 'nginx'; known servers: cheroot, waitress, ") as info:
        get_adapter("nginx")
    assert "did you mean" not in str(info.value)
    assert "not installed" not in str(info.value)  # here every registered server is installed


def test_unknown_server_gives_the_install_hint_for_missing_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    not_installed(monkeypatch, "waitress")
    with pytest.raises(ServerError) as info:
        get_adapter("waitres")
    message = str(info.value)
    assert "did you mean 'waitress'?" in message
    assert "not installed: waitress (pip install 'anyserve-wsgi[waitress]')" in message
    assert "waitress" not in message.split("(installed: ", 1)[1].split(";", 1)[0]


# -- choosing ---------------------------------------------------------------------------------------


def chosen(config: Config) -> str:
    return choose_adapter(config)[0].name


def test_auto_picks_cheroot_here() -> None:
    assert chosen(load()) == "cheroot"
    assert chosen(load(server="auto", threads=1)) == "cheroot"
    assert chosen(load(bind=["unix:/tmp/auto.sock"])) == "cheroot"


def test_auto_passes_over_a_server_that_cannot_honour_the_options() -> None:
    # cheroot does not know waitress's connection_limit; waitress, next in order, does.
    assert chosen(load(options={"connection_limit": "5"})) == "waitress"


def test_auto_passes_over_servers_that_are_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    not_installed(monkeypatch, "cheroot")
    assert chosen(load()) == "waitress"


def test_auto_when_no_server_can_honour_the_options() -> None:
    with pytest.raises(ServerError, match=r"no installed server can honour these options: .*-o no_such_setting"):
        choose_adapter(load(options={"no_such_setting": "1"}))


def test_a_named_server_that_is_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    not_installed(monkeypatch, "waitress")
    with pytest.raises(ServerError) as info:
        choose_adapter(load(server="waitress"))
    assert str(info.value) == (
        "server 'waitress' is not installed; install it with: pip install 'anyserve-wsgi[waitress]'"
    )


@pytest.mark.parametrize(
    ("server", "options", "message"),
    [
        ("werkzeug", {"threads": 4}, "werkzeug cannot cap its threads, so it cannot honour --threads 4"),
        ("cheroot", {"options": {"nope": "1"}}, "unknown option -o nope for server cheroot; it accepts: "),
        ("wsgiref", {"options": {"x": "1"}}, "unknown option -o x for server wsgiref; it accepts: none"),
        ("waitress", {"options": {"connection_limit": "lots"}}, "invalid value for -o connection_limit=lots"),
        ("cheroot", {"options": {"timeout": "soon"}}, "invalid value for -o timeout=soon \\(server cheroot\\)"),
    ],
)
def test_refusals(server: str, options: dict[str, object], message: str) -> None:
    with pytest.raises(ServerError, match=message):
        choose_adapter(load(server=server, **options))


def test_what_a_server_can_honour_is_accepted() -> None:
    assert chosen(load(server="werkzeug", threads=1)) == "werkzeug"
    assert chosen(load(server="wsgiref", threads=4)) == "wsgiref"
    assert chosen(load(server="cheroot", threads=16)) == "cheroot"


def test_options_are_converted_and_dashes_accepted() -> None:
    config = load(server="waitress", options={"connection-limit": "7", "ident": "x"})
    assert choose_adapter(config)[1] == {"connection_limit": 7, "ident": "x"}


def test_an_adapter_that_cannot_serve_a_unix_socket(plugin_dir: Path) -> None:
    (plugin_dir / "tcp_only_q.py").write_text(
        "from dataclasses import replace\n"
        "from anyserve.adapters.wsgiref import WsgirefAdapter\n"
        "class TcpOnly(WsgirefAdapter):\n"
        "    name = 'tcponly'\n"
        "    capabilities = replace(WsgirefAdapter.capabilities, unix=False, fd=False)\n"
    )
    importlib.invalidate_caches()
    with pytest.raises(ServerError, match="tcponly cannot serve on a unix socket; use -s cheroot"):
        choose_adapter(load(server="tcp_only_q:TcpOnly", bind=["unix:/tmp/x.sock"]))
    with pytest.raises(ServerError, match="tcponly cannot serve on an inherited descriptor"):
        choose_adapter(load(server="tcp_only_q:TcpOnly", bind=["fd://3"]))
