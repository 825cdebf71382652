"""Passwords that differ from the ones a server has: applied when they can be (the embedded
server, `provision-access`), otherwise refused with a message naming the user and where the
password came from; a refused password is never retried. And the trap end to end: a `.env`
copied from .env.example in the working directory of `dagster asset materialize`."""

import logging
import os
import secrets
import subprocess
import sys
from urllib.parse import urlsplit

import dagster as dg
import pymongo
import pytest

from healthcare_assets.defs.resources import mongo_resource_from_env
from healthcare_assets.domain import access, local_server
from healthcare_assets.domain.audit import AUDIT_COLLECTION
from healthcare_assets.plumbing import embedded_mongo, secrets_file
from healthcare_assets.plumbing.credentials import AuthenticationRefusedError
from healthcare_assets.plumbing.mongo import with_credentials
from healthcare_assets.tooling.generate import generate_csv
from healthcare_assets_tests.fixtures.environment import REPO, passwords_now
from healthcare_assets_tests.fixtures.runs import materialize

ADMIN, ANALYST = "HEALTHCARE_ADMIN_MASTER_PASSWORD", "HEALTHCARE_ANALYST_READONLY_PASSWORD"
PASSWORD_VARIABLES = [f"HEALTHCARE_{r}_PASSWORD" for r in
                      ("ADMIN_MASTER", "DATA_ENGINEER", "BACKEND_API", "ANALYST_READONLY", "DOCTOR_APP")]


def accepted(data_dir, user: str, password: str) -> bool:
    port = embedded_mongo.status(data_dir)["port"]
    with pymongo.MongoClient(embedded_mongo.uri_for(port, user, password, data_dir),
                             serverSelectionTimeoutMS=5000) as client:
        try:
            client.admin.command("ping")
            return True
        except pymongo.errors.OperationFailure as exc:
            assert exc.code == 18, exc
            return False


@pytest.fixture
def provisioned_server_dir(tmp_path, monkeypatch):
    """A provisioned embedded server of its own, its passwords generated into secrets.env."""
    monkeypatch.delenv("MONGODB_URI", raising=False)
    for variable in PASSWORD_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    data_dir = tmp_path / "data"
    monkeypatch.setenv("HEALTHCARE_DATA_DIR", str(data_dir))
    try:
        local_server.ensure_running(data_dir)
        yield data_dir
    finally:
        embedded_mongo.stop(data_dir)


def test_a_password_in_the_environment_that_differs_is_applied_to_the_embedded_server(provisioned_server_dir, monkeypatch, caplog):
    generated = secrets_file.read(provisioned_server_dir)
    caplog.set_level(logging.WARNING, logger=local_server.__name__)
    # the same passwords in the environment as in secrets.env: nothing to apply, nothing logged
    monkeypatch.setenv(ADMIN, generated[ADMIN])
    local_server.ensure_running(provisioned_server_dir, passwords_now())
    assert caplog.records == []

    # different ones, on the running server and then at a start
    for new_admin, new_analyst in (("rotated-admin-1", "rotated-analyst-1"), ("rotated-admin-2", "rotated-analyst-2")):
        monkeypatch.setenv(ADMIN, new_admin)
        monkeypatch.setenv(ANALYST, new_analyst)
        caplog.clear()
        mongo_resource_from_env().db().command("ping")  # through the resource, as a run connects
        assert accepted(provisioned_server_dir, "admin_master", new_admin) and accepted(provisioned_server_dir, "analyst_readonly", new_analyst)
        assert not accepted(provisioned_server_dir, "admin_master", generated[ADMIN])
        assert {k: v for k, v in secrets_file.read(provisioned_server_dir).items() if k in (ADMIN, ANALYST)} == {
            ADMIN: new_admin, ANALYST: new_analyst}
        logged = caplog.text
        assert f"user analyst_readonly now has the password of the environment variable {ANALYST}" in logged
        assert f"user admin_master now has the password of the environment variable {ADMIN}" in logged
        assert new_admin not in logged and new_analyst not in logged
        embedded_mongo.stop(provisioned_server_dir)

    # the variables gone, secrets.env still holds what the server has
    monkeypatch.delenv(ADMIN)
    monkeypatch.delenv(ANALYST)
    assert mongo_resource_from_env().db().command("ping")["ok"] == 1


def test_a_password_that_cannot_be_applied_is_refused_with_its_user_and_origin(provisioned_server_dir, monkeypatch, tmp_path):
    # secrets.env no longer holds the server's admin password: a new one cannot be applied with it
    secrets_file.store({ADMIN: "not-what-the-server-has"}, provisioned_server_dir)
    monkeypatch.setenv(ADMIN, "another-admin-password")
    with pytest.raises(AuthenticationRefusedError) as refused:
        mongo_resource_from_env().db()
    message = str(refused.value)
    assert "refused the password of user 'admin_master'" in message and "cannot reach" not in message
    assert f"came from the environment variable {ADMIN}" in message and str(provisioned_server_dir / "secrets.env") in message
    assert "another-admin-password" not in message and "not-what-the-server-has" not in message

    # the same variable from a .env in the working directory says so
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / ".env").write_text(f"{ADMIN}=another-admin-password\n")
    monkeypatch.chdir(checkout)
    with pytest.raises(AuthenticationRefusedError, match=rf"came from {ADMIN} in {checkout / '.env'} \(Dagster loads"):
        mongo_resource_from_env().db()

    # MONGODB_URI (production) with a wrong password
    monkeypatch.delenv(ADMIN)
    wrong = with_credentials(local_server.client_uri(provisioned_server_dir), "admin_master", "wrong-production-password")
    monkeypatch.setenv("MONGODB_URI", wrong)
    with pytest.raises(AuthenticationRefusedError) as refused:
        mongo_resource_from_env().db()
    message = str(refused.value)
    assert "user 'admin_master'" in message and "came from the environment variable MONGODB_URI" in message
    assert "wrong-production-password" not in message


def test_a_refused_password_fails_the_load_at_once(mongo_uri, data_dir, tmp_path, monkeypatch):
    """The load's RetryPolicy is for lost connections: a refused password is not retried."""
    source = generate_csv(rows=200, seed=2, out=tmp_path / "tiny.csv")["path"]
    monkeypatch.setenv("MONGODB_URI", with_credentials(mongo_uri, "admin_master", "not-the-password"))
    result = materialize(source, mongo_resource_from_env(database="never_written"))
    assert not result.success
    events = result.all_events
    assert [e for e in events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY] == []
    failure = next(e for e in events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    assert failure.step_key == "mongo_hospitalizations"
    assert "refused the password of user 'admin_master'" in str(failure.event_specific_data.error)


def test_provision_access_applies_a_changed_password_on_mongodb(provisioned_server_dir, monkeypatch):
    """With MONGODB_URI set (how production runs it), on a server of its own."""
    generated = secrets_file.read(provisioned_server_dir)
    env = {**os.environ, "MONGODB_URI": local_server.client_uri(provisioned_server_dir), **generated}
    env.update(HEALTHCARE_ANALYST_READONLY_PASSWORD="a-new-analyst-password-of-some-length")

    def provision_access():
        result = subprocess.run([sys.executable, "-m", "healthcare_assets.tooling.cli", "provision-access"], env=env,
                                cwd=provisioned_server_dir, check=False, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "a-new-analyst-password-of-some-length" not in result.stdout + result.stderr
        return result.stdout

    first = provision_access()
    assert (f"ANALYST_READONLY: updated user analyst_readonly, password changed to the one of the environment "
            f"variable {ANALYST}") in first
    assert "DATA_ENGINEER: updated user data_engineer, password unchanged" in first
    assert accepted(provisioned_server_dir, "analyst_readonly", "a-new-analyst-password-of-some-length")
    assert not accepted(provisioned_server_dir, "analyst_readonly", generated[ANALYST])
    again = provision_access()
    assert "ANALYST_READONLY: updated user analyst_readonly, password unchanged" in again


def _documents(client) -> dict[str, int]:
    """Documents per collection of every database but the server's own."""
    return {f"{db}.{c['name']}": client[db][c["name"]].count_documents({})
            for db in client.list_database_names() if db not in ("admin", "config", "local")
            for c in client[db].list_collections() if c.get("type", "collection") == "collection"}


@pytest.mark.slow
def test_rotating_every_password_as_the_deployment_guide_says(provisioned_server_dir):
    """docs/deployment.md "Rotating passwords", on a server with authentication, reached through
    MONGODB_URI as in production: the one-shot `provision-access` run with the old admin password
    in MONGODB_URI and every role's new password in its variable, then the stack on the new .env.
    Every user's password changes, the old ones stop working, no document is lost; the health
    probe (`hello`, no login) answers throughout. The new passwords start with `-` on purpose."""
    guide = (REPO / "docs" / "deployment.md").read_text().split("### Rotating passwords", 1)[1]
    steps = guide.split("```", 2)[1].splitlines()
    assert "docker compose run --rm -e MONGODB_URI provision-access   # 3. old admin logs in, sets the new ones" in steps
    old = secrets_file.read(provisioned_server_dir)
    new = {variable: f"-{secrets.token_hex(32)}" for variable in PASSWORD_VARIABLES}
    port = embedded_mongo.status(provisioned_server_dir)["port"]

    # Step 1, run by bash in a checkout whose .env holds the current passwords: the admin URI
    # carries the current admin password, and no other value of .env reaches the environment
    # (Compose would prefer it to the edited .env of step 2).
    checkout = provisioned_server_dir.parent / "checkout"
    checkout.mkdir()
    (checkout / ".env").write_text("".join(f"{k}={v}\n" for k, v in old.items()))
    step1 = next(line for line in steps if line.startswith("export MONGODB_URI="))
    shell = subprocess.run(["bash", "-c", f"{step1}\nenv -0"], cwd=checkout, env={"PATH": "/usr/bin:/bin"},
                           check=True, capture_output=True, text=True, timeout=30)
    exported = dict(item.split("=", 1) for item in shell.stdout.split("\0") if item)
    assert not [k for k in exported if k.startswith("HEALTHCARE_")]
    assert urlsplit(exported["MONGODB_URI"]).password == old[ADMIN]

    def admin(password: str) -> pymongo.MongoClient:
        return pymongo.MongoClient(with_credentials(local_server.client_uri(provisioned_server_dir), "admin_master", password))

    def healthy() -> bool:
        with pymongo.MongoClient(embedded_mongo.uri_for(port, data_dir=provisioned_server_dir)) as anonymous:
            with pytest.raises(pymongo.errors.OperationFailure):
                anonymous.list_database_names()  # authentication is on ...
            return anonymous.admin.command("hello")["isWritablePrimary"]  # ... and hello needs none

    def provision_access(admin_password: str) -> str:
        env = {k: v for k, v in os.environ.items() if k != "HEALTHCARE_DOCTOR_APP_HOSPITAL"}
        env.update(new, MONGODB_URI=with_credentials(local_server.client_uri(provisioned_server_dir), "admin_master", admin_password))
        result = subprocess.run([sys.executable, "-m", "healthcare_assets.tooling.cli", "provision-access"], env=env,
                                cwd=provisioned_server_dir, check=False, capture_output=True, text=True, timeout=120)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        assert not [p for p in (*old.values(), *new.values()) if p in output]
        return result.stdout

    with admin(old[ADMIN]) as client:  # something in every database of the deployment
        for database in access.databases(access.DATABASE).values():
            client[database]["rotation_probe"].insert_many([{"n": n} for n in range(25)])
        before = _documents(client)
    assert healthy()

    changed = provision_access(urlsplit(exported["MONGODB_URI"]).password)
    again = provision_access(new[ADMIN])  # the stack recreated on the new .env
    assert healthy()
    for variable in PASSWORD_VARIABLES:
        role = variable.removeprefix("HEALTHCARE_").removesuffix("_PASSWORD")
        user = role.lower()
        assert (f"{role}: updated user {user}, password changed to the one of the environment variable "
                f"{variable}") in changed
        assert f"{role}: updated user {user}, password unchanged" in again
        assert accepted(provisioned_server_dir, user, new[variable]), user
        assert not accepted(provisioned_server_dir, user, old[variable]), user

    with admin(new[ADMIN]) as client:
        after = _documents(client)
    audit = f"{access.databases(access.DATABASE)['audit']}.{AUDIT_COLLECTION}"
    assert after.pop(audit) == before.pop(audit, 0) + 2  # each provisioning is in the audit log
    assert after == before and len(before) >= len(access.databases(access.DATABASE))


@pytest.mark.slow
def test_a_dotenv_with_other_passwords_in_the_working_directory_of_dagster(tmp_path, monkeypatch):
    """`make run` provisioned the embedded server; then `cp .env.example .env` and materialize again."""
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    data_dir = checkout / ".data"
    monkeypatch.delenv("MONGODB_URI", raising=False)
    for variable in PASSWORD_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HEALTHCARE_DATA_DIR", str(data_dir))
    source = generate_csv(rows=200, seed=4, out=tmp_path / "export.csv")["path"]
    example = (REPO / ".env.example").read_text().splitlines()
    passwords = [line for line in example if line.split("=")[0] in PASSWORD_VARIABLES]
    assert len(passwords) == len(PASSWORD_VARIABLES)
    (checkout / ".env").write_text("\n".join(passwords) + "\n")
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "MONGODB_"))
           and k not in PASSWORD_VARIABLES}
    env.update(DAGSTER_HOME=str(home), PYTHONPATH=str(REPO), HEALTHCARE_SOURCE_CSV=str(source),
               HEALTHCARE_DATA_DIR=str(data_dir))
    try:
        local_server.ensure_running(data_dir)  # as `make run` left it
        result = subprocess.run([sys.executable, "-m", "dagster", "asset", "materialize", "-m",
                                 "healthcare_assets.definitions", "--select", "*mongo_hospitalizations"],
                                env=env, cwd=checkout, check=False, capture_output=True, text=True, timeout=600)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output[-4000:]
        assert f"now has the password of {ADMIN} in {checkout / '.env'}" in output
        assert not any(line.split("=", 1)[1] in output for line in passwords)
        # what the run applied is recorded in secrets.env: reachable without the .env
        assert mongo_resource_from_env().hospitalizations().count_documents({}) > 0
    finally:
        embedded_mongo.stop(data_dir)
