"""The zero-infrastructure default: one embedded daemon per data folder, found again, stopped."""

import os
import subprocess
import sys
import traceback
from concurrent.futures import ThreadPoolExecutor

import psutil
import pymongo
import pytest

from healthcare_assets.defs.resources import mongo_resource_from_env
from healthcare_assets.domain import access, local_server
from healthcare_assets.plumbing import certificates, embedded_mongo, secrets_file
from healthcare_assets.plumbing.mongo import (
    UNPARSED,
    MongoUnreachableError,
    connect,
    redact,
)


def daemons_on(storage) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if "secantus" in " ".join(cmdline) and str(storage) in cmdline:
            found.append(proc)
    return found


def cli(*args, env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "healthcare_assets.tooling.cli", *args], check=False, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def own_data_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("MONGODB_URI", raising=False)
    monkeypatch.setenv("HEALTHCARE_DATA_DIR", str(tmp_path))
    yield tmp_path
    embedded_mongo.stop(tmp_path)


def test_started_once_then_reused_then_stopped(own_data_dir):
    uri = local_server.ensure_running(own_data_dir)
    state = embedded_mongo.status(own_data_dir)
    assert local_server.ensure_running(own_data_dir) == uri
    assert embedded_mongo.status(own_data_dir)["pid"] == state["pid"]
    assert len(daemons_on(own_data_dir / "mongo")) == 1
    pymongo.MongoClient(local_server.client_uri(own_data_dir)).t.c.insert_one({"x": 1})

    assert embedded_mongo.stop(own_data_dir)["pid"] == state["pid"]
    assert embedded_mongo.status(own_data_dir) is None
    assert daemons_on(own_data_dir / "mongo") == []

    # storage (and the users) survive a restart
    local_server.ensure_running(own_data_dir)
    assert pymongo.MongoClient(local_server.client_uri(own_data_dir)).t.c.count_documents({"x": 1}) == 1


def test_authentication_is_on_after_the_first_start(own_data_dir):
    uri = local_server.ensure_running(own_data_dir)
    assert embedded_mongo.status(own_data_dir)["auth"] is True
    with pytest.raises(pymongo.errors.OperationFailure, match="requires authentication"):
        pymongo.MongoClient(uri).healthcare_db.hospitalizations.find_one()
    wrong = uri.replace("mongodb://", "mongodb://admin_master:wrong@") + "&authSource=admin"
    with pytest.raises(pymongo.errors.OperationFailure, match="authentication failed"):
        pymongo.MongoClient(wrong).healthcare_db.hospitalizations.find_one()
    secrets_file = own_data_dir / "secrets.env"
    assert oct(secrets_file.stat().st_mode & 0o777) == "0o600"
    assert "HEALTHCARE_ADMIN_MASTER_PASSWORD=" in secrets_file.read_text()


@pytest.mark.slow
def test_concurrent_starts_make_one_daemon(own_data_dir):
    env = {**os.environ, "HEALTHCARE_DATA_DIR": str(own_data_dir)}
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: cli("mongo", "start", env=env), range(4)))
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    assert len({r.stdout.strip() for r in results}) == 1
    assert len(daemons_on(own_data_dir / "mongo")) == 1


@pytest.mark.slow
def test_cli_status_start_uri_stop(own_data_dir):
    """Only `mongo start` starts the server: status and uri read (exit 10 with no database or none running)."""
    env = {**os.environ, "HEALTHCARE_DATA_DIR": str(own_data_dir)}
    assert cli("mongo", "status", env=env).returncode == 10
    assert cli("mongo", "uri", env=env).returncode == 10
    assert not embedded_mongo.paths(own_data_dir)["storage"].exists()
    started = cli("mongo", "start", env=env).stdout.strip()
    uri = cli("mongo", "uri", env=env).stdout.strip()
    assert uri == started and uri.startswith("mongodb://127.0.0.1:")
    assert '"pid"' in cli("mongo", "status", env=env).stdout
    assert "stopped pid" in cli("mongo", "stop", env=env).stdout
    assert cli("mongo", "status", env=env).returncode == 3
    stopped = cli("mongo", "uri", env=env)
    assert stopped.returncode == 10 and "is not running" in stopped.stderr and stopped.stdout == ""


def test_a_dead_daemon_is_replaced(own_data_dir):
    local_server.ensure_running(own_data_dir)
    old = embedded_mongo.status(own_data_dir)
    psutil.Process(old["pid"]).kill()
    psutil.Process(old["pid"]).wait(10)
    local_server.ensure_running(own_data_dir)
    assert embedded_mongo.status(own_data_dir)["pid"] != old["pid"]
    assert pymongo.MongoClient(local_server.client_uri(own_data_dir)).admin.command("ping")["ok"] == 1


def test_resource_uses_embedded_server_without_uri(own_data_dir):
    resource = mongo_resource_from_env(database="resource_test")
    resource.hospitalizations().insert_one({"_id": "a"})
    assert embedded_mongo.status(own_data_dir) is not None
    assert "embedded" in resource.server_label()


def test_roles_are_provisioned_and_checked_for_the_resources_database(own_data_dir):
    """The first start grants on the resource's database; a fresh start for another one is refused, naming it."""
    mongo_resource_from_env(database="first_db").db().command("ping")
    with pymongo.MongoClient(local_server.client_uri(own_data_dir)) as admin:
        inherited = admin.admin.command("rolesInfo", "DATA_ENGINEER")["roles"][0]["roles"]
    assert {"role": "readWrite", "db": "first_db"} in inherited
    embedded_mongo.stop(own_data_dir)
    with pytest.raises(embedded_mongo.EmbeddedMongoError,
                       match=r"lacks readWrite@second_db.*second_db\.hospitalizations now"):
        mongo_resource_from_env(database="second_db").db()
    assert daemons_on(own_data_dir / "mongo") == []


def test_unreachable_server_gives_a_clear_error():
    with pytest.raises(MongoUnreachableError, match=r"cannot reach MongoDB at 127\.0\.0\.1:9: .*MONGODB_URI"):
        connect("mongodb://user:secret@127.0.0.1:9/?serverSelectionTimeoutMS=300")


def test_unreachable_error_never_shows_the_password():
    with pytest.raises(MongoUnreachableError) as error:
        connect("mongodb://user:s3cr3t@127.0.0.1:9/?serverSelectionTimeoutMS=300")
    assert "s3cr3t" not in str(error.value)


def test_a_user_added_while_auth_is_off_is_refused(own_data_dir, monkeypatch):
    provision = access.provision

    def provision_and_intrude(client, role_passwords, *names):
        done = provision(client, role_passwords, *names)
        # another local process, in the window of the first start without authentication
        client.admin.command("createUser", "intruder", pwd="x", roles=[{"role": "root", "db": "admin"}])
        return done

    monkeypatch.setattr(access, "provision", provision_and_intrude)
    with pytest.raises(embedded_mongo.EmbeddedMongoError, match=r"not exactly the roles.*intruder@admin"):
        local_server.ensure_running(own_data_dir)
    assert embedded_mongo.status(own_data_dir) is None and daemons_on(own_data_dir / "mongo") == []
    with pytest.raises(embedded_mongo.EmbeddedMongoError, match="intruder@admin"):  # and at every start
        local_server.ensure_running(own_data_dir)


def test_a_user_of_another_database_is_refused_at_the_next_start(own_data_dir):
    local_server.ensure_running(own_data_dir)
    admin = pymongo.MongoClient(local_server.client_uri(own_data_dir))
    admin.other.command("createUser", "intruder", pwd="x", roles=[{"role": "root", "db": "admin"}])
    embedded_mongo.stop(own_data_dir)
    with pytest.raises(embedded_mongo.EmbeddedMongoError, match="intruder@other"):
        local_server.ensure_running(own_data_dir)
    assert daemons_on(own_data_dir / "mongo") == []


# Another local user in the first start's window: with TLS files of your own but no client
# certificate, the port takes anyone who can read the CA, and no user exists yet.
TAMPERING = {
    "analyst_given_root": (("grantRolesToRole", "ANALYST_READONLY"), {"roles": [{"role": "root", "db": "admin"}]},
                           r"role ANALYST_READONLY: .*inherits root@admin"),
    "analyst_given_the_raw_database": (
        ("grantPrivilegesToRole", "ANALYST_READONLY"),
        {"privileges": [{"resource": {"db": "healthcare_db", "collection": ""}, "actions": ["find"]}]},
        r"role ANALYST_READONLY: may find on healthcare_db\.\*"),
    "data_engineer_loses_a_role": (("revokeRolesFromRole", "DATA_ENGINEER"),
                                   {"roles": [{"role": "dbAdmin", "db": "healthcare_db"}]},
                                   r"role DATA_ENGINEER: .*lacks dbAdmin@healthcare_db"),
    "analyst_password_changed": (("updateUser", "analyst_readonly"), {"pwd": "the-intruders-password"},
                                 r"user analyst_readonly: .*HEALTHCARE_ANALYST_READONLY_PASSWORD.* does not authenticate"),
}


@pytest.mark.parametrize("tampering", sorted(TAMPERING))
def test_roles_or_passwords_changed_while_auth_is_off_are_refused(tampering, own_data_dir, tmp_path, monkeypatch):
    for r in access.roles():
        monkeypatch.delenv(r.password_variable, raising=False)
    own = certificates.ensure(tmp_path / "own")
    for kind in ("CERT", "KEY", "CA"):
        monkeypatch.setenv(f"HEALTHCARE_MONGO_TLS_{kind}_FILE", str(own[kind.lower()]))
    monkeypatch.delenv("HEALTHCARE_MONGO_TLS_CLIENT_FILE", raising=False)
    (command, target), arguments, expected = TAMPERING[tampering]
    provision = access.provision

    def provision_then_tamper(client, role_passwords, *args, **kwargs):
        done = provision(client, role_passwords, *args, **kwargs)
        host, port = client.address
        with pymongo.MongoClient(f"mongodb://{host}:{port}/?directConnection=true&tls=true&tlsCAFile={own['ca']}",
                                 serverSelectionTimeoutMS=5000) as stranger:  # no certificate, no password
            stranger.admin.command(command, target, **arguments)
        return done

    monkeypatch.setattr(access, "provision", provision_then_tamper)
    with pytest.raises(embedded_mongo.EmbeddedMongoError, match=expected) as refused:
        local_server.ensure_running(own_data_dir)
    assert embedded_mongo.status(own_data_dir) is None and daemons_on(own_data_dir / "mongo") == []
    message = str(refused.value)
    assert "the-intruders-password" not in message
    assert not [v for v in secrets_file.read(own_data_dir).values() if v in message]  # no stored secret
    monkeypatch.setattr(access, "provision", provision)
    with pytest.raises(embedded_mongo.EmbeddedMongoError, match=expected):  # and at every start
        local_server.ensure_running(own_data_dir)
    assert daemons_on(own_data_dir / "mongo") == []


@pytest.mark.parametrize("uri, label", [
    ("mongodb://admin_master:S3cret#pw@db:27017/", "db:27017"),
    ("mongodb://admin_master:S3cret%3Fpw%2F@db:27017/healthcare_db?authSource=admin", "db:27017"),
    ("mongodb://admin_master:S3c%40ret%23pw@db1:27017,db2:27018/?replicaSet=rs0", "db1:27017,db2:27018"),
    ("mongodb://admin_master:S3c@ret#pw@db:27017/", "db:27017"),  # an unescaped '@': the last one counts
    ("mongodb+srv://admin_master:S3cret%23pw@cluster0.example.net/?retryWrites=true", "cluster0.example.net (SRV)"),
    ("mongodb://127.0.0.1:27017/?directConnection=true", "127.0.0.1:27017"),
    ("mongodb://db", "db:27017"),
    ("mongodb://admin_master:S3cret?pw@db:27017/", UNPARSED),  # unescaped '?' and '/' cut the URI early
    ("mongodb://admin_master:S3cret/pw@db:27017/", UNPARSED),
    ("mongodb://admin_master:12/pw@db/", UNPARSED),  # would read as host admin_master, port 12
    ("postgresql://admin_master:S3cret@db/", UNPARSED),
])
def test_server_labels_never_carry_credentials(uri, label):
    assert redact(uri) == label
    assert not [part for part in ("admin_master", "S3c", "ret", "pw") if part in label]


@pytest.mark.parametrize("uri", [
    "mongodb://admin_master:S3cret#pw@127.0.0.1:9/?serverSelectionTimeoutMS=300",
    "mongodb://admin_master:S3cret?pw@127.0.0.1:9/",
    "mongodb://admin_master:S3cret:pw@127.0.0.1:9/?serverSelectionTimeoutMS=300",
])
def test_connection_errors_never_show_a_password(uri):
    with pytest.raises(MongoUnreachableError) as error:
        connect(uri)
    assert "S3cret" not in "".join(traceback.format_exception(error.value))
