"""`healthcare-assets` typed from a folder outside the repo, as a newcomer does: one data directory
(the checkout's, or HEALTHCARE_DATA_DIR), named on every command; a command that only reads
creates nothing; a name with no records says so; `mongo uri --role` gives a URI that reads."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pymongo
import pytest

from healthcare_assets.domain import access, gdpr, privacy
from healthcare_assets.plumbing import embedded_mongo
from healthcare_assets.plumbing.mongo import connect
from healthcare_assets_tests.fixtures.environment import REPO
from healthcare_assets_tests.fixtures.runs import materialize

pytestmark = pytest.mark.slow  # whole processes: the CLI, dagster, servers of their own

COMMAND = Path(sys.executable).parent / "healthcare-assets"  # the console script `make install` made
CHECKOUT_DATA = REPO / ".data"
NO_DATABASE = "no database in"
READING = [["summary"], ["mongo", "status"], ["mongo", "uri"], ["mongo", "uri", "--role", "analyst_readonly"],
           ["export-patient", "--name", "Bobby Jackson", "--out", "bobby.json"],
           ["erase-patient", "--name", "Bobby Jackson"]]


def user_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A user's shell: no MONGODB_URI, no HEALTHCARE_DATA_DIR unless given, a home of its own."""
    env = {k: v for k, v in os.environ.items() if k not in ("MONGODB_URI", "HEALTHCARE_DATA_DIR", "XDG_DATA_HOME")}
    env.update(HOME=str(tmp_path / "home"), **extra)
    return env


def typed(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run([str(COMMAND), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=180, check=False)


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")} if folder.exists() else set()


@pytest.fixture
def elsewhere(tmp_path):
    """A folder outside the repo to type commands in; any server a command started there is stopped."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    yield folder
    for data_dir in (folder / ".data", tmp_path / "empty"):
        if data_dir.exists():
            embedded_mongo.stop(data_dir)


def test_from_another_folder_the_commands_use_the_checkouts_data_directory(tmp_path, elsewhere):
    """Read-only, on the checkout's .data as it is (absent, stopped or running): they name it,
    create nothing in the current folder, and do not create the checkout's .data either."""
    existed = CHECKOUT_DATA.exists()
    env = user_env(tmp_path)
    for args in (["mongo", "status"], ["summary"]):
        result = typed(*args, cwd=elsewhere, env=env)
        assert f"data directory: {CHECKOUT_DATA} (this checkout)" in result.stderr.splitlines(), result.stderr
        if result.returncode == 10:  # no database there, or it is not running: it says which folder
            assert f" {CHECKOUT_DATA}" in result.stderr, result.stderr
        else:
            assert result.returncode in (0, 3), result.stdout + result.stderr
        assert str(elsewhere) not in result.stdout + result.stderr
    assert sorted(elsewhere.iterdir()) == []
    assert CHECKOUT_DATA.exists() == existed


def test_with_an_empty_data_directory_a_reading_command_creates_nothing(tmp_path, elsewhere):
    """No database, no secrets.env, no master key, no storage, no export: exit 10 and what to do."""
    empty = tmp_path / "empty"
    empty.mkdir()
    env = user_env(tmp_path, HEALTHCARE_DATA_DIR=str(empty))
    for args in READING:
        result = typed(*args, cwd=elsewhere, env=env)
        assert result.returncode == 10, (args, result.stdout, result.stderr)
        assert f"{NO_DATABASE} {empty}: run `make run`" in result.stderr, result.stderr
        assert f"data directory: {empty} (HEALTHCARE_DATA_DIR)" in result.stderr
        assert result.stdout == ""
    assert files_under(empty) == set() and files_under(elsewhere) == set()
    absent = tmp_path / "absent"
    result = typed("summary", cwd=elsewhere, env=user_env(tmp_path, HEALTHCARE_DATA_DIR=str(absent)))
    assert result.returncode == 10 and not absent.exists(), result.stderr


def test_a_relative_data_directory_is_taken_from_the_current_folder(tmp_path, elsewhere):
    result = typed("mongo", "status", cwd=elsewhere, env=user_env(tmp_path, HEALTHCARE_DATA_DIR="mine"))
    assert result.returncode == 10, result.stderr
    assert f"data directory: {elsewhere / 'mine'} (HEALTHCARE_DATA_DIR)" in result.stderr
    assert not (elsewhere / "mine").exists()


def test_export_of_a_name_with_no_records_says_so(mongo, embedded_data_dir, small_csv, tmp_path, elsewhere):
    """On the session's embedded server, as its user (HEALTHCARE_DATA_DIR, no MONGODB_URI): a name
    that is there is exported; one that is not says so on stderr, exit 4, and writes no file."""
    assert materialize(small_csv, mongo).success
    with open(small_csv, newline="") as f:
        known = list(csv.reader(f))[10][0]
    env = user_env(tmp_path, HEALTHCARE_DATA_DIR=str(embedded_data_dir), MONGODB_DATABASE=mongo.database)
    found = typed("export-patient", "--name", known, "--all", "--out", "known.json", cwd=elsewhere, env=env)
    assert found.returncode == 0 and "wrote " in found.stdout, found.stdout + found.stderr
    assert (elsewhere / "known.json").exists()
    unknown = "Nobody Atallhere"
    missing = typed("export-patient", "--name", unknown, "--out", "nobody.json", cwd=elsewhere, env=env)
    assert missing.returncode == 4, missing.stdout + missing.stderr
    assert f"no records of {gdpr.normalized(unknown)!r} in {mongo.database}.hospitalizations" in missing.stderr
    assert not (elsewhere / "nobody.json").exists() and "wrote" not in missing.stdout
    erase = typed("erase-patient", "--name", unknown, cwd=elsewhere, env=env)
    assert erase.returncode == 0 and "dry run" in erase.stdout, erase.stdout + erase.stderr
    assert f"no records of {gdpr.normalized(unknown)!r}" in erase.stderr


@pytest.fixture
def analysts_copy(mongo_uri):
    """One document in the analysts' copy of the deployment the session server's roles were
    provisioned for (healthcare_db), dropped afterwards."""
    databases = access.databases("healthcare_db")
    client = connect(mongo_uri)
    client[databases["analytics"]][privacy.COPY_COLLECTION].insert_one({"_id": "stay-1", "age_band": "40-49"})
    yield databases
    for name in databases.values():
        client.drop_database(name)


@pytest.mark.parametrize("server", ["embedded", "MONGODB_URI"])
def test_the_analyst_uri_reads_the_copy_and_nothing_else(server, analysts_copy, embedded_data_dir, mongo_uri,
                                                          tmp_path, elsewhere):
    """The embedded server's own URI, or MONGODB_URI's hosts and TLS options with the role's
    password from the environment (HEALTHCARE_ANALYST_READONLY_PASSWORD)."""
    env = user_env(tmp_path, HEALTHCARE_DATA_DIR=str(embedded_data_dir))
    if server == "MONGODB_URI":
        variable = access.role("ANALYST_READONLY").password_variable
        env.update(MONGODB_URI=mongo_uri, HEALTHCARE_DATA_DIR=str(tmp_path / "reports-only"),
                   **{variable: access.passwords(embedded_data_dir)["ANALYST_READONLY"]})
    result = typed("mongo", "uri", "--role", "analyst_readonly", cwd=elsewhere, env=env)
    assert result.returncode == 0, result.stderr
    [uri] = result.stdout.splitlines()
    assert "password of analyst_readonly" in result.stderr
    with pymongo.MongoClient(uri, serverSelectionTimeoutMS=10_000) as client:
        copy = client[analysts_copy["analytics"]][privacy.COPY_COLLECTION]
        assert copy.find_one() == {"_id": "stay-1", "age_band": "40-49"}
        with pytest.raises(pymongo.errors.OperationFailure, match="(?i)not authorized|unauthorized"):
            client[analysts_copy["main"]]["hospitalizations"].find_one()
    for spelling in ("ANALYST_READONLY", "Analyst_ReadOnly"):
        assert typed("mongo", "uri", "--role", spelling, cwd=elsewhere, env=env).stdout.splitlines() == [uri]
    assert files_under(elsewhere) == set()


@pytest.mark.parametrize("role", ["", " ", "admin_master; drop", "../x", "admın_master", "analyst", "root"])
def test_an_unknown_role_is_refused_with_the_list_of_roles(role, embedded_data_dir, mongo_uri, tmp_path, elsewhere):
    env = user_env(tmp_path, HEALTHCARE_DATA_DIR=str(embedded_data_dir))
    result = typed("mongo", "uri", "--role", role, cwd=elsewhere, env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == "" and "mongodb://" not in result.stderr
    assert f"unknown role {role!r}: one of admin_master, data_engineer" in result.stderr, result.stderr
