"""The ``server.*`` keys of a CherryPy app's config, honoured by every server.

A CherryPy app carries its server settings in its config
(``cherrypy.config.update({"server.socket_port": 9000, ...})``); anyserve
turns each key into its own option (the table is in the README's CherryPy
section): the address, the listen backlog, the thread pool, the request size
limits (413, the same on every server), TLS and the graceful timeout. An option
the user gives wins over the app's key; the start-up lines say where each
option came from; a key a server cannot honour, or a value anyserve cannot
serve as CherryPy would, is refused in one line.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from anyserve.config import Config
from anyserve.errors import AnyserveError
from anyserve.middleware import BODY_TOO_LARGE
from anyserve.registry import adapters

from ..harness import (
    ANYSERVE,
    APP,
    REPO_ROOT,
    Running,
    UnixHTTPConnection,
    answer,
    capabilities,
    deviations,
    fetch,
    free_port,
    https_fetch,
    raw_connection,
    read_response,
    start_anyserve,
    suite_args,
    wait_for_file,
)
from ..pki import Pki, make_pki

CPCONFIG = "tests.apps.cpconfig:application"
HEADER_LIMIT = 600
BODY_LIMIT = 100


def serve(server: str, settings: dict[str, object], *args: str, bind: str | None = None, **env: str) -> Running:
    """``anyserve -s SERVER ARGS`` serving the app whose CherryPy config is *settings*."""
    return start_anyserve(server, CPCONFIG, *args, bind=bind, env={"CP_SERVER_CONFIG": json.dumps(settings), **env})


def check(server: str, settings: dict[str, object], *args: str) -> subprocess.CompletedProcess[str]:
    """``anyserve check`` of the app with *settings*."""
    return subprocess.run(
        [ANYSERVE, "check", "-s", server, "--app-dir", str(REPO_ROOT), *args, CPCONFIG],
        cwd=REPO_ROOT,
        env={**os.environ, "CP_SERVER_CONFIG": json.dumps(settings)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def check_fails(server: str, settings: dict[str, object], *args: str) -> subprocess.CompletedProcess[str]:
    """``anyserve check`` of the app with *settings*: it must fail in one line, without a traceback."""
    result = check(server, settings, *args)
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("anyserve: error: "), result.stderr
    assert "Traceback" not in result.stderr
    return result


def preload(server: str) -> list[str]:
    """A server with worker processes of its own imports the app in each worker,
    after the listeners are bound; --preload imports it first, so that the app's
    CherryPy config can say how they are bound (see test_without_preload_...)."""
    return ["--preload"] if capabilities(server).workers else []


def listen_backlog(port: int) -> int:
    """The backlog of the socket listening on *port*, as the kernel reports it."""
    out = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True).stdout
    return int(out.split()[2])


@pytest.fixture(scope="module")
def served(server: str) -> Iterator[Running]:
    """The app on *server*, its address, backlog, size limits and graceful timeout from its CherryPy config."""
    settings: dict[str, object] = {
        "server.socket_host": "127.0.0.1",
        "server.socket_port": free_port(),
        "server.socket_queue_size": 7,
        "server.max_request_header_size": HEADER_LIMIT,
        "server.max_request_body_size": BODY_LIMIT,
        "server.shutdown_timeout": 12,
    }
    running = serve(server, settings, *preload(server))
    running.settings = settings  # type: ignore[attr-defined]
    try:
        yield running
    finally:
        running.stop()


def test_the_address_is_the_apps(served: Running) -> None:
    settings = served.settings  # type: ignore[attr-defined]
    assert served.url == f"http://127.0.0.1:{settings['server.socket_port']}"
    assert fetch(served.url, "/").body == f"http {settings['server.socket_port']}".encode()


def test_the_start_up_lines_say_what_came_from_the_apps_config(served: Running) -> None:
    text = served.stderr_text()
    port = served.settings["server.socket_port"]  # type: ignore[attr-defined]
    assert f"option: bind = 127.0.0.1:{port} (from the app's CherryPy config (server.socket_host))" in text
    assert "option: backlog = 7 (from the app's CherryPy config (server.socket_queue_size))" in text
    assert "option: graceful_timeout = 12.0 (from the app's CherryPy config (server.shutdown_timeout))" in text
    assert (
        f"option: max_body_size = {BODY_LIMIT} (from the app's CherryPy config (server.max_request_body_size))" in text
    )


def test_socket_queue_size_is_the_backlog(served: Running) -> None:
    assert listen_backlog(served.settings["server.socket_port"]) == 7  # type: ignore[attr-defined]


def test_a_head_over_max_request_header_size_gets_413(served: Running) -> None:
    with raw_connection(served.url) as (sock, reader):
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * HEADER_LIMIT + b"\r\n\r\n")
        assert read_response(reader).status == 413
    assert fetch(served.url, "/", headers={"X-Small": "a" * 100}).status == 200


def test_a_content_length_over_max_request_body_size_gets_413_before_the_body(served: Running) -> None:
    with raw_connection(served.url) as (sock, reader):
        # The body is never sent: the answer comes at once, not when the body would end.
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 9999\r\n\r\n")
        response = read_response(reader)
    assert response.status == 413
    if adapters()[served.server].app_may_close:
        assert "close" in response.header("Connection").lower()


def test_a_body_within_max_request_body_size_is_read(served: Running) -> None:
    response = fetch(served.url, "/upload", "POST", b"x" * BODY_LIMIT, {"Content-Type": "text/plain"})
    assert (response.status, response.body) == (200, f"read {BODY_LIMIT}".encode())


def chunked_upload(size: int) -> bytes:
    chunks = b"".join(b"%x\r\n%s\r\n" % (50, b"x" * 50) for _ in range(size // 50))
    return (
        b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n" + chunks + b"0\r\n\r\n"
    )


def test_a_chunked_body_over_max_request_body_size_gets_413(served: Running) -> None:
    with raw_connection(served.url) as (sock, reader):
        sock.sendall(chunked_upload(4 * BODY_LIMIT))
        if deviations(served.server).no_chunked_request:
            assert_not_decoded(sock, reader, 4 * BODY_LIMIT)
        else:
            assert read_response(reader).status == 413


def test_a_chunked_body_within_max_request_body_size_is_read(served: Running) -> None:
    with raw_connection(served.url) as (sock, reader):
        sock.sendall(chunked_upload(BODY_LIMIT // 2))
        if deviations(served.server).no_chunked_request:
            assert_not_decoded(sock, reader, BODY_LIMIT // 2)
        else:
            response = read_response(reader)
            assert (response.status, response.body) == (200, f"read {BODY_LIMIT // 2}".encode())


def assert_not_decoded(sock: socket.socket, reader: BinaryIO, size: int) -> None:
    """The declared deviation no_chunked_request: the app never gets the upload
    decoded (it gets no body, or the raw chunks up to a close that the client,
    waiting for the answer, never makes)."""
    sock.settimeout(3)
    try:
        response = read_response(reader)
    except TimeoutError:
        return
    assert response.body != f"read {size}".encode()


def test_shutdown_timeout_is_the_graceful_timeout(server: str, tmp_path: Path) -> None:
    marker = tmp_path / "in-app"
    running = serve(
        server, {"server.shutdown_timeout": 1}, *preload(server), bind="127.0.0.1:0", CP_SLEEP_MARKER=str(marker)
    )
    try:
        with raw_connection(running.url, timeout=30) as (sock, _):
            sock.sendall(b"GET /sleep?seconds=20 HTTP/1.1\r\nHost: x\r\n\r\n")
            wait_for_file(marker, what="the slow request in the app")
            started = time.monotonic()
            running.proc.send_signal(signal.SIGTERM)
            running.proc.wait(timeout=15)
            # 1 s for the request, and the server's own margin to stop; far below the 20 s it would take.
            assert time.monotonic() - started < 10
        assert "graceful timeout (1.0s) reached" in running.stderr_text()
    finally:
        running.stop()


def test_the_command_line_wins_over_the_apps_config(server: str) -> None:
    port = free_port()
    settings = {"server.socket_port": port, "server.max_request_body_size": BODY_LIMIT}
    running = serve(
        server, settings, "--max-body-size", "1000", "--log-level", "debug", *preload(server), bind="127.0.0.1:0"
    )
    try:
        assert not running.url.endswith(f":{port}")
        response = fetch(running.url, "/upload", "POST", b"x" * 500, {"Content-Type": "text/plain"})
        assert (response.status, response.body) == (200, b"read 500")
        text = running.stderr_text()
        assert "max_body_size = 1000 (from --max-body-size on the command line)" in text
        assert "server.max_request_body_size" not in text
    finally:
        running.stop()


@pytest.mark.servers(has="unix")
def test_socket_file_is_a_unix_listener(server: str, tmp_path: Path) -> None:
    path = tmp_path / "app.sock"
    settings = {"server.socket_file": str(path), "server.socket_port": 9}
    argv = ["--app-dir", str(REPO_ROOT), *preload(server), CPCONFIG]
    running = Running(server, argv, {"CP_SERVER_CONFIG": json.dumps(settings)})
    try:
        running.wait_for_output(f"Listening on unix:{path}")
        assert "(from the app's CherryPy config (server.socket_file))" in running.stderr_text()
        status, body = answer(UnixHTTPConnection(str(path), timeout=30), "GET", "/")
        assert status == 200 and body.startswith(b"http"), body
    finally:
        running.stop()


def test_thread_pool_is_the_threads_or_refused(server: str) -> None:
    """server.thread_pool is --threads: where the server refuses --threads 3, it
    refuses the key, naming it and the servers that honour it."""
    try:
        adapters()[server].refuse(Config.load(kwargs={"threads": 3}, env={}))
    except AnyserveError:
        result = check_fails(server, {"server.thread_pool": 3})
        assert f"{server} cannot " in result.stderr
        assert "server.thread_pool of the app's CherryPy config" in result.stderr
        assert "-s cheroot" in result.stderr
        return
    result = check(server, {"server.thread_pool": 3}, "-b", "127.0.0.1:0", *preload(server))
    assert "option: threads = 3 (from the app's CherryPy config (server.thread_pool))" in result.stdout
    assert ", 3 threads" in result.stdout


@pytest.mark.servers(has="workers")
def test_without_preload_the_apps_config_comes_too_late_and_says_so(server: str) -> None:
    """A server whose workers import the app binds before the app's config is known:
    the workers say what they cannot apply (--cherrypy-config, read first, can)."""
    running = serve(server, {"server.max_request_body_size": BODY_LIMIT}, bind="127.0.0.1:0")
    try:
        running.wait_for_output("server.max_request_body_size, but the listeners were bound before the app")
        response = fetch(running.url, "/upload", "POST", b"x" * 500, {"Content-Type": "text/plain"})
        assert response.status == 200
    finally:
        running.stop()


@pytest.mark.servers(has="tls")
def test_ssl_certificate_serves_https(server: str, pki: Pki) -> None:
    settings = {"server.ssl_certificate": str(pki.cert), "server.ssl_private_key": str(pki.key)}
    running = serve(server, settings, *preload(server), bind="127.0.0.1:0")
    try:
        assert running.url.startswith("https://")
        assert https_fetch(running.url, "/", pki.client_context()) == (
            200,
            f"https {running.url.rsplit(':', 1)[1]}".encode(),
        )
        assert f"tls: {pki.cert} on every listener" in running.stderr_text()
    finally:
        running.stop()


@pytest.mark.servers(lacks="tls")
def test_ssl_certificate_is_refused_where_the_server_has_no_tls(server: str, pki: Pki) -> None:
    result = check_fails(server, {"server.ssl_certificate": str(pki.cert), "server.ssl_private_key": str(pki.key)})
    assert "server.ssl_certificate of the app's CherryPy config" in result.stderr


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"server.thread_pool": "many"},
            "server.thread_pool = 'many' in the app's CherryPy config: expected an integer",
        ),
        ({"server.max_request_body_size": -5}, "server.max_request_body_size = -5 in the app's CherryPy config"),
        ({"server.socket_port": 70000}, "server.socket_port = 70000 in the app's CherryPy config"),
        (
            {"server.socket_host": None},
            "server.socket_host = None in the app's CherryPy config: CherryPy does not allow it",
        ),
        (
            {"server.protocol_version": "HTTP/1.0"},
            "server.protocol_version = 'HTTP/1.0' in the app's CherryPy config cannot be honoured",
        ),
        ({"server.ssl_module": "pyopenssl", "server.thread_pool": 0}, "server.thread_pool = 0"),
    ],
)
def test_a_bad_key_is_refused_in_one_line(settings: dict[str, object], message: str) -> None:
    result = check_fails("cheroot", settings)
    assert message in result.stderr


def test_socket_host_empty_in_a_cherrypy_config_file_is_refused_in_one_line(tmp_path: Path) -> None:
    conf = tmp_path / "app.conf"
    conf.write_text("[global]\nserver.socket_host = ''\nserver.socket_port = 9000\n")
    result = check_fails("cheroot", {}, "--cherrypy-config", str(conf))
    assert "server.socket_host = '' in the app's CherryPy config: CherryPy does not allow it" in result.stderr


def test_check_shows_the_apps_config_as_sources() -> None:
    port = free_port()
    settings = {"server.socket_port": port, "server.thread_pool": 3, "server.nodelay": False}
    result = subprocess.run(
        [ANYSERVE, "check", "-s", "cheroot", "--app-dir", str(REPO_ROOT), "-t", "5", CPCONFIG],
        cwd=REPO_ROOT,
        env={**os.environ, "CP_SERVER_CONFIG": json.dumps(settings)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert f"listen: http://127.0.0.1:{port}" in result.stdout
    assert f"option: bind = 127.0.0.1:{port} (from the app's CherryPy config (server.socket_port))" in result.stdout
    assert "option: threads = 5 (from -t on the command line)" in result.stdout
    assert "server.thread_pool" not in result.stdout
    assert "server.nodelay = False in the app's CherryPy config is not applied" in result.stderr


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def test_the_size_limits_hold_for_any_wsgi_app(server: str) -> None:
    """--max-header-size and --max-body-size on a plain WSGI app: 413 for a head or
    a Content-Length over, and for a chunked body whose read goes over (the read
    raises; anyserve answers 413 for the app that lets it through)."""
    args = ["--max-header-size", str(HEADER_LIMIT), "--max-body-size", str(BODY_LIMIT), *suite_args(server)]
    running = start_anyserve(server, APP, *args)
    try:
        with raw_connection(running.url) as (sock, reader):
            sock.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * HEADER_LIMIT + b"\r\n\r\n")
            assert read_response(reader).status == 413
        with raw_connection(running.url) as (sock, reader):
            sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 9999\r\n\r\n")
            response = read_response(reader)
            assert (response.status, response.body) == (413, BODY_TOO_LARGE.encode())
        assert json.loads(fetch(running.url, "/echo", "POST", b"x" * BODY_LIMIT).body)["length"] == BODY_LIMIT
        with raw_connection(running.url) as (sock, reader):
            sock.sendall(chunked_upload(4 * BODY_LIMIT).replace(b"/upload", b"/echo"))
            if deviations(server).no_chunked_request:
                assert_not_decoded(sock, reader, 4 * BODY_LIMIT)
            else:
                assert read_response(reader).status == 413
    finally:
        running.stop()
