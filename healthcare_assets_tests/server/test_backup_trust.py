"""Backups as an attacker with write access to the backup store would edit them: a restore
touches only its own deployment, takes nothing but documents from a backup, and a forgery
neither restores nor steers retention."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import shutil
import tracemalloc
import uuid
from pathlib import Path

import bson
import pytest
from bson import json_util

from healthcare_assets.domain import audit, encryption
from healthcare_assets.domain.backup import files as backup_files
from healthcare_assets.domain.backup import reading, restore, writing
from healthcare_assets.domain.deployment_databases import databases
from healthcare_assets.plumbing.backup_store import LocalStore
from healthcare_assets.tooling import cli
from healthcare_assets_tests.fixtures.environment import keys_now


def rewrite(folder: Path, relpath: str, data: bytes | None = None, edit=None, sign: bool = True) -> None:
    """Replace a file of a backup (and its manifest entry), edit the manifest, and sign it again
    with this deployment's key when `sign` (what only an insider holding the key could do)."""
    manifest = json.loads((folder / backup_files.MANIFEST).read_text())
    if data is not None:
        (folder / relpath).write_bytes(data)
        manifest["files"][relpath] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    if edit:
        edit(manifest)
    if sign:  # imported here, so that the attacks also run against versions without signing
        from healthcare_assets.domain.backup import signing

        manifest = signing.sign(manifest, signing.writing_key(keys_now()))
    (folder / backup_files.MANIFEST).write_text(json.dumps(manifest))


def metadata(folder: Path, db: str, coll: str) -> dict:
    return json_util.loads(gzip.decompress((folder / db / f"{coll}.metadata.json.gz").read_bytes()))


def extended_json_gz(document: dict) -> bytes:
    return gzip.compress(json_util.dumps(document, json_options=backup_files.EXTENDED_JSON).encode())


def test_an_edited_manifest_reaches_no_other_deployment(small_export_loaded, tmp_path):
    client, dbs = small_export_loaded.client(), databases(small_export_loaded.database)
    other = f"clinic_{uuid.uuid4().hex[:8]}"  # another deployment on the same server
    client[other].records.insert_one({"_id": 1, "kept": True})
    encryption.cipher(client[other].hospitalizations, keys_now(), create=True).key_id("personal_info.name")
    vault = client[encryption.KEY_VAULT_DB][encryption.KEY_VAULT_COLLECTION]
    try:
        written = writing.write_backup(client, small_export_loaded.database, small_export_loaded.server_label(), LocalStore(tmp_path), keys_now())
        folder = Path(written.location)

        def widen(manifest):  # every key of the server, and another deployment's database
            manifest["databases"][encryption.KEY_VAULT_DB][encryption.KEY_VAULT_COLLECTION]["filter"] = {}
            manifest["databases"][other] = {"records": manifest["databases"][dbs["audit"]]["audit_log"]}

        rewrite(folder, backup_files.MANIFEST, edit=widen, sign=False)
        with pytest.raises(backup_files.BackupError, match="signature does not match"):
            reading.open_backup(str(folder), keys_now())
        # Signed again (an insider's key): the scope still comes from the configured deployment.
        rewrite(folder, backup_files.MANIFEST, edit=widen)
        with pytest.raises(backup_files.BackupError, match=f"outside this deployment \\({other}\\)"):
            restore.restore(reading.open_backup(str(folder), keys_now()), client, keys_now(),small_export_loaded.database, small_export_loaded.collection, drop=True)
        rewrite(folder, backup_files.MANIFEST, edit=lambda m: m["databases"].pop(other))
        restored = restore.restore(reading.open_backup(str(folder), keys_now()), client, keys_now(),small_export_loaded.database, small_export_loaded.collection, drop=True)
        assert restored.keys_proven == len(written.manifest["keys"]) > 0
        assert client[other].records.count_documents({}) == 1
        assert vault.count_documents({"keyAltNames": {"$regex": f"^{other}\\."}}) == 1
    finally:
        client.drop_database(other)
        encryption.drop_keys(client, other)


def test_keys_wrapped_by_anything_but_the_configured_kms_are_refused(small_export_loaded, tmp_path):
    client, dbs = small_export_loaded.client(), databases(small_export_loaded.database)
    written = writing.write_backup(client, small_export_loaded.database, small_export_loaded.server_label(), LocalStore(tmp_path), keys_now())
    folder = Path(written.location)
    relpath = f"{encryption.KEY_VAULT_DB}/{encryption.KEY_VAULT_COLLECTION}.bson.gz"
    keys = bson.decode_all(gzip.decompress((folder / relpath).read_bytes()))
    attacker = {"provider": "aws", "key": "arn:aws:kms:us-east-1:999999999999:key/attacker", "region": "us-east-1",
                "endpoint": "kms.attacker.example:443"}
    keys[0]["masterKey"] = attacker
    keys[-1]["keyAltNames"] = [f"someone_else.hospitalizations:{keys[-1]['keyAltNames'][0].partition(':')[2]}"]
    rewrite(folder, relpath, gzip.compress(b"".join(bson.encode(k) for k in keys)), sign=False)
    scratch = {db: f"keys_{uuid.uuid4().hex[:8]}" for db in written.manifest["databases"]}
    with pytest.raises(backup_files.BackupError, match="signature does not match"):  # the store's writer cannot sign
        restore.restore(reading.open_backup(str(folder), keys_now()), client, keys_now(),small_export_loaded.database, small_export_loaded.collection, rename=scratch)
    rewrite(folder, relpath, gzip.compress(b"".join(bson.encode(k) for k in keys)))  # an insider's key
    with pytest.raises(restore.RestoreRefusedError) as refused:
        restore.restore(reading.open_backup(str(folder), keys_now()), client, keys_now(),small_export_loaded.database, small_export_loaded.collection, rename=scratch)
    assert "endpoint" in str(refused.value) and "someone_else" in str(refused.value)
    assert not set(scratch.values()) & set(client.list_database_names())  # nothing was written
    assert dbs["main"] in client.list_database_names()


def test_forgeries_neither_steer_retention_nor_restore(small_export_loaded, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HEALTHCARE_BACKUP_KEEP", "7")
    store_dir = tmp_path / "backups"
    assert cli.main(["backup", "--to", str(store_dir)]) == 0
    (real,) = LocalStore(store_dir).names()
    taken = dt.datetime.strptime(real, "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=dt.UTC)
    for step in range(1, 7):  # forged "verified" folders just after the real one
        forged = store_dir / backup_files.new_name(taken + dt.timedelta(microseconds=step))
        forged.mkdir()
        shutil.copy(store_dir / real / backup_files.VERIFIED, forged / backup_files.VERIFIED)
    shutil.copytree(store_dir / real, store_dir / "99991231T235959.999999Z")  # a whole real one, dated 9999
    (tmp_path / "elsewhere").mkdir()
    (store_dir / "20000101T000000.000000Z").symlink_to(tmp_path / "elsewhere")  # a symlinked folder
    assert cli.main(["backup", "--to", str(store_dir)]) == 0
    assert cli.main(["backup", "--to", str(store_dir)]) == 0
    names = LocalStore(store_dir).names()
    assert real in names and len([n for n in names if n > real and n < "9"]) == 6 + 2  # nothing real deleted
    assert (tmp_path / "elsewhere").is_dir()
    newest = max(n for n in names if n < "9")
    latest = reading.open_backup(str(store_dir), keys_now(), latest=True)
    assert latest.name == newest and "99991231T235959.999999Z" in latest.skipped
    # The newest, damaged: --latest means the newest good one.
    hospitalizations = store_dir / newest / small_export_loaded.database / "hospitalizations.bson.gz"
    hospitalizations.write_bytes(hospitalizations.read_bytes()[:-100])
    fallback = reading.open_backup(str(store_dir), keys_now(), latest=True)
    assert fallback.name < newest and "hospitalizations.bson.gz" in fallback.skipped[newest]
    # One backup's manifest under another's name is refused.
    with pytest.raises(backup_files.BackupError, match="signed for the backup"):
        reading.open_backup(str(store_dir / "99991231T235959.999999Z"), keys_now())


def test_options_and_indexes_come_from_the_code(small_export_loaded, tmp_path):
    client, dbs = small_export_loaded.client(), databases(small_export_loaded.database)
    audit.record(client[small_export_loaded.database], "before the backup", "test", 1)
    written = writing.write_backup(client, small_export_loaded.database, small_export_loaded.server_label(), LocalStore(tmp_path), keys_now())
    folder = Path(written.location)
    log_meta = metadata(folder, dbs["audit"], audit.AUDIT_COLLECTION)
    log_meta["indexes"].append({"v": 2, "key": {"at": 1}, "name": "at_1", "expireAfterSeconds": 1})
    main_meta = metadata(folder, dbs["main"], "hospitalizations")
    main_meta["options"] = {"validator": {"$jsonSchema": {}}, "validationLevel": "off"}
    rewrite(folder, f"{dbs['audit']}/{audit.AUDIT_COLLECTION}.metadata.json.gz", extended_json_gz(log_meta),
            sign=False)
    with pytest.raises(backup_files.BackupError, match="signature does not match"):
        reading.open_backup(str(folder), keys_now())
    rewrite(folder, f"{dbs['audit']}/{audit.AUDIT_COLLECTION}.metadata.json.gz", extended_json_gz(log_meta))
    rewrite(folder, f"{dbs['main']}/hospitalizations.metadata.json.gz", extended_json_gz(main_meta))
    entries = client[dbs["audit"]][audit.AUDIT_COLLECTION].count_documents({})
    restored = restore.restore(reading.open_backup(str(folder), keys_now()), client, keys_now(),small_export_loaded.database, small_export_loaded.collection, drop=True)
    assert f"{dbs['audit']}.{audit.AUDIT_COLLECTION}: index [('at', 1)]" in restored.left_out
    assert any(what.startswith(f"{dbs['main']}.hospitalizations: options") for what in restored.left_out)
    log = client[dbs["audit"]][audit.AUDIT_COLLECTION]
    assert not [ix for ix in log.list_indexes() if "expireAfterSeconds" in ix]
    assert log.count_documents({}) == entries
    options = client[dbs["main"]].command("listCollections", filter={"name": "hospitalizations"})
    (info,) = options["cursor"]["firstBatch"]
    assert info["options"]["validationLevel"] == "strict" and info["options"]["validator"]["$jsonSchema"]


def test_a_decompression_bomb_is_refused_in_bounded_memory(small_export_loaded, tmp_path):
    written = writing.write_backup(small_export_loaded.client(), small_export_loaded.database, small_export_loaded.server_label(), LocalStore(tmp_path), keys_now())
    folder = Path(written.location)
    bomb = gzip.compress(b'{"options": {}, "pad": "' + b" " * (64 << 20) + b'"}', compresslevel=9)
    assert len(bomb) < 100_000
    (folder / databases(small_export_loaded.database)["audit"] / "audit_log.metadata.json.gz").write_bytes(bomb)
    tracemalloc.start()
    try:
        with pytest.raises(backup_files.BackupError, match="inflates to more than"):
            reading.verify(reading.open_backup(str(folder), keys_now()))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"peak {peak:,} bytes"


def test_a_symlinked_file_is_not_followed(small_export_loaded, tmp_path):
    written = writing.write_backup(small_export_loaded.client(), small_export_loaded.database, small_export_loaded.server_label(), LocalStore(tmp_path / "b"), keys_now())
    folder = Path(written.location)
    outside = tmp_path / "outside.json.gz"
    target = folder / databases(small_export_loaded.database)["audit"] / "audit_log.metadata.json.gz"
    shutil.move(target, outside)
    target.symlink_to(outside)
    with pytest.raises(backup_files.BackupError, match="symbolic link"):
        reading.verify(reading.open_backup(str(folder), keys_now()))


def test_a_new_host_is_told_which_keys_to_bring_before_anything_is_written(small_export_loaded, tmp_path, monkeypatch, capsys):
    assert cli.main(["backup", "--to", str(tmp_path / "backups")]) == 0
    new_host = tmp_path / "new-host"
    monkeypatch.setenv("HEALTHCARE_DATA_DIR", str(new_host))
    monkeypatch.delenv("HEALTHCARE_PSEUDONYM_KEY")
    monkeypatch.delenv("MONGODB_URI")
    capsys.readouterr()
    assert cli.main(["restore", "--from", str(tmp_path / "backups"), "--latest"]) == 7
    said = capsys.readouterr().err
    assert "HEALTHCARE_PSEUDONYM_KEY" in said and "master key" in said
    assert not new_host.exists() or not any(new_host.iterdir())  # no server started, no key made
