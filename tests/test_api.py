"""The public Python API."""

from __future__ import annotations

import importlib.metadata
import inspect
import os
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

import anyserve
from anyserve.errors import DISTRIBUTION
from anyserve.registry import adapters

#: The documented public names (DESIGN.md: run(), Server, load_app(), errors; README's Python API).
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
    "start",
}

FOUR = ("cheroot", "waitress", "werkzeug", "wsgiref")


def hello(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"hello"]


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


def refused(port: int) -> bool:
    """Whether nothing listens on 127.0.0.1:*port* any more."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            return False
    except ConnectionRefusedError:
        return True


@pytest.fixture(autouse=True)
def _quiet_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No ./pyproject.toml or ANYSERVE_* variable of the caller's changes the options."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("ANYSERVE_"):
            monkeypatch.delenv(name)


# -- the exported names ----------------------------------------------------------------------------


def test_all_is_the_documented_public_api() -> None:
    assert set(anyserve.__all__) == PUBLIC
    assert len(anyserve.__all__) == len(PUBLIC)


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_each_exported_name_is_importable(name: str) -> None:
    namespace: dict[str, Any] = {}
    exec(f"from anyserve import {name}", namespace)
    assert namespace[name] is getattr(anyserve, name)
    if name != "__version__":
        assert getattr(namespace[name], "__module__", "").startswith("anyserve"), name
        assert inspect.getdoc(namespace[name]), f"{name} has no docstring"


def test_nothing_public_is_left_out_of_all() -> None:
    public = {
        name
        for name, value in vars(anyserve).items()
        if not name.startswith("_") and not inspect.ismodule(value) and getattr(value, "__module__", "") != "typing"
    }
    public -= {"annotations", "TYPE_CHECKING"}
    assert public <= PUBLIC, sorted(public - PUBLIC)


def test_errors_share_one_base() -> None:
    for name in ("AppLoadError", "BindError", "ConfigError", "ServerError"):
        assert issubclass(getattr(anyserve, name), anyserve.AnyserveError)


def test_an_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="module 'anyserve' has no attribute 'nothing'"):
        anyserve.nothing  # noqa: B018


def test_version_matches_the_distribution() -> None:
    assert anyserve.__version__ == importlib.metadata.version(DISTRIBUTION)


# -- anyserve.serving(): a real server on a real socket, from a background thread -----------------------


@pytest.mark.parametrize("server", FOUR)
def test_serving_on_each_of_the_four_servers(server: str) -> None:
    with anyserve.serving(hello, server=server, bind="127.0.0.1:0") as srv:
        assert srv.name == server
        assert srv.url.startswith("http://127.0.0.1:")
        port = int(srv.url.rsplit(":", 1)[1])
        assert port > 0
        assert get(srv.url + "/") == b"hello"
        assert get(srv.url + "/again") == b"hello"
    assert srv._thread is not None and not srv._thread.is_alive()
    assert all(listener.socket.fileno() == -1 for listener in srv.listeners)
    assert refused(port)


IN_PROCESS = [name for name, cls in adapters().items() if cls.capabilities.background and name not in FOUR]


@pytest.mark.parametrize("server", IN_PROCESS)
def test_serving_on_the_other_registered_servers(server: str) -> None:
    with anyserve.serving(hello, server=server) as srv:
        assert get(srv.url) == b"hello"
    assert not srv._thread.is_alive()  # type: ignore[union-attr]


def test_servers_that_cannot_serve_from_a_thread_say_so() -> None:
    for name, cls in adapters().items():
        if not cls.capabilities.background:
            with pytest.raises(anyserve.AnyserveError, match="cannot serve from a background thread"):
                with anyserve.serving(hello, server=name):
                    pass


def test_serving_an_app_string(tmp_path: Path) -> None:
    (tmp_path / "api_site_q.py").write_text(
        "def make(text):\n"
        "    def app(environ, start_response):\n"
        "        start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "        return [text.encode()]\n"
        "    return app\n"
    )
    path = list(sys.path)
    try:
        with anyserve.serving("api_site_q:make('from a string')", server="wsgiref", app_dir=str(tmp_path)) as srv:
            assert get(srv.url) == b"from a string"
    finally:
        sys.path[:] = path
        sys.modules.pop("api_site_q", None)


def test_serving_refuses_bad_options_before_starting() -> None:
    with pytest.raises(anyserve.ConfigError, match="unknown option 'prot'"):
        with anyserve.serving(hello, prot=1):
            pass
    with pytest.raises(anyserve.ServerError, match="werkzeug cannot cap its threads"):
        with anyserve.serving(hello, server="werkzeug", threads=4):
            pass
    with pytest.raises(anyserve.AnyserveError, match="--workers 2 needs processes of its own"):
        with anyserve.serving(hello, server="cheroot", workers=2):
            pass


def test_serving_on_a_port_in_use() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(anyserve.BindError, match=f"cannot listen on 127.0.0.1:{port}: address already in use"):
            with anyserve.serving(hello, server="cheroot", bind=f"127.0.0.1:{port}"):
                pass


# -- anyserve.Server: the handle ----------------------------------------------------------------------


def test_server_handle() -> None:
    config = anyserve.Config.load(kwargs={"server": "waitress", "port": 0}, env={})
    srv = anyserve.Server(config, hello)
    assert srv.name == "waitress"
    assert srv.urls == []  # nothing bound yet
    with srv:
        assert srv.urls == [srv.url]
        assert srv.url.startswith("http://127.0.0.1:") and not srv.url.endswith(":0")
        assert get(srv.url) == b"hello"
        port = int(srv.url.rsplit(":", 1)[1])
    assert refused(port)


def test_server_handle_on_several_listeners() -> None:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="as-") as short:
        sock_path = f"{short}/api.sock"
        config = anyserve.Config.load(kwargs={"server": "cheroot", "bind": ["127.0.0.1:0", f"unix:{sock_path}"]})
        with anyserve.Server(config, hello) as srv:
            assert srv.urls[1] == f"unix:{sock_path}"
            assert get(srv.urls[0]) == b"hello"
            with socket.socket(socket.AF_UNIX) as client:
                client.settimeout(10)
                client.connect(sock_path)
                client.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
                assert b"hello" in _read_all(client)
        assert not Path(sock_path).exists()


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_server_stop_is_graceful_for_a_request_in_flight() -> None:
    entered, release = threading.Event(), threading.Event()

    def slow(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        entered.set()
        release.wait(10)
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "4")])
        return [b"done"]

    results: list[bytes] = []
    with anyserve.serving(slow, server="cheroot") as srv:
        client = threading.Thread(target=lambda: results.append(get(srv.url)))
        client.start()
        assert entered.wait(10)
        stopper = threading.Thread(target=srv.stop)
        stopper.start()
        release.set()
        stopper.join(10)
        client.join(10)
    assert results == [b"done"]


# -- lifecycle from the API -------------------------------------------------------------------------------


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
        assert get(srv.url + "/base/x/y") == b"/base|/x/y"


# -- options the API leaves to the anyserve command ----------------------------------------------------


def _reload_refusal(api: str) -> str:
    return (
        f"{api} cannot reload: reload belongs to the anyserve command, which serves from a child process it "
        f"starts again on each change, while {api} serves in the calling program (run anyserve --reload APP instead)"
    )


def test_reload_is_refused_rather_than_ignored() -> None:
    with pytest.raises(anyserve.ConfigError) as refused:
        with anyserve.serving(hello, server="cheroot", reload=True):
            pass
    assert str(refused.value) == _reload_refusal("anyserve.serving()")
    # Refused before it binds or blocks: the message is the whole outcome.
    with pytest.raises(anyserve.ConfigError) as refused:
        anyserve.run(hello, server="cheroot", port=0, reload=True)
    assert str(refused.value) == _reload_refusal("anyserve.run()")
    for call, api in ((anyserve.start, "anyserve.start()"), (anyserve.embed, "anyserve.embed()")):
        with pytest.raises(anyserve.ConfigError) as refused:
            call(hello, server="cheroot", reload=True)
        assert str(refused.value) == _reload_refusal(api)


def test_process_options_are_refused_in_a_sentence() -> None:
    lead = "anyserve.serving() serves in the calling program and leaves its process alone: "
    usage = " to the anyserve command (anyserve --daemon --pid FILE --user USER ...)"
    for options, names in (
        ({"daemon": True}, "daemon belongs"),
        ({"pid": "x.pid", "umask": "027"}, "pid and umask belong"),
        ({"daemon": True, "pid": "x.pid", "user": "nobody"}, "daemon, pid and user belong"),
    ):
        with pytest.raises(anyserve.ConfigError) as refused:
            with anyserve.serving(hello, **options):
                pass
        assert str(refused.value) == lead + names + usage


# -- the address of a server in the calling program ------------------------------------------------------


def test_a_free_port_unless_one_is_named() -> None:
    for options in ({"port": 0}, {"host": "127.0.0.1"}, {"host": "127.0.0.1", "port": 0}, {}):
        with anyserve.serving(hello, server="cheroot", **options) as srv:
            assert srv.url.startswith("http://127.0.0.1:") and not srv.url.endswith(":0"), options
            assert get(srv.url) == b"hello"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    srv = anyserve.start(hello, server="waitress", port=port)
    try:
        assert srv.url == f"http://127.0.0.1:{port}"
        assert get(srv.url) == b"hello"
    finally:
        srv.stop()
    assert refused(port)


# -- a Server serves once ----------------------------------------------------------------------------


def test_a_stopped_server_says_so_when_started_again() -> None:
    srv = anyserve.Server(anyserve.Config.load(kwargs={"server": "cheroot", "port": 0}, env={}), hello).start()
    with pytest.raises(anyserve.AnyserveError) as again:
        srv.start()
    assert str(again.value) == f"this Server serves already, on {srv.url}"
    url = srv.url
    srv.stop()
    assert srv.url == url and refused(int(url.rsplit(":", 1)[1]))  # where it served, still
    for restart in (srv.start, srv.serve):
        with pytest.raises(anyserve.AnyserveError) as stopped:
            restart()
        assert str(stopped.value) == "this Server has stopped; make a new one to serve again"
    with anyserve.serving(hello, server="cheroot") as fresh:
        assert get(fresh.url) == b"hello"


# -- the README's example ----------------------------------------------------------------------------


def readme_python_block(heading: str) -> str:
    """The first ```python block after *heading* in the README."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text.split(f"\n{heading}\n", 1)[1]
    return section.split("```python\n", 1)[1].split("```\n", 1)[0]


def test_the_readme_notebook_example_runs_as_written(tmp_path: Path) -> None:
    (tmp_path / "example.py").write_text(readme_python_block("### Start and stop from a notebook or a REPL"))
    result = subprocess.run(
        [sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True, timeout=60, env=os.environ
    )
    assert result.returncode == 0, result.stderr
    first, serving, second = result.stdout.splitlines()
    assert first == second == "b'Hello from anyserve\\n'"
    assert serving.startswith("serving on http://127.0.0.1:") and not serving.endswith(":0")
    assert "Traceback" not in result.stderr
