"""TLS options, the context built from them, which listeners serve TLS, sd_notify; and every bad
combination gets one clear line and a non-zero exit, through the real command."""

from __future__ import annotations

import socket
import ssl
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from anyserve.config import Config
from anyserve.errors import EXIT_USAGE, ConfigError
from anyserve.notify import notify
from anyserve.plan import load_tls, mark_tls
from anyserve.sockets import INHERITED_FDS_ENV, Listener, bind, bind_listeners, inherited_fds_value, same_address
from anyserve.tls import TLS, make_adhoc_certificate

from .harness import free_port
from .pki import KEY_PASSWORD, Pki
from .test_cli import assert_error, run


def config(**options: Any) -> Config:
    return Config.load(cli=options, env={})


# -- options ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"keyfile": "k.pem"}, "--keyfile needs --certfile"),
        ({"ssl_adhoc": True, "certfile": "c.pem"}, "--ssl-adhoc cannot be combined with --certfile"),
        ({"keyfile_password": "x"}, "--keyfile-password needs --certfile"),
        ({"ca_certs": "ca.pem"}, "--ca-certs needs TLS: add --certfile (or --ssl-adhoc)"),
        ({"cert_reqs": "required"}, "--cert-reqs needs TLS"),
        ({"certfile": "c.pem", "cert_reqs": "optional"}, "--cert-reqs optional needs --ca-certs"),
        ({"tls_bind": [":8443"]}, "--tls-bind needs a certificate"),
        ({"certfile": "c.pem", "tls_bind": ["::1:80"]}, "put an IPv6 address in brackets"),
        ({"certfile": "c.pem", "cert_reqs": "always"}, "invalid value for --cert-reqs"),
    ],
)
def test_bad_tls_options(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        config(**options)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("options", "listen", "mixed"),
    [
        ({"certfile": "c", "bind": [":8080", ":8443"], "tls_bind": [":8443"]}, [":8080", ":8443"], True),
        ({"certfile": "c", "bind": [":8080"], "tls_bind": ["0.0.0.0:8443"]}, [":8080", "0.0.0.0:8443"], True),
        ({"certfile": "c", "bind": [":8443"], "tls_bind": ["0.0.0.0:8443"]}, [":8443"], False),
        ({"certfile": "c", "tls_bind": [":8443"]}, [":8443"], False),
        ({"certfile": "c", "port": 8080, "tls_bind": [":8443"]}, ["127.0.0.1:8080", ":8443"], True),
        ({"certfile": "c", "tls_bind": ["fd://web"]}, ["127.0.0.1:8000"], True),
        ({"certfile": "c", "bind": [":8080", ":8443"]}, [":8080", ":8443"], False),
    ],
)
def test_tls_bind_adds_listeners_and_says_whether_they_mix(
    options: dict[str, Any], listen: list[str], mixed: bool
) -> None:
    built = config(**options)
    assert built.tls
    assert (built.listen, built.tls_mixed) == (listen, mixed)


def test_tls_options_from_the_environment() -> None:
    built = Config.load(env={"ANYSERVE_SSL_ADHOC": "1", "ANYSERVE_TLS_BIND": ":1,:2", "ANYSERVE_CERT_REQS": "none"})
    assert built.ssl_adhoc and built.tls_bind == [":1", ":2"]


def test_same_address() -> None:
    assert same_address(":80", "0.0.0.0:80")
    assert same_address("unix:/a", "unix:///a")
    assert same_address("fd://web", "fd://web") and not same_address("fd://web", "fd://3")
    assert not same_address("127.0.0.1:80", "localhost:80")


# -- the context ------------------------------------------------------------------------------


def test_context_is_tls_1_2_at_least_and_verifies_as_asked(pki: Pki) -> None:
    context = TLS(str(pki.cert), str(pki.key)).context()
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_NONE
    required = TLS(str(pki.cert), str(pki.key), ca_certs=str(pki.ca), cert_reqs="required").context()
    assert required.verify_mode == ssl.CERT_REQUIRED
    optional = TLS(str(pki.combined), ca_certs=str(pki.ca), cert_reqs="optional").context()
    assert optional.verify_mode == ssl.CERT_OPTIONAL


def test_pyopenssl_context_from_the_same_settings(pki: Pki) -> None:
    from OpenSSL import SSL

    tls = TLS(str(pki.cert), str(pki.encrypted_key), KEY_PASSWORD, str(pki.ca), "required")
    context = tls.openssl_context()
    assert context.get_verify_mode() == SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT


def test_load_tls_without_tls_is_none() -> None:
    assert load_tls(config()) is None


def test_adhoc_certificate_is_for_localhost(tmp_path: Path) -> None:
    from cryptography import x509

    certfile, keyfile = make_adhoc_certificate(str(tmp_path))
    cert = x509.load_pem_x509_certificate(Path(certfile).read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert Path(keyfile).stat().st_mode & 0o777 == 0o600
    TLS(certfile, keyfile).context()  # a usable pair


# -- which listeners serve TLS ------------------------------------------------------------------


@pytest.fixture
def two_listeners() -> Iterator[list[Any]]:
    listeners = [bind("127.0.0.1:0"), bind("127.0.0.1:0")]
    yield listeners
    for listener in listeners:
        listener.close()


def test_tls_on_every_listener_by_default(pki: Pki, two_listeners: list[Any]) -> None:
    tls = TLS(str(pki.combined))
    mark_tls(two_listeners, config(certfile=str(pki.combined)), tls)
    assert [listener.tls for listener in two_listeners] == [tls, tls]
    assert all(url.startswith("https://127.0.0.1:") for url in (listener.url() for listener in two_listeners))


def test_tls_bind_names_a_listener_by_its_address(pki: Pki, two_listeners: list[Any]) -> None:
    port = two_listeners[1].address[1]
    built = config(certfile=str(pki.combined), bind=["127.0.0.1:0"], tls_bind=[f"127.0.0.1:{port}"])
    mark_tls(two_listeners, built, TLS(str(pki.combined)))
    assert [listener.scheme for listener in two_listeners] == ["http", "https"]


def test_tls_bind_that_names_no_listener(pki: Pki, two_listeners: list[Any]) -> None:
    built = config(certfile=str(pki.combined), tls_bind=["fd://secure"])
    with pytest.raises(ConfigError, match=r"--tls-bind fd://secure names none of the listeners"):
        mark_tls(two_listeners, built, TLS(str(pki.combined)))


def test_tls_bind_names_a_systemd_socket_by_its_name(pki: Pki) -> None:
    listeners = [
        Listener(socket.create_server(("127.0.0.1", 0)), "systemd:web", name="web"),
        Listener(socket.create_server(("127.0.0.1", 0)), "systemd:secure", name="secure"),
    ]
    try:
        built = config(certfile=str(pki.combined), tls_bind=["fd://secure"])
        mark_tls(listeners, built, TLS(str(pki.combined)))
        assert [listener.scheme for listener in listeners] == ["http", "https"]
    finally:
        for listener in listeners:
            listener.close()


def test_a_reloaded_child_knows_its_listeners_by_the_addresses_the_parent_bound() -> None:
    """--reload hands the listeners to each child as FD=SPEC, so --tls-bind still names them."""
    import os

    parent = [bind("127.0.0.1:0"), Listener(socket.create_server(("127.0.0.1", 0)), "systemd:secure", name="secure")]
    try:
        value = inherited_fds_value(parent)
        assert value == ",".join(f"{listener.socket.fileno()}={listener.spec}" for listener in parent)
        duplicates = ",".join(f"{os.dup(listener.socket.fileno())}={listener.spec}" for listener in parent)
        children = bind_listeners([], env={INHERITED_FDS_ENV: duplicates})
        try:
            assert [(child.spec, child.name) for child in children] == [
                ("127.0.0.1:0", None),
                ("systemd:secure", "secure"),
            ]
            assert [child.address for child in children] == [listener.address for listener in parent]
        finally:
            for child in children:
                child.close()
    finally:
        for listener in parent:
            listener.close()


# -- sd_notify ----------------------------------------------------------------------------------


def test_notify_without_notify_socket() -> None:
    assert notify("READY=1", env={}) is False


def test_notify_to_an_abstract_name_and_a_path() -> None:
    name = f"anyserve-unit-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        assert notify("READY=1", env={"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(100) == b"READY=1"
    with tempfile.TemporaryDirectory(prefix="as-") as directory:
        path = str(Path(directory) / "n")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(path)
            sock.settimeout(5)
            assert notify("STOPPING=1", env={"NOTIFY_SOCKET": path})
            assert sock.recv(100) == b"STOPPING=1"


def test_notify_to_nobody_warns_and_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    assert notify("READY=1", env={"NOTIFY_SOCKET": "@anyserve-nobody-listens-" + uuid.uuid4().hex}) is False
    assert "cannot notify the service manager" in caplog.text


# -- bad combinations, through the real command -------------------------------------------------


@pytest.fixture
def site(tmp_path: Path) -> Path:
    (tmp_path / "webapp.py").write_text(
        "def application(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [b'ok']\n"
    )
    (tmp_path / "not-a-cert.pem").write_text("hello\n")
    return tmp_path


def test_tls_on_a_server_without_it(site: Path, pki: Pki) -> None:
    result = run("-s", "waitress", "-b", "127.0.0.1:0", "--certfile", str(pki.cert), "webapp", cwd=site)
    assert_error(result, EXIT_USAGE, "waitress cannot serve TLS; use -s cheroot, -s gunicorn")


def test_tls_mix_on_a_server_that_cannot(site: Path, pki: Pki) -> None:
    args = ["-s", "gunicorn", "-b", "127.0.0.1:0", "--tls-bind", "127.0.0.1:1", "--certfile", str(pki.combined)]
    assert_error(run(*args, "webapp", cwd=site), EXIT_USAGE, "gunicorn serves TLS on all its listeners or on none")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--keyfile", "{key}"], "--keyfile needs --certfile: give the certificate that goes with the key"),
        (["--certfile", "missing.pem"], "--certfile missing.pem does not exist"),
        (["--certfile", "."], "cannot read --certfile .: Is a directory"),
        (["--certfile", "not-a-cert.pem"], "--certfile not-a-cert.pem is not a PEM certificate"),
        (["--certfile", "{cert}"], "--certfile {cert} holds no private key; give the key with --keyfile"),
        (["--certfile", "{cert}", "--keyfile", "{cert}"], "--keyfile {cert} is not a PEM private key"),
        (["--certfile", "{cert}", "--keyfile", "{other_key}"], "the key in {other_key} does not belong to"),
        (["--certfile", "{cert}", "--keyfile", "{encrypted_key}"], "is encrypted; give its password with"),
        (
            ["--certfile", "{cert}", "--keyfile", "{encrypted_key}", "--keyfile-password", "wrong"],
            "wrong --keyfile-password: it does not decrypt the key in {encrypted_key}",
        ),
        (["--certfile", "{combined}", "--ca-certs", "not-a-cert.pem"], "--ca-certs not-a-cert.pem holds no PEM"),
        (["--ssl-adhoc", "--certfile", "{cert}"], "--ssl-adhoc cannot be combined with --certfile"),
        (["--certfile", "{combined}", "--cert-reqs", "required"], "--cert-reqs required needs --ca-certs"),
        (["--tls-bind", "127.0.0.1:0"], "--tls-bind needs a certificate"),
        (["--certfile", "{combined}", "--tls-bind", "fd://secure"], "--tls-bind fd://secure names none"),
    ],
)
def test_bad_tls_input(site: Path, pki: Pki, args: list[str], fragment: str) -> None:
    paths = {name: str(getattr(pki, name)) for name in ("cert", "key", "combined", "encrypted_key", "other_key")}
    result = run("-s", "cheroot", "-b", "127.0.0.1:0", *(arg.format(**paths) for arg in args), "webapp", cwd=site)
    assert_error(result, EXIT_USAGE, fragment.format(**paths))


def test_serving_from_python_with_tls_on_one_of_two_listeners(pki: Pki) -> None:
    import http.client

    import anyserve

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [environ["wsgi.url_scheme"].encode()]

    port = _free_port()
    options = {"certfile": str(pki.combined), "bind": ["127.0.0.1:0"], "tls_bind": [f"127.0.0.1:{port}"]}
    with anyserve.serving(app, server="cheroot", **options) as server:
        plain, secure = server.urls
        assert (plain.startswith("http://"), secure) == (True, f"https://127.0.0.1:{port}")
        for url, conn in (
            (plain, http.client.HTTPConnection("127.0.0.1", int(plain.rsplit(":", 1)[1]), timeout=10)),
            (secure, http.client.HTTPSConnection("127.0.0.1", port, context=pki.client_context(), timeout=10)),
        ):
            try:
                conn.request("GET", "/")
                assert conn.getresponse().read().decode() == url.split(":", 1)[0]
            finally:
                conn.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_tls_options_in_a_toml_file(site: Path, pki: Pki) -> None:
    port = free_port()  # check binds the listeners (and releases them)
    (site / "anyserve.toml").write_text(
        f'app = "webapp"\nserver = "cheroot"\nbind = ["127.0.0.1:0"]\ncertfile = "{pki.cert}"\n'
        f'keyfile = "{pki.key}"\nca_certs = "{pki.ca}"\ncert_reqs = "optional"\ntls_bind = ["127.0.0.1:{port}"]\n'
    )
    result = run("check", "-c", "anyserve.toml", cwd=site)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert f"tls: {pki.cert} on https://127.0.0.1:{port}; client certificates: optional" in lines
    assert ["listen: http://127.0.0.1:0 (a free port, picked at start)", f"listen: https://127.0.0.1:{port}"] == [
        line for line in lines if line.startswith("listen: ")
    ]


def test_check_refuses_a_bad_certificate(site: Path) -> None:
    result = run("check", "-p", "0", "--certfile", "not-a-cert.pem", "webapp", cwd=site)
    assert_error(result, EXIT_USAGE, "not a PEM certificate")
