"""TLS: the certificate settings, checked before anything starts, and the contexts made of them.

A :class:`TLS` holds ``--certfile/--keyfile/--keyfile-password/--ca-certs/
--cert-reqs`` (or an ``--ssl-adhoc`` certificate); :func:`check_tls` builds an
``ssl.SSLContext`` once so that a bad certificate, key or password is refused
in one line. The plan (``anyserve.plan``) makes it from the Config and puts it
on the listeners that serve TLS; each adapter maps ``listener.tls`` into its
server's own TLS support, most through :meth:`TLS.context`.

``ssl`` is imported inside the functions: gevent and eventlet must patch it
before anyone imports it.
"""

from __future__ import annotations

import atexit
import datetime
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, install_hint

if TYPE_CHECKING:
    import ssl

log = logging.getLogger("anyserve.tls")

#: The oldest protocol version served unless the server's own settings say otherwise.
MINIMUM_VERSION = "TLSv1_2"


@dataclass(frozen=True)
class TLS:
    """Where the certificate and key are, and how clients are verified."""

    certfile: str
    keyfile: str | None = None
    password: str | None = None
    ca_certs: str | None = None
    cert_reqs: str = "none"  # none | optional | required
    adhoc: bool = False

    @property
    def verify_mode(self) -> ssl.VerifyMode:
        import ssl

        return {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}[self.cert_reqs]

    def context(self, context_class: type[ssl.SSLContext] | None = None) -> ssl.SSLContext:
        """A server-side context; *context_class* for a green one (gevent's, eventlet's)."""
        import ssl

        context = (context_class or ssl.SSLContext)(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = getattr(ssl.TLSVersion, MINIMUM_VERSION)
        context.options |= ssl.OP_NO_COMPRESSION
        # An encrypted key without a password would make OpenSSL prompt on the terminal.
        password = self.password
        context.load_cert_chain(self.certfile, self.keyfile, password=lambda: password or "")
        if self.ca_certs:
            context.load_verify_locations(self.ca_certs)
        context.verify_mode = self.verify_mode
        return context

    def openssl_context(self) -> Any:
        """The same settings as a pyOpenSSL ``SSL.Context`` (for Twisted)."""
        from cryptography.hazmat.primitives.serialization import load_pem_private_key
        from OpenSSL import SSL

        context = SSL.Context(SSL.TLS_SERVER_METHOD)
        context.set_min_proto_version(SSL.TLS1_2_VERSION)
        context.set_options(SSL.OP_NO_COMPRESSION)
        context.use_certificate_chain_file(self.certfile)
        with open(self.keyfile or self.certfile, "rb") as fh:
            pem = fh.read()
        password = self.password.encode() if self.password else None
        context.use_privatekey(load_pem_private_key(pem, password))
        context.check_privatekey()
        if self.ca_certs:
            context.load_verify_locations(self.ca_certs)
        mode = {
            "none": SSL.VERIFY_NONE,
            "optional": SSL.VERIFY_PEER,
            "required": SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT,
        }[self.cert_reqs]
        context.set_verify(mode, lambda connection, x509, errno, depth, ok: bool(ok))
        return context


def check_tls(tls: TLS) -> None:
    """Refuse, in one line each, what would make every TLS handshake fail."""
    import ssl

    cert = _read("--certfile", tls.certfile)
    if b"-----BEGIN CERTIFICATE-----" not in cert:
        raise ConfigError(f"--certfile {tls.certfile} is not a PEM certificate (no BEGIN CERTIFICATE line)")
    key_option, key_path = ("--keyfile", tls.keyfile) if tls.keyfile else ("--certfile", tls.certfile)
    key = _read(key_option, key_path) if tls.keyfile else cert
    if b"PRIVATE KEY-----" not in key:
        if tls.keyfile:
            raise ConfigError(f"--keyfile {key_path} is not a PEM private key (no BEGIN PRIVATE KEY line)")
        raise ConfigError(f"--certfile {key_path} holds no private key; give the key with --keyfile")
    encrypted = b"ENCRYPTED" in key
    if tls.ca_certs:
        ca = _read("--ca-certs", tls.ca_certs)
        if b"-----BEGIN CERTIFICATE-----" not in ca:
            raise ConfigError(f"--ca-certs {tls.ca_certs} holds no PEM certificate (no BEGIN CERTIFICATE line)")
    try:
        tls.context()
    except ssl.SSLError as exc:
        text = str(exc)
        if encrypted and tls.password is None:
            message = f"the key in {key_path} is encrypted; give its password with --keyfile-password"
        elif encrypted:
            message = f"wrong --keyfile-password: it does not decrypt the key in {key_path}"
        elif "KEY_VALUES_MISMATCH" in text or "key values mismatch" in text:
            message = f"the key in {key_path} does not belong to the certificate in {tls.certfile}"
        else:
            message = f"cannot use the certificate {tls.certfile} with the key in {key_path}: {exc.reason or text}"
        raise ConfigError(message) from None


def _read(option: str, path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        raise ConfigError(f"{option} {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {option} {path}: {exc.strerror}") from None


def handshake_failure(peer: Any, exc: BaseException) -> str:
    """The one line a failed TLS handshake is worth (a client speaking plain HTTP,
    one that does not trust the certificate ...): no traceback."""
    if isinstance(peer, tuple) and peer:
        peer = peer[0]
    reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
    return f"TLS handshake with {peer or 'a unix socket peer'} failed: {reason}"


def make_adhoc_certificate(directory: str | None = None) -> tuple[str, str]:
    """Write a self-signed certificate for localhost and its key; return their paths.

    Made in a new private directory, removed when the process that made it exits."""
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        raise ConfigError(f"--ssl-adhoc needs the cryptography library: {install_hint('tls')}") from None
    import ipaddress

    if directory is None:
        directory = tempfile.mkdtemp(prefix="anyserve-adhoc-")
        maker = os.getpid()
        atexit.register(lambda: os.getpid() == maker and shutil.rmtree(directory, ignore_errors=True))
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    certfile = os.path.join(directory, "adhoc-cert.pem")
    keyfile = os.path.join(directory, "adhoc-key.pem")
    with open(certfile, "wb") as fh:
        fh.write(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(keyfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return certfile, keyfile
