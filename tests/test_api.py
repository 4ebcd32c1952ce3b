"""The public Python API."""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Iterable
from typing import Any

import pytest

import anyserve
from anyserve.registry import adapters

PUBLIC = {
    "AnyserveError",
    "AppLoadError",
    "BindError",
    "Config",
    "ConfigError",
    "Embedded",
    "Lifecycle",
    "Server",
    "ServerError",
    "__version__",
    "embed",
    "load_app",
    "run",
    "serving",
}


def hello(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"hello"]


def test_exported_members() -> None:
    assert set(anyserve.__all__) == PUBLIC
    for name in anyserve.__all__:
        assert getattr(anyserve, name) is not None


IN_PROCESS = [name for name, cls in adapters().items() if cls.capabilities.background]


@pytest.mark.parametrize("server", IN_PROCESS)
def test_serving_in_a_background_thread(server: str) -> None:
    with anyserve.serving(hello, server=server, bind="127.0.0.1:0") as srv:
        assert srv.url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(srv.url + "/", timeout=10) as response:
            assert response.read() == b"hello"
    assert not srv._thread.is_alive()  # type: ignore[union-attr]


def test_servers_that_cannot_serve_from_a_thread_say_so() -> None:
    for name, cls in adapters().items():
        if not cls.capabilities.background:
            with pytest.raises(anyserve.AnyserveError, match="cannot serve from a background thread"):
                with anyserve.serving(hello, server=name):
                    pass


def test_lifecycle_hooks_from_the_api() -> None:
    events: list[str] = []
    started = threading.Event()

    def on_start() -> None:
        events.append("start")
        started.set()

    with anyserve.serving(hello, server="cheroot", on_start=[on_start], on_stop=[lambda: events.append("stop")]):
        assert started.is_set()
        assert events == ["start"]
    assert events == ["start", "stop"]


def test_lifecycle_stops_in_reverse_order() -> None:
    lifecycle = anyserve.Lifecycle()
    order: list[str] = []
    for name in ("a", "b"):
        lifecycle.subscribe("started", lambda name=name: order.append(f"start {name}"))
        lifecycle.subscribe("stopping", lambda name=name: order.append(f"stop {name}"))
    lifecycle.started()
    lifecycle.stopping()
    lifecycle.stopping()  # once only
    assert order == ["start a", "start b", "stop b", "stop a"]
    with pytest.raises(ValueError, match="unknown lifecycle moment"):
        lifecycle.subscribe("sometime", lambda: None)


def test_root_path_from_the_api() -> None:
    def where(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [f"{environ['SCRIPT_NAME']}|{environ['PATH_INFO']}".encode()]

    with anyserve.serving(where, server="waitress", root_path="/base") as srv:
        with urllib.request.urlopen(srv.url + "/base/x/y", timeout=10) as response:
            assert response.read() == b"/base|/x/y"
