"""Certificates for the embedded server's mutual TLS (docs/security.md). The CA's private key is never
written: once issued, nothing can sign another certificate this server trusts."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import secrets
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = dt.timedelta(days=3650)
RENEW_BEFORE = dt.timedelta(days=30)


def files(folder: Path) -> dict[str, Path]:
    """ca (both sides verify with it); cert, key: the server's; client: certificate and key in one PEM."""
    return {"ca": folder / "ca.pem", "cert": folder / "server.pem", "key": folder / "server.key",
            "client": folder / "client.pem"}


def ensure(folder: Path) -> dict[str, Path]:
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    paths = files(folder)
    if not all(_valid(paths[name]) for name in ("ca", "cert", "client")) or not paths["key"].exists():
        _issue(paths)
    return paths


def _valid(path: Path) -> bool:
    try:
        expires = x509.load_pem_x509_certificate(path.read_bytes()).not_valid_after_utc
    except (FileNotFoundError, ValueError):
        return False
    return expires - dt.datetime.now(dt.UTC) > RENEW_BEFORE


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "healthcare-assets"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(subject: x509.Name, key, issuer: x509.Name, issuer_key, *, usage=None, names=()):
    """A CA certificate when `usage` is None, otherwise a leaf for that extended key usage."""
    now = dt.datetime.now(dt.UTC)
    ca = usage is None
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + VALIDITY)
               .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=not ca, content_commitment=False,
                                            key_encipherment=False, data_encipherment=False,
                                            key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                                            encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                              critical=False))
    if not ca:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _issue(paths: dict[str, Path]) -> None:
    pem = serialization.Encoding.PEM
    ca_key, server_key, client_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca_name = _name(f"healthcare-assets local CA {secrets.token_hex(4)}")  # one per installation
    ca = _certificate(ca_name, ca_key, ca_name, ca_key)
    server = _certificate(_name("127.0.0.1"), server_key, ca_name, ca_key,
                          usage=ExtendedKeyUsageOID.SERVER_AUTH,
                          names=(x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")))
    client = _certificate(_name("healthcare-assets client"), client_key, ca_name, ca_key,
                          usage=ExtendedKeyUsageOID.CLIENT_AUTH)

    def private(key) -> bytes:
        return key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())

    paths["ca"].unlink(missing_ok=True)  # written last: a set cut short is issued again
    _write(paths["key"], private(server_key))
    _write(paths["client"], client.public_bytes(pem) + private(client_key))
    _write(paths["cert"], server.public_bytes(pem))
    _write(paths["ca"], ca.public_bytes(pem))


def _write(path: Path, data: bytes) -> None:
    """Created 0600, never readable by others even for a moment (the umask does not matter)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        os.fchmod(out.fileno(), 0o600)  # a file an older run left with other bits
        out.write(data)
