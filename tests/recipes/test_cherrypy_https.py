"""CherryPy's HTTP + HTTPS recipe (docs/deployment/cherrypy_http_https.py): one app,
``cherrypy.server`` on HTTP and a second ``cherrypy._cpserver.Server`` on HTTPS,
run unchanged (its ports and certificate paths filled in) by the real
``anyserve`` command on every server that serves HTTP and HTTPS listeners at
once; the others refuse in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from ..harness import Running, capabilities, fetch, free_port, https_fetch, servers
from ..pki import Pki, make_pki
from .recipes import recipe


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def write_recipe(directory: Path, pki: Pki) -> tuple[int, int]:
    http_port, https_port = free_port(), free_port()
    text = recipe(
        "cherrypy_http_https.py",
        {
            '"server.socket_port": 8080': f'"server.socket_port": {http_port}',
            "server2.socket_port = 8443": f"server2.socket_port = {https_port}",
            "/etc/ssl/certs/myapp.pem": str(pki.cert),
            "/etc/ssl/private/myapp.key": str(pki.key),
        },
    )
    (directory / "cherrypy_http_https.py").write_text(text)
    return http_port, https_port


@pytest.mark.parametrize("server", servers(has="tls_mixed"))
def test_http_and_https_from_one_cherrypy_app(server: str, tmp_path: Path, pki: Pki) -> None:
    http_port, https_port = write_recipe(tmp_path, pki)
    running = Running(server, ["--app-dir", str(tmp_path), "cherrypy_http_https:app"])
    try:
        running.wait_listening(count=2)
        assert running.urls == [f"http://127.0.0.1:{http_port}", f"https://127.0.0.1:{https_port}"]
        assert fetch(running.urls[0], "/").body == b"Hello over http"
        assert https_fetch(running.urls[1], "/", pki.client_context()) == (200, b"Hello over https")
        text = running.stderr_text()
        assert f"Listening on https://127.0.0.1:{https_port} (the app's cherrypy._cpserver.Server on" in text
        assert f"tls: {pki.cert} on https://127.0.0.1:{https_port}" in text
    finally:
        running.stop()


@pytest.mark.parametrize("server", servers(lacks="tls_mixed"))
def test_servers_that_cannot_mix_http_and_https_refuse(server: str, tmp_path: Path, pki: Pki) -> None:
    write_recipe(tmp_path, pki)
    # A server with workers of its own imports the app in them: --preload imports
    # it first, so that its servers are known before binding.
    preload = ["--preload"] if capabilities(server).workers else []
    running = Running(server, ["--app-dir", str(tmp_path), *preload, "cherrypy_http_https:app"])
    code = running.proc.wait(timeout=60)
    text = running.stderr_text()
    running.stop()
    assert code != 0
    lines = [line for line in text.strip().splitlines() if "warning" not in line.lower()]
    assert len(lines) == 1 and lines[0].startswith("anyserve: error: "), text
    assert "Traceback" not in text
