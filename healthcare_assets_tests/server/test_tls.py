"""TLS for the embedded server: mutual by default, with certificates issued into the data
directory; HEALTHCARE_MONGO_TLS_* files of your own instead (the fixture makes a set elsewhere)."""

import stat
from urllib.parse import quote_plus

import pymongo
import pytest

from healthcare_assets.domain import local_server
from healthcare_assets.plumbing import certificates, embedded_mongo

KINDS = ("CERT", "KEY", "CA", "CLIENT")


def ping(uri: str) -> float:
    with pymongo.MongoClient(uri, serverSelectionTimeoutMS=2000) as client:
        return client.admin.command("ping")["ok"]


def refused_in_the_handshake(tls_data_dir, uri: str, reason: str) -> None:
    """The connection fails, and the server's log says its TLS handshake failed for `reason`:
    not a wrong port, a dead server or a password (those fail differently)."""
    log = tls_data_dir / "mongo.log"
    seen = log.stat().st_size
    with pytest.raises(pymongo.errors.ServerSelectionTimeoutError):
        ping(uri)
    with open(log, "rb") as f:
        f.seek(seen)
        logged = f.read().decode(errors="replace")
    assert "TLS handshake from ('127.0.0.1'" in logged and reason in logged, logged[-2000:]


def without_client_certificate(uri: str, client_file) -> str:
    option = f"&tlsCertificateKeyFile={quote_plus(str(client_file))}"
    assert option in uri
    return uri.replace(option, "")


@pytest.fixture
def tls_data_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("MONGODB_URI", raising=False)
    for kind in KINDS:
        monkeypatch.delenv(f"HEALTHCARE_MONGO_TLS_{kind}_FILE", raising=False)
    yield tmp_path / "data"
    embedded_mongo.stop(tmp_path / "data")


@pytest.fixture
def tls_files(tls_data_dir, tmp_path, monkeypatch):
    """A CA, server and client certificate of your own, outside the data directory; the server's
    and the CA are set (the client's is for the test to set)."""
    files = certificates.ensure(tmp_path / "own")  # after data_dir, which clears the variables
    for kind in ("CERT", "KEY", "CA"):
        monkeypatch.setenv(f"HEALTHCARE_MONGO_TLS_{kind}_FILE", str(files[kind.lower()]))
    return files


def test_mutual_tls_by_default(tls_data_dir, tmp_path, monkeypatch):
    local_server.ensure_running(tls_data_dir)
    state = embedded_mongo.status(tls_data_dir)
    assert state["tls"] is True and state["mutual_tls"] is True and state["auth"] is True
    folder = tls_data_dir / "tls"
    assert {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in folder.iterdir()} == dict.fromkeys(
        ["ca.pem", "client.pem", "server.key", "server.pem"], "0o600")
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700

    uri = local_server.client_uri(tls_data_dir)  # the admin's password and the client certificate
    assert ping(uri) == 1
    # the right password is not enough: no client certificate, or one another CA issued, is refused
    refused_in_the_handshake(tls_data_dir, without_client_certificate(uri, folder / "client.pem"),
                             "peer did not return a certificate")
    stranger = certificates.ensure(tmp_path / "stranger")
    refused_in_the_handshake(tls_data_dir, uri.replace(quote_plus(str(folder / "client.pem")), quote_plus(str(stranger["client"]))),
                             "certificate verify failed")
    refused_in_the_handshake(tls_data_dir, f"mongodb://127.0.0.1:{state['port']}/?directConnection=true",
                             "wrong version number")  # plain TCP to a TLS port

    # another process with other TLS settings is told to stop the server, not left unable to connect
    for kind in ("CERT", "KEY", "CA"):
        monkeypatch.setenv(f"HEALTHCARE_MONGO_TLS_{kind}_FILE", str(stranger[kind.lower()]))
    with pytest.raises(embedded_mongo.EmbeddedMongoError, match="other TLS files.*mongo stop"):
        local_server.ensure_running(tls_data_dir)


def test_files_of_your_own_for_server_tls(tls_files, tls_data_dir):
    local_server.ensure_running(tls_data_dir)
    state = embedded_mongo.status(tls_data_dir)
    assert state["tls"] is True and state["mutual_tls"] is False and state["auth"] is True
    assert not (tls_data_dir / "tls").exists()
    uri = local_server.client_uri(tls_data_dir)
    assert "tls=true" in uri and "tlsCertificateKeyFile" not in uri
    assert ping(uri) == 1
    refused_in_the_handshake(tls_data_dir, f"mongodb://127.0.0.1:{state['port']}/?directConnection=true",
                             "wrong version number")  # plain TCP to a TLS port
    # and the client verifies the server: without the CA that issued its certificate, no connection
    with pytest.raises(pymongo.errors.ServerSelectionTimeoutError, match="CERTIFICATE_VERIFY_FAILED"):
        ping(uri.replace(f"&tlsCAFile={quote_plus(str(tls_files['ca']))}", ""))


def test_files_of_your_own_for_mutual_tls(tls_files, tls_data_dir, monkeypatch):
    monkeypatch.setenv("HEALTHCARE_MONGO_TLS_CLIENT_FILE", str(tls_files["client"]))
    local_server.ensure_running(tls_data_dir)
    assert embedded_mongo.status(tls_data_dir)["mutual_tls"] is True
    uri = local_server.client_uri(tls_data_dir)
    assert ping(uri) == 1
    refused_in_the_handshake(tls_data_dir, without_client_certificate(uri, tls_files["client"]),
                             "peer did not return a certificate")
