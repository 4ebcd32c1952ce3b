"""Behind a real nginx (the Debian package; .ci/run installs it): two anyserve
instances as one upstream, and what the app sees with --proxy-headers; nginx's
``uwsgi_pass`` to the uwsgi server. The recipes of docs/deployment/ are the
configs run here: nginx-proxy.conf as it is (ports filled in) and its
``proxy_set_header`` lines in the generated configs, nginx-uwsgi.conf with
Debian's own uwsgi_params.

The client connects from 127.0.0.2, so the address the app sees tells the
client (127.0.0.2) from nginx (127.0.0.1)."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ..harness import APP, KINDS, Running, answer, free_port, start_anyserve, wait_for_file, wait_for_port
from .recipes import as_tested, commands, recipe

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
UWSGI_PARAMS = Path("/etc/nginx/uwsgi_params")  # shipped by Debian's nginx
CLIENT = "127.0.0.2"

# The headers of the recipe, docs/deployment/nginx-proxy.conf, in every proxied location.
HEADERS = "".join(
    f"\n            {line}" for line in re.findall(r"^\s*(proxy_set_header .*;)$", recipe("nginx-proxy.conf"), re.M)
)


def nginx_config(upstreams: dict[str, list[str]], locations: dict[str, str]) -> str:
    """The http{} content for *upstreams* and a server on LISTEN with these *locations*."""
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
    return f"{blocks}\n    server {{\n        listen LISTEN;\n{routes}\n    }}\n"


def main_config(directory: Path, http: str) -> str:
    """A whole nginx.conf around *http* (e.g. a recipe): everything under *directory*, in the foreground."""
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
{http}
}}
"""


@contextmanager
def nginx_running(tmp_path: Path, http: str) -> Iterator[str]:
    """A real nginx on a free loopback port, serving *http* (LISTEN in it becomes the
    address); relative includes are read from its config directory. Yields its URL."""
    assert os.path.exists(NGINX), "nginx is not installed: apt-get install nginx (scripts/test does it)"
    directory = tmp_path / "nginx"
    directory.mkdir(exist_ok=True)
    port = free_port()
    config = directory / "nginx.conf"
    config.write_text(main_config(directory, http.replace("LISTEN", f"127.0.0.1:{port}")))
    proc = subprocess.Popen(
        [NGINX, "-p", str(directory), "-c", str(config), "-e", str(directory / "error.log")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        try:
            wait_for_port(port, proc)
        except AssertionError as error:
            log = directory / "error.log"
            raise AssertionError(f"{error}\n{log.read_text() if log.exists() else ''}") from None
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()  # nginx's fast shutdown; its workers go with it
        proc.wait(timeout=30)


@contextmanager
def nginx(tmp_path: Path, upstreams: dict[str, list[str]], locations: dict[str, str]) -> Iterator[str]:
    """A real nginx with a generated config that uses the recipe's headers; yields its URL."""
    with nginx_running(tmp_path, nginx_config(upstreams, locations)) as url:
        yield url


def get(url: str, path: str, method: str = "GET", body: bytes | None = None) -> tuple[int, bytes]:
    """A request from the client address 127.0.0.2."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return answer(
        http.client.HTTPConnection(host, int(port), timeout=30, source_address=(CLIENT, 0)), method, path, body
    )


def address_of(running: Running) -> str:
    return running.url.removeprefix("http://")


@pytest.mark.parametrize("server", KINDS)
def test_two_instances_behind_nginx_with_proxy_headers(server: str, tmp_path: Path) -> None:
    first = start_anyserve(server, "tests.apps.opsapp:environ", "--proxy-headers")
    try:
        second = start_anyserve(server, "tests.apps.opsapp:environ", "--proxy-headers")
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
    running = start_anyserve("cheroot", "tests.apps.opsapp:environ")
    try:
        with nginx(tmp_path, {"one": [address_of(running)]}, {"/": "http://one"}) as url:
            seen = json.loads(get(url, "/x")[1])
    finally:
        running.stop()
    assert (seen["REMOTE_ADDR"], seen["HTTP_HOST"]) == ("127.0.0.1", "one")


@pytest.mark.parametrize("server", ["cheroot", "gunicorn"])
def test_cherrypy_behind_nginx_tools_proxy_and_proxy_headers_agree(server: str, tmp_path: Path) -> None:
    tool = start_anyserve(server, "tests.apps.cpproxy:proxied")
    try:
        ours = start_anyserve(server, "tests.apps.cpproxy:plain", "--proxy-headers")
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


def instance_of(pid: int, instances: list[Running]) -> int:
    """Which of *instances* served from process *pid* (itself or one of its workers)."""
    mains = [running.proc.pid for running in instances]
    walk = pid
    while walk not in mains:
        status = Path(f"/proc/{walk}/status").read_text()
        walk = int(re.search(r"^PPid:\s*(\d+)", status, re.M).group(1))
        assert walk > 1, f"process {pid} belongs to none of the anyserve instances {mains}"
    return mains.index(walk)


def test_the_proxy_recipe_as_documented(tmp_path: Path) -> None:
    """docs/deployment/nginx-proxy.conf in front of the two commands of nginx-proxy.md."""
    documented = ["127.0.0.1:8001", "127.0.0.1:8002"]
    instances: list[Running] = []
    try:
        for argv, address in zip(commands("nginx-proxy.md"), documented, strict=True):
            server, args = as_tested(argv, "tests.apps.opsapp:environ", {address: f"127.0.0.1:{free_port()}"})
            instances.append(Running(server, args))
            instances[-1].wait_listening()
        pairs = zip(documented, instances, strict=True)
        upstreams = {f"server {old};": f"server {address_of(new)};" for old, new in pairs}
        with nginx_running(tmp_path, recipe("nginx-proxy.conf", {"listen 80;": "listen LISTEN;", **upstreams})) as url:
            answers = [get(url, "/x") for _ in range(6)]
            assert {status for status, _ in answers} == {200}, answers
            seen = [json.loads(body) for _, body in answers]
            served_by = [instance_of(item.pop("pid"), instances) for item in seen]
    finally:
        for running in instances:
            assert running.stop() == 0, running.stderr_text()
    assert sorted(set(served_by)) == [0, 1], served_by  # both instances answer
    port = url.rsplit(":", 1)[1]
    client = {"REMOTE_ADDR": CLIENT, "wsgi.url_scheme": "http", "HTTP_HOST": f"127.0.0.1:{port}", "PATH_INFO": "/x"}
    assert all(item.items() >= client.items() for item in seen), seen


def test_the_uwsgi_pass_recipe_as_documented(tmp_path: Path) -> None:
    """docs/deployment/nginx-uwsgi.conf, with Debian's uwsgi_params, in front of the command of nginx-uwsgi.md."""
    assert UWSGI_PARAMS.exists(), "nginx's uwsgi_params is missing: apt-get install nginx (scripts/test does it)"
    (argv,) = commands("nginx-uwsgi.md")
    with tempfile.TemporaryDirectory(prefix="as-") as short:  # a unix socket path: at most 107 bytes
        path = f"{short}/uwsgi.sock"
        server, args = as_tested(argv, APP, {"unix:/run/myapp/uwsgi.sock": f"unix:{path}"})
        running = Running(server, args)
        try:
            running.wait_for_output(r"Listening on unix:")
            wait_for_file(Path(path))
            (tmp_path / "nginx").mkdir()
            shutil.copy(UWSGI_PARAMS, tmp_path / "nginx" / "uwsgi_params")  # `include uwsgi_params;` reads it
            config = recipe("nginx-uwsgi.conf", {"listen 80;": "listen LISTEN;", "/run/myapp/uwsgi.sock": path})
            body = b"posted through nginx's uwsgi_pass\n" * 1000
            with nginx_running(tmp_path, config) as url:
                got = get(url, "/echo?via=nginx&n=1")
                posted = get(url, "/echo?form=1", "POST", body)
        finally:
            code = running.stop()
    assert code == 0, running.stderr_text()
    assert got[0] == posted[0] == 200, (got, posted)
    seen, post = json.loads(got[1]), json.loads(posted[1])
    assert (seen["method"], seen["path_info"], seen["query_string"]) == ("GET", "/echo", "via=nginx&n=1")
    assert (post["method"], post["query_string"], post["length"]) == ("POST", "form=1", len(body))
    assert post["sha256"] == hashlib.sha256(body).hexdigest()
