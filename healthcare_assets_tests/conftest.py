"""Fixtures start real servers (the embedded MongoDB daemon) on free ports; nothing is mocked."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import bson
import dagster as dg
import pytest

from healthcare_assets import access, encryption
from healthcare_assets.definitions import defs
from healthcare_assets.generate import generate_csv
from healthcare_assets.resources import embedded_mongo
from healthcare_assets.resources.mongo import MongoResource, connect
from healthcare_assets.sensors import DROP_SELECTION

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("HEALTHCARE_PSEUDONYM_KEY", "test-only-pseudonym-key-of-at-least-32-bytes")  # test_privacy covers the unset case
# Fixture modules that tests both name in pytest_plugins and import from: rewritten like conftest.
pytest.register_assert_rewrite("healthcare_assets_tests.postgres_fixtures")
# The session's master key (MONGODB_URI is set for most tests: production refuses a missing one);
# test_encryption covers the unset case.
os.environ.setdefault("HEALTHCARE_MASTER_KEY", encryption.new_master_key())
COMMITTED_CSV = REPO / "data" / "healthcare_dataset.csv"


SYSTEM_DEPS = "bash .ci/system-deps.sh"  # the Debian packages
DEV_EXTRA = "pip install -e '.[dev]'"  # `make install` does it
_missing: dict[str, set[str]] = {}  # install command -> tools this session skipped for want of


def unavailable(tool: str, install: str):
    """Skip on a developer machine without `tool`; in CI (.ci/run sets CI=true) a missing tool
    is a failure. What was skipped is said again in the session's last line."""
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"{tool} is not installed (CI must have it: {install})")
    _missing.setdefault(install, set()).add(tool)
    pytest.skip(f"{tool} is not installed ({install})")


def pytest_unconfigure(config):
    """One line after pytest's own summary, so that a quiet skip is not missed at the end of a run."""
    if _missing:
        print("\nSKIPPED for want of " + "; ".join(f"{', '.join(sorted(tools))} (install: {install})"
                                                  for install, tools in sorted(_missing.items())))


@pytest.fixture(scope="session", autouse=True)
def import_roots(tmp_path_factory) -> None:
    """Tests write their exports under pytest's temporary folder: runs (and the processes tests
    start) may read them there and in the repo's data/, whatever the working directory."""
    os.environ["HEALTHCARE_IMPORT_DIR"] = os.pathsep.join([str(tmp_path_factory.getbasetemp()), str(REPO / "data")])


@pytest.fixture(scope="session")
def mongo_uri(tmp_path_factory) -> str:
    """One embedded secantusdb daemon for the session, on a free port, in a temporary folder.
    At the end it must hold no database: every test drops what it made (see drop_deployment)."""
    data_dir = tmp_path_factory.mktemp("embedded-mongo")
    embedded_mongo.ensure_running(data_dir)
    uri = embedded_mongo.client_uri(data_dir)  # authentication is on: the admin's credentials
    os.environ["MONGODB_URI"] = uri
    yield uri
    client = connect(uri)
    keys_left = client[encryption.KEY_VAULT_DB][encryption.KEY_VAULT_COLLECTION].count_documents({})
    left = sorted(set(client.list_database_names()) - {"admin", "config", "local"}
                  - ({encryption.KEY_VAULT_DB} if not keys_left else set()))
    os.environ.pop("MONGODB_URI", None)
    embedded_mongo.stop(data_dir)
    assert not left, f"databases left on the shared server by the tests that made them: {left}"


def drop_deployment(client, database: str) -> None:
    """A test's database and its companions (analytics, doctor app, audit), which runs and
    erasures create beside it, and its data keys."""
    for name in access.databases(database).values():
        client.drop_database(name)
    encryption.drop_keys(client, database)


@pytest.fixture
def data_dir(tmp_path, monkeypatch) -> Path:
    """Reports, quarantine and staging for one test."""
    monkeypatch.setenv("HEALTHCARE_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


@pytest.fixture
def mongo(mongo_uri, data_dir) -> MongoResource:
    """A MongoResource on a database of its own, dropped afterwards with its companions."""
    name = f"test_{uuid.uuid4().hex[:10]}"
    yield MongoResource(database=name)
    drop_deployment(connect(mongo_uri), name)


@pytest.fixture(scope="session")
def small_csv(tmp_path_factory) -> Path:
    """A 2,000-row export with the committed file's defects (duplicates, negative amounts)."""
    path = tmp_path_factory.mktemp("exports") / "small_export.csv"
    generate_csv(rows=2_000, seed=11, out=path)
    return path


def materialize(source: Path | str, mongo: MongoResource | None, selection: list | None = None,
                instance: dg.DagsterInstance | None = None) -> dg.ExecuteInProcessResult:
    """Run the chain on one file, in process, as a drop runs it: every asset and check but the index
    benchmark and the whole-collection audit (each covered by its own tests), or a selection (one
    that stops before MongoDB needs no `mongo`). An `instance` keeps the run's logs to read back."""
    return dg.materialize(
        selection or [*defs.assets, *defs.asset_checks],
        selection=None if selection else DROP_SELECTION,
        resources={"mongo": mongo} if mongo else None,
        run_config={"ops": {"raw_csv": {"config": {"source": str(source)}}}},
        raise_on_error=False,
        instance=instance,
    )


def document_digests(collection) -> dict[str, str]:
    """_id -> a hash of the document as the server holds it (metadata.created_at included): a
    re-run that rewrites a document changes its digest even when every count stays the same."""
    return {doc["_id"]: hashlib.sha256(bson.encode(doc)).hexdigest() for doc in collection.find()}


def check_results(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def materialized(result: dg.ExecuteInProcessResult) -> dict[str, dict]:
    """asset name -> its materialization metadata (plain values)."""
    return {
        e.asset_key.to_user_string(): {k: v.value for k, v in e.materialization.metadata.items()}
        for e in result.get_asset_materialization_events()
    }
