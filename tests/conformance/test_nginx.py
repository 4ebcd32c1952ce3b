"""Behind a real nginx (the Debian package; .ci/run installs it): two anyserve
instances as one upstream, and what the app sees with --proxy-headers.

The client connects from 127.0.0.2, so the address the app sees tells the
client (127.0.0.2) from nginx (127.0.0.1)."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from .conftest import Running, free_port, start_anyserve, wait_for_port

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
FOUR = ("cheroot", "gunicorn", "tornado", "waitress")
CLIENT = "127.0.0.2"

HEADERS = """
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $http_host;"""


def nginx_config(directory: Path, port: int, upstreams: dict[str, list[str]], locations: dict[str, str]) -> str:
    blocks = "\n".join(
        f"    upstream {name} {{\n" + "".join(f"        server {address};\n" for address in addresses) + "    }"
        for name, addresses in upstreams.items()
    )
    routes = "\n".join(
        f"        location {path} {{\n            proxy_pass {target};{HEADERS}\n"
        + ("            proxy_set_header X-Forwarded-Prefix /shop;\n" if path == "/shop/" else "")
        + "        }"
        for path, target in locations.items()
    )
    temp = "\n".join(
        f"    {kind}_temp_path {directory}/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""
{"user root;" if os.geteuid() == 0 else ""}
worker_processes 1;
daemon off;
pid {directory}/nginx.pid;
error_log {directory}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {directory}/access.log;
{temp}
{blocks}
    server {{
        listen 127.0.0.1:{port};
{routes}
    }}
}}
"""


@contextmanager
def nginx(tmp_path: Path, upstreams: dict[str, list[str]], locations: dict[str, str]) -> Iterator[str]:
    """A real nginx on a free loopback port with a generated config; yields its URL."""
    assert os.path.exists(NGINX), "nginx is not installed: apt-get install nginx (.ci/run does it)"
    directory = tmp_path / "nginx"
    directory.mkdir()
    port = free_port()
    config = directory / "nginx.conf"
    config.write_text(nginx_config(directory, port, upstreams, locations))
    proc = subprocess.Popen(
        [NGINX, "-p", str(directory), "-c", str(config), "-e", str(directory / "error.log")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()  # nginx's fast shutdown; its workers go with it
        proc.wait(timeout=30)


def get(url: str, path: str) -> tuple[int, bytes]:
    """GET from the client address 127.0.0.2."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30, source_address=(CLIENT, 0))
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def address_of(running: Running) -> str:
    return running.url.removeprefix("http://")


@pytest.mark.parametrize("server", FOUR)
def test_two_instances_behind_nginx_with_proxy_headers(server: str, tmp_path: Path) -> None:
    first = start_anyserve(server, "tests.conformance.opsapp:environ", "--proxy-headers")
    try:
        second = start_anyserve(server, "tests.conformance.opsapp:environ", "--proxy-headers")
        try:
            upstream = [address_of(first), address_of(second)]
            with nginx(tmp_path, {"anyserve": upstream}, {"/": "http://anyserve", "/shop/": "http://anyserve/"}) as url:
                answers = [get(url, "/x") for _ in range(4)] + [get(url, "/shop/where") for _ in range(2)]
        finally:
            second.stop()
    finally:
        first.stop()
    assert {status for status, _ in answers} == {200}
    seen = [json.loads(body) for _, body in answers]
    # Balanced: nginx's round robin sends every other request to each instance.
    pids = [item.pop("pid") for item in seen]
    assert len(set(pids)) == 2 and pids[0] != pids[1], pids
    port = url.rsplit(":", 1)[1]
    direct = {
        "SCRIPT_NAME": "",
        "PATH_INFO": "/x",
        "REMOTE_ADDR": CLIENT,
        "wsgi.url_scheme": "http",
        "HTTP_HOST": f"127.0.0.1:{port}",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": port,
    }
    assert seen[:4] == [direct] * 4
    assert seen[4:] == [{**direct, "SCRIPT_NAME": "/shop", "PATH_INFO": "/where"}] * 2


def test_without_proxy_headers_the_app_sees_nginx(tmp_path: Path) -> None:
    running = start_anyserve("cheroot", "tests.conformance.opsapp:environ")
    try:
        with nginx(tmp_path, {"one": [address_of(running)]}, {"/": "http://one"}) as url:
            seen = json.loads(get(url, "/x")[1])
    finally:
        running.stop()
    assert (seen["REMOTE_ADDR"], seen["HTTP_HOST"]) == ("127.0.0.1", "one")


@pytest.mark.parametrize("server", ["cheroot", "gunicorn"])
def test_cherrypy_behind_nginx_tools_proxy_and_proxy_headers_agree(server: str, tmp_path: Path) -> None:
    tool = start_anyserve(server, "tests.conformance.cpproxy:proxied")
    try:
        ours = start_anyserve(server, "tests.conformance.cpproxy:plain", "--proxy-headers")
        try:
            upstreams = {"tool": [address_of(tool)], "ours": [address_of(ours)]}
            with nginx(tmp_path, upstreams, {"/tool/": "http://tool/", "/ours/": "http://ours/"}) as url:
                with_tool = json.loads(get(url, "/tool/base")[1])
                with_option = json.loads(get(url, "/ours/base")[1])
        finally:
            ours.stop()
    finally:
        tool.stop()
    port = url.rsplit(":", 1)[1]
    assert with_tool["base"] == with_option["base"] == f"http://127.0.0.1:{port}"
    assert with_tool["remote_ip"] == with_option["remote_ip"] == CLIENT
    assert with_tool["url"] == with_option["url"] == f"http://127.0.0.1:{port}/base"
