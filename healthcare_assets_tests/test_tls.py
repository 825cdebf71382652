"""TLS for the embedded server: a test CA and server certificate made by the fixture."""

import datetime as dt
import ipaddress

import pymongo
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from healthcare_assets.resources import embedded_mongo


def _certificate(subject: str, key, issuer_key, issuer_name=None, ca=False):
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name or name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture
def tls_files(tmp_path, monkeypatch):
    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("healthcare-assets test CA", ca_key, ca_key, ca=True)
    server = _certificate("127.0.0.1", server_key, ca_key, issuer_name=ca.subject)
    pem = serialization.Encoding.PEM
    files = {"ca": tmp_path / "ca.pem", "cert": tmp_path / "server.pem", "key": tmp_path / "server.key"}
    files["ca"].write_bytes(ca.public_bytes(pem))
    files["cert"].write_bytes(server.public_bytes(pem))
    files["key"].write_bytes(server_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    for kind, path in files.items():
        monkeypatch.setenv(f"HEALTHCARE_MONGO_TLS_{kind.upper()}_FILE", str(path))
    return files


def test_embedded_server_speaks_tls(tls_files, tmp_path, monkeypatch):
    monkeypatch.delenv("MONGODB_URI", raising=False)
    data_dir = tmp_path / "data"
    try:
        embedded_mongo.ensure_running(data_dir)
        state = embedded_mongo.status(data_dir)
        assert state["tls"] is True and state["auth"] is True
        uri = embedded_mongo.client_uri(data_dir)
        assert "tls=true" in uri
        assert pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000).admin.command("ping")["ok"] == 1
        plain = f"mongodb://127.0.0.1:{state['port']}/?directConnection=true"
        with pytest.raises(pymongo.errors.PyMongoError):
            pymongo.MongoClient(plain, serverSelectionTimeoutMS=1500).admin.command("ping")
    finally:
        embedded_mongo.stop(data_dir)
