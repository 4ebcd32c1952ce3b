"""A test PKI made with cryptography: a root CA, an intermediate CA, a server certificate for
localhost/127.0.0.1 issued by the intermediate (served with it, as a chain), a client certificate."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KEY_PASSWORD = "correct horse"


@dataclass(frozen=True)
class Pki:
    """Paths of the PEM files."""

    ca: Path  # the root CA certificate, trusted by clients and by the server for client certificates
    cert: Path  # the server certificate, then the intermediate CA's that issued it: a chain
    key: Path  # its key
    encrypted_key: Path  # the same key, encrypted with KEY_PASSWORD
    combined: Path  # certificate and key in one file
    client_cert: Path
    client_key: Path
    other_key: Path  # a key that does not belong to the server certificate

    def certificate_args(self) -> list[str]:
        """The options that serve the server certificate: --certfile and --keyfile."""
        return ["--certfile", str(self.cert), "--keyfile", str(self.key)]

    def client_context(self, with_certificate: bool = False) -> ssl.SSLContext:
        """A client context that verifies the server against the test CA."""
        context = ssl.create_default_context(cafile=str(self.ca))
        if with_certificate:
            context.load_cert_chain(str(self.client_cert), str(self.client_key))
        return context


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: Any, password: str | None = None) -> bytes:
    encryption = serialization.BestAvailableEncryption(password.encode()) if password else serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def _issue(subject: str, key: Any, ca_key: Any, ca_name: x509.Name, *, ca: bool = False, server: bool = False) -> Any:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        ).add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    if key is not ca_key:  # not self-signed
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    if server:
        san = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False).add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
    elif not ca:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def make_pki(directory: Path) -> Pki:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("anyserve test CA")
    ca_cert = _issue("anyserve test CA", ca_key, ca_key, ca_name, ca=True)
    intermediate_key = ec.generate_private_key(ec.SECP256R1())
    intermediate_name = _name("anyserve test intermediate CA")
    intermediate = _issue("anyserve test intermediate CA", intermediate_key, ca_key, ca_name, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = _issue("localhost", server_key, intermediate_key, intermediate_name, server=True)
    client_key = ec.generate_private_key(ec.SECP256R1())
    client_cert = _issue("anyserve test client", client_key, ca_key, ca_name)
    pem = serialization.Encoding.PEM
    files = {
        "ca": ca_cert.public_bytes(pem),
        "cert": server_cert.public_bytes(pem) + intermediate.public_bytes(pem),
        "key": _pem_key(server_key),
        "encrypted_key": _pem_key(server_key, KEY_PASSWORD),
        "combined": server_cert.public_bytes(pem) + intermediate.public_bytes(pem) + _pem_key(server_key),
        "client_cert": client_cert.public_bytes(pem),
        "client_key": _pem_key(client_key),
        "other_key": _pem_key(ec.generate_private_key(ec.SECP256R1())),
    }
    paths = {}
    for name, data in files.items():
        paths[name] = directory / f"{name}.pem"
        paths[name].write_bytes(data)
    return Pki(**paths)
