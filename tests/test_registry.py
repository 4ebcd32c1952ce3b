"""The registry: servers found through entry points, chosen by name or by order."""

from __future__ import annotations

import pytest
from anyserve.adapters.base import Adapter
from anyserve.adapters.wsgiref import WsgirefAdapter

from anyserve.config import Config
from anyserve.errors import ServerError
from anyserve.registry import AUTO_ORDER, adapters, choose_adapter, get_adapter, server_names

BUILT_IN = {"cheroot", "cherrypy", "tornado", "twisted", "waitress", "werkzeug", "wsgiref"}


class PluginAdapter(WsgirefAdapter):
    name = "plugin"


def test_built_ins_are_registered_through_entry_points() -> None:
    assert BUILT_IN <= set(server_names())
    for name, cls in adapters().items():
        assert issubclass(cls, Adapter) and cls.name == name


def test_server_names_follow_the_auto_order() -> None:
    names = server_names()
    ordered = [name for name in AUTO_ORDER if name in names]
    assert names[: len(ordered)] == ordered


def test_module_class_loads_an_unregistered_adapter() -> None:
    assert get_adapter(f"{__name__}:PluginAdapter") is PluginAdapter


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("cheroo", "unknown server 'cheroo'; did you mean 'cheroot'\\?"),
        ("nginx", "known servers: .*cheroot.*\\(installed: "),
        ("no_such_module_q:Thing", "cannot import adapter module 'no_such_module_q'"),
        (f"{__name__}:Nothing", "has no adapter class 'Nothing'"),
        (f"{__name__}:BUILT_IN", "is not an adapter"),
    ],
)
def test_bad_server_names(spec: str, message: str) -> None:
    with pytest.raises(ServerError, match=message):
        get_adapter(spec)


def test_auto_picks_the_first_installed_server_that_can_honour_the_options() -> None:
    assert choose_adapter(Config.load(env={})).name == "cheroot"
    # werkzeug and wsgiref take --threads 1; cheroot too, so it stays first.
    assert choose_adapter(Config.load(kwargs={"threads": 1}, env={})).name == "cheroot"


def test_auto_with_options_no_server_honours() -> None:
    with pytest.raises(ServerError, match="no installed server can honour these options"):
        choose_adapter(Config.load(kwargs={"workers": 2}, env={}))


@pytest.mark.parametrize(
    ("server", "options", "message"),
    [
        ("cheroot", {"workers": 2}, "cheroot has no worker processes of its own"),
        ("werkzeug", {"threads": 4}, "werkzeug cannot cap its threads"),
        ("cheroot", {"options": {"nope": "1"}}, "unknown option -o nope for server cheroot; it accepts: "),
        ("wsgiref", {"options": {"x": "1"}}, "it accepts: none"),
        ("waitress", {"options": {"connection_limit": "lots"}}, "invalid value for -o connection_limit=lots"),
    ],
)
def test_refusals(server: str, options: dict[str, object], message: str) -> None:
    with pytest.raises(ServerError, match=message):
        choose_adapter(Config.load(kwargs={"server": server, **options}, env={}))


def test_options_are_converted() -> None:
    config = Config.load(kwargs={"server": "waitress", "options": {"connection_limit": "7", "ident": "x"}}, env={})
    assert choose_adapter(config).check(config) == {"connection_limit": 7, "ident": "x"}


def test_capabilities_are_known_without_importing_the_server() -> None:
    for cls in adapters().values():
        assert cls.capabilities.concurrency
        assert isinstance(cls.capabilities.flags(), list)
