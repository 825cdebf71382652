"""Rotation never strands a backup: a backup taken before `rotate-keys` restores with readable names
after it, in development (the keys in secrets.env) and with the keys in the environment as
docs/deployment.md describes; the old key is kept as a retired key, not overwritten."""

import base64
import os
import subprocess
import sys

import bson
import pytest

from healthcare_assets.domain import encryption, master_keys
from healthcare_assets.domain.backup import keys, reading, restore, writing
from healthcare_assets.domain.backup.catalog import Catalog
from healthcare_assets.plumbing import secrets_file
from healthcare_assets.plumbing.backup_store import LocalStore
from healthcare_assets_tests.fixtures.environment import REPO, keys_now
from healthcare_assets_tests.fixtures.runs import materialize

RETIRED = "HEALTHCARE_RETIRED_MASTER_KEYS"  # spelled out: the old code has no name for it
DEVELOPMENT_KEY = "ignore:HEALTHCARE_MASTER_KEY is not set"


def rotate_keys(mongo, **env: str) -> subprocess.CompletedProcess:
    """`healthcare-assets rotate-keys` in a process of its own, on this test's database."""
    env = {**os.environ, "MONGODB_DATABASE": mongo.database, "PYTHONPATH": str(REPO), **env}
    return subprocess.run([sys.executable, "-m", "healthcare_assets.tooling.cli", "rotate-keys"], env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def names(collection) -> dict:
    """_id -> the stay's names in clear, for the first 50 stays."""
    cipher = encryption.cipher(collection, keys_now())
    try:
        return {d["_id"]: cipher.decrypt_document(d)["personal_info"]["name"]
                for d in collection.find({}, sort=[("_id", 1)], limit=50)}
    finally:
        cipher.close()


def my_keys(mongo) -> list[dict]:
    vault = mongo.client()[encryption.KEY_VAULT_DB][encryption.KEY_VAULT_COLLECTION]
    return list(vault.find({"keyAltNames": {"$in": list(encryption.key_names(mongo.hospitalizations()).values())}}))


def backed_up_keys(location: str) -> list[dict]:
    opened = reading.open_backup(location, keys_now())
    return [bson.decode(raw) for raw in opened.documents(encryption.KEY_VAULT_DB, encryption.KEY_VAULT_COLLECTION)]


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def loaded_and_backed_up(mongo, small_csv, tmp_path, monkeypatch, key: str):
    """The small export loaded and backed up, its data keys wrapped by `key` alone (the session's
    other keys stay under the session's key, so a rotation here re-wraps this test's only)."""
    monkeypatch.setenv(master_keys.MASTER_KEY_VARIABLE, key)
    assert materialize(small_csv, mongo).success
    written = writing.write_backup(mongo.client(), mongo.database, mongo.server_label(), LocalStore(tmp_path / "backups"), keys_now())
    before = names(mongo.hospitalizations())
    assert len(before) == 50 and all(isinstance(n, str) for n in before.values())
    return written.location, before


@pytest.mark.filterwarnings(DEVELOPMENT_KEY)
def test_a_backup_taken_before_a_development_rotation_reads_after_it(mongo, data_dir, small_csv, tmp_path,
                                                                    monkeypatch):
    uri = os.environ["MONGODB_URI"]
    monkeypatch.delenv("MONGODB_URI")  # a development installation: its key in secrets.env
    monkeypatch.delenv(master_keys.MASTER_KEY_VARIABLE)
    old = keys_now().master_key()
    monkeypatch.setenv("MONGODB_URI", uri)
    location, before = loaded_and_backed_up(mongo, small_csv, tmp_path, monkeypatch, b64(old))

    monkeypatch.delenv("MONGODB_URI")
    monkeypatch.delenv(master_keys.MASTER_KEY_VARIABLE)
    client = mongo.client()
    assert encryption.rotate_master_key(client, keys_now(), [encryption.KEY_VAULT])[encryption.KEY_VAULT] == 2
    restore.restore(reading.open_backup(location, keys_now()), client, keys_now(),mongo.database, mongo.collection, drop=True)
    assert {k["masterKey"]["provider"] for k in my_keys(mongo)} == {master_keys.local_provider(old)}
    assert names(mongo.hospitalizations()) == before
    stored = secrets_file.read(data_dir)
    new = base64.b64decode(stored[master_keys.MASTER_KEY_VARIABLE])
    assert new != old and stored[RETIRED].split(",") == [b64(old)]  # kept, not overwritten
    assert secrets_file.path(data_dir).stat().st_mode & 0o077 == 0
    assert keys_now().wrapping_problems(backed_up_keys(location)) == []

    # The next rotation re-wraps the restored keys too: nothing live stays under a retired key.
    assert encryption.rotate_master_key(client, keys_now(), [encryption.KEY_VAULT])[encryption.KEY_VAULT] == 2
    stored = secrets_file.read(data_dir)
    newest = base64.b64decode(stored[master_keys.MASTER_KEY_VARIABLE])
    assert stored[RETIRED].split(",") == [b64(old), b64(new)]
    assert {k["masterKey"]["provider"] for k in my_keys(mongo)} == {master_keys.local_provider(newest)}
    assert names(mongo.hospitalizations()) == before
    # The backup still needs the oldest key; nothing needs the middle one any more.
    store, catalog = LocalStore(tmp_path / "backups"), Catalog(mongo.database, mongo.collection)
    assert keys.forget_unneeded_master_keys(client, keys_now(), store, catalog)[0] == []  # not yet read back: kept
    reading.mark_verified(reading.open_backup(location, keys_now()), {}, keys_now())
    assert keys.forget_unneeded_master_keys(client, keys_now(), store, catalog) == ([master_keys.local_provider(new)], None)
    assert secrets_file.read(data_dir)[RETIRED] == b64(old)
    restore.restore(reading.open_backup(location, keys_now()), client, keys_now(),mongo.database, mongo.collection, drop=True)
    assert names(mongo.hospitalizations()) == before


def test_a_backup_taken_before_a_rotation_reads_with_the_keys_the_guide_sets(mongo, small_csv, tmp_path,
                                                                            monkeypatch):
    old, new = master_keys.new_master_key(), master_keys.new_master_key()
    location, before = loaded_and_backed_up(mongo, small_csv, tmp_path, monkeypatch, old)

    # docs/deployment.md: set HEALTHCARE_NEW_MASTER_KEY, run rotate-keys, then move the old key to
    # the retired keys and the new one to HEALTHCARE_MASTER_KEY.
    result = rotate_keys(mongo, HEALTHCARE_MASTER_KEY=old, HEALTHCARE_NEW_MASTER_KEY=new)
    assert result.returncode == 0, result.stderr
    monkeypatch.setenv(master_keys.MASTER_KEY_VARIABLE, new)
    monkeypatch.setenv(RETIRED, old)
    assert {k["masterKey"]["provider"] for k in my_keys(mongo)} == {master_keys.local_provider(base64.b64decode(new))}

    restore.restore(reading.open_backup(location, keys_now()), mongo.client(), keys_now(),mongo.database, mongo.collection, drop=True)
    assert names(mongo.hospitalizations()) == before
    said = result.stdout + result.stderr  # the command says what to move where, never a key
    assert RETIRED in said and old not in said and new not in said
    assert master_keys.local_provider(base64.b64decode(old)) in said
    assert keys_now().wrapping_problems(backed_up_keys(location)) == []

    # Without the retired key, the restore's check says which key is missing, by digest only.
    monkeypatch.delenv(RETIRED)
    problems = keys_now().wrapping_problems(backed_up_keys(location))
    digest = master_keys.local_provider(base64.b64decode(old)).partition(":")[2]
    assert len(problems) == 2 and all(digest in p and old not in p for p in problems)
    stays = mongo.hospitalizations().count_documents({})
    with pytest.raises(restore.RestoreRefusedError, match=digest):  # before anything is written (nothing dropped)
        restore.restore(reading.open_backup(location, keys_now()), mongo.client(), keys_now(),mongo.database, mongo.collection, drop=True)
    assert mongo.hospitalizations().count_documents({}) == stays > 0
    # In production nothing is removed: forget_retired_keys says what the operator may remove.
    monkeypatch.setenv(RETIRED, f"{old},{new}")
    assert keys_now().forget_retired_keys(set()) == [master_keys.local_provider(base64.b64decode(old))]
    assert os.environ[RETIRED] == f"{old},{new}"
