"""HTTPS through the real ``anyserve`` command, on every server that claims TLS.

One process per TLS server for the module: a server certificate served with
the intermediate CA that issued it (clients trust only the root), client
certificates required, and (where the server can mix them) a plain HTTP
listener next to the HTTPS one. Clients verify the server against the test CA.
Servers without TLS, and servers that cannot mix HTTP and HTTPS, refuse with
one clear line.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from anyserve.errors import EXIT_USAGE
from anyserve.registry import servers_with

from ..apps.app import pattern
from ..harness import (
    ANYSERVE,
    APP,
    REPO_ROOT,
    Running,
    address,
    capabilities,
    deviations,
    fetch,
    free_port,
    https_fetch,
    servers,
    start_anyserve,
)
from ..pki import KEY_PASSWORD, Pki

MiB = 1024 * 1024


def test_tls_servers() -> None:
    """What the adapters declare, checked against what the docs promise."""
    assert set(servers(has="tls")) >= {"cheroot", "gunicorn", "tornado", "twisted", "gevent", "eventlet", "werkzeug"}
    assert {"waitress", "wsgiref"} <= set(servers(lacks="tls"))
    unmixed = set(servers(has="tls", lacks="tls_mixed"))
    assert "gunicorn" in unmixed and not {"cheroot", "tornado", "twisted", "gevent", "werkzeug"} & unmixed


@dataclass
class Served:
    running: Running
    https: str
    http: str | None  # the plain listener of the same process, where the server can mix them


@pytest.fixture(scope="module", params=servers(has="tls"))
def served(request: pytest.FixtureRequest, pki: Pki) -> Iterator[Served]:
    server = request.param
    tls_bind = f"127.0.0.1:{free_port()}"
    args = [*pki.certificate_args(), "--ca-certs", str(pki.ca), "--cert-reqs", "required"]
    mixed = capabilities(server).tls_mixed
    if mixed:
        args += ["--tls-bind", tls_bind]
    running = start_anyserve(server, APP, *args, bind="127.0.0.1:0" if mixed else tls_bind)
    try:
        running.wait_listening(2 if mixed else 1)
        https = [url for url in running.urls if url.startswith("https://")]
        plain = [url for url in running.urls if url.startswith("http://")]
        assert https == [f"https://{tls_bind}"], running.urls
        yield Served(running, https[0], plain[0] if mixed else None)
    finally:
        running.stop()


def echo(url: str, pki: Pki, **kwargs: Any) -> dict[str, Any]:
    status, body = https_fetch(url, "/echo", pki.client_context(with_certificate=True), **kwargs)
    assert status == 200, body
    return json.loads(body)


def test_get_over_https(served: Served, pki: Pki) -> None:
    report = echo(served.https, pki)
    assert (report["method"], report["url_scheme"]) == ("GET", "https")


def test_post_body_over_https(served: Served, pki: Pki) -> None:
    body = b"".join(pattern(3 * MiB))
    report = echo(served.https, pki, method="POST", body=body)
    assert (report["length"], report["sha256"]) == (len(body), hashlib.sha256(body).hexdigest())


def test_streamed_response_over_https(served: Served, pki: Pki, tmp_path: Path) -> None:
    release = tmp_path / "release"
    conn = http.client.HTTPSConnection(
        *address(served.https), context=pki.client_context(with_certificate=True), timeout=8
    )
    try:
        conn.request("GET", f"/stream?release={release}")
        response = conn.getresponse()
        assert response.status == 200
        first = b""
        while b"\n" not in first:  # the first chunk comes before the app is released
            data = response.read1(64)
            assert data, f"the response ended before its first chunk: {first!r}"
            first += data
        release.touch()
        rest = response.read()
    finally:
        conn.close()
    assert first + rest == b"first chunk\nreleased\nlast chunk\n"


def test_client_certificate_required(served: Served, pki: Pki) -> None:
    """Without a client certificate no request is answered; with one, it is (the cases above)."""
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.RemoteDisconnected)):
        https_fetch(served.https, "/echo", pki.client_context(with_certificate=False), timeout=10)
    assert echo(served.https, pki)["url_scheme"] == "https"  # and the server still serves
    assert "Traceback" not in served.running.stderr_text()  # a failed handshake is no crash


def test_a_silent_client_does_not_hold_up_the_others(served: Served, pki: Pki) -> None:
    """A connection that never starts its handshake must not stall the handshakes of others."""
    if deviations(served.running.server).one_request_at_a_time:  # declared: one connection at a time
        return
    with socket.create_connection(address(served.https)):
        status, _ = https_fetch(served.https, "/echo", pki.client_context(with_certificate=True), timeout=5)
    assert status == 200


def test_plain_http_on_the_https_port_gets_no_app_response(served: Served) -> None:
    """Some servers answer 400 in plain text, the others close; the app never runs."""
    try:
        response = fetch(served.https, "/echo", timeout=10)
    except (ConnectionError, http.client.HTTPException):
        return
    assert response.status == 400, response


def test_http_and_https_listeners_in_one_process(served: Served, pki: Pki) -> None:
    if served.http is None:  # declared: this server serves TLS on all its listeners or none
        assert not capabilities(served.running.server).tls_mixed
        return
    response = fetch(served.http, "/echo")
    assert response.status == 200
    plain = json.loads(response.body)
    assert plain["url_scheme"] == "http"
    assert plain["pid"] == echo(served.https, pki)["pid"]


# -- started once per case -------------------------------------------------------------


@pytest.mark.servers(has="tls")
def test_ssl_adhoc(server: str) -> None:
    """A self-signed certificate for localhost, made at start, said to be for development."""
    running = start_anyserve(server, APP, "--ssl-adhoc")
    try:
        assert running.url.startswith("https://127.0.0.1:")
        assert "self-signed certificate for localhost made at start; for development only" in running.stderr_text()
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection(*address(running.url), context=context, timeout=10)
        try:
            conn.connect()
            peer = ssl.DER_cert_to_PEM_cert(conn.sock.getpeercert(binary_form=True))
            conn.request("GET", "/echo")
            response = conn.getresponse()
            assert json.loads(response.read())["url_scheme"] == "https"
        finally:
            conn.close()
        from cryptography import x509

        assert x509.load_pem_x509_certificate(peer.encode()).subject.rfc4514_string() == "CN=localhost"
    finally:
        running.stop()


@pytest.mark.servers(has="tls")
def test_cherrypy_app_sees_https(server: str, pki: Pki) -> None:
    """A CherryPy app, unchanged, builds https:// URLs from its request (request.base)."""
    running = start_anyserve(server, "tests.apps.cpapp:application", *pki.certificate_args())
    try:
        conn = http.client.HTTPSConnection(*address(running.url), context=pki.client_context(), timeout=15)
        try:
            conn.request("GET", "/go", headers={"Host": "conformance.test"})
            response = conn.getresponse()
            response.read()
        finally:
            conn.close()
        assert (response.status, response.getheader("Location")) == (303, "https://conformance.test/target")
    finally:
        running.stop()


@pytest.mark.parametrize("server", ["cheroot", "twisted"])  # the stdlib context, and pyOpenSSL's
def test_encrypted_key_with_its_password(server: str, pki: Pki) -> None:
    running = start_anyserve(
        server,
        APP,
        "--certfile",
        str(pki.cert),
        "--keyfile",
        str(pki.encrypted_key),
        env={"ANYSERVE_KEYFILE_PASSWORD": KEY_PASSWORD},
    )
    try:
        status, body = https_fetch(running.url, "/echo", pki.client_context())
        assert status == 200 and json.loads(body)["url_scheme"] == "https"
    finally:
        running.stop()


def test_certificate_and_key_in_one_file(pki: Pki) -> None:
    running = start_anyserve("cheroot", APP, "--certfile", str(pki.combined))
    try:
        assert https_fetch(running.url, "/echo", pki.client_context())[0] == 200
    finally:
        running.stop()


# -- refusals ------------------------------------------------------------------------


def refused(server: str, *args: str) -> str:
    """Run anyserve expecting a refusal before anything serves; return its one line."""
    result = subprocess.run(
        [ANYSERVE, "-s", server, "--app-dir", str(REPO_ROOT), "-b", "127.0.0.1:0", *args, APP],
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == EXIT_USAGE, result.stderr
    assert len(lines) == 1 and lines[0].startswith("anyserve: error: "), result.stderr
    return lines[0]


@pytest.mark.servers(lacks="tls")
def test_servers_without_tls_refuse_it(server: str, pki: Pki) -> None:
    line = refused(server, *pki.certificate_args())
    able = ", ".join(f"-s {name}" for name in servers_with("tls"))
    assert line == f"anyserve: error: {server} cannot serve TLS; use {able}"


@pytest.mark.servers(has="tls", lacks="tls_mixed")
def test_servers_that_cannot_mix_http_and_https_refuse_the_mix(server: str, pki: Pki) -> None:
    line = refused(server, *pki.certificate_args(), "--tls-bind", f"127.0.0.1:{free_port()}")
    assert f"{server} serves TLS on all its listeners or on none, so it cannot mix HTTP and HTTPS" in line
