"""Backups on real servers: two embedded daemons, moto's S3 over HTTP, files damaged on disk."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import resource
import shutil
import stat
import time
import uuid
from pathlib import Path

import boto3
import bson
import dagster as dg
import pytest
from bson import json_util
from pymongo import uri_parser
from pymongo.errors import WriteError

from healthcare_assets.defs.backup import mongo_backup
from healthcare_assets.defs.collection_audit import COLLECTION_AUDIT
from healthcare_assets.defs.resources import pipeline_settings
from healthcare_assets.domain import (
    access,
    audit,
    backup,
    encryption,
    gdpr,
    local_server,
    master_keys,
)
from healthcare_assets.domain.backup import files as backup_files
from healthcare_assets.domain.backup import signing
from healthcare_assets.domain.deployment_databases import databases
from healthcare_assets.domain.privacy import COPY_COLLECTION, VIEW_NAME
from healthcare_assets.domain.schema import ENCRYPTED_FIELDS
from healthcare_assets.plumbing import embedded_mongo, scans
from healthcare_assets.plumbing.backup_store import PART_BYTES, LocalStore, S3Store
from healthcare_assets.plumbing.mongo import MongoResource, connect
from healthcare_assets.tooling import cli
from healthcare_assets.tooling.bench.one_size import measure_backup
from healthcare_assets_tests.fixtures.environment import COMMITTED_CSV
from healthcare_assets_tests.fixtures.runs import DEFS, check_results, materialize


@pytest.fixture
def deployment(mongo, monkeypatch) -> MongoResource:
    """The CLI's environment pointed at the test's database (and its companions)."""
    monkeypatch.setenv("MONGODB_DATABASE", mongo.database)
    yield mongo
    for companion in databases(mongo.database).values():
        mongo.client().drop_database(companion)


@pytest.fixture
def loaded(deployment, small_csv) -> MongoResource:
    """A small export through the whole drop chain: collection, view, analysts' copy, audit log."""
    assert materialize(small_csv, deployment).success
    return deployment


def newest(folder: Path) -> Path:
    return folder / max(p.name for p in folder.iterdir())


def documents(collection) -> list[dict]:
    return sorted(collection.find({}), key=lambda d: json_util.dumps(d, sort_keys=True))


def describe(db) -> dict:
    """Each collection's options and indexes, and each view's definition."""
    return {info["name"]: (info.get("type"), info.get("options"),
                           sorted((ix["name"], tuple(ix["key"].items()), ix.get("unique", False))
                                  for ix in db[info["name"]].list_indexes()) if info.get("type") != "view" else [])
            for info in db.list_collections()}


@pytest.mark.slow
def test_backup_of_the_committed_data_restores_on_another_server(deployment, tmp_path, monkeypatch, capsys):
    source = deployment.client()
    assert materialize(COMMITTED_CSV, deployment).success
    dbs = databases(deployment.database)
    main = source[dbs["main"]]
    # Another deployment's data key in the shared key vault: not this backup's to take.
    other = f"other_{uuid.uuid4().hex[:8]}"
    encryption.cipher(source[other].hospitalizations, create=True).key_id("personal_info.name")
    try:
        assert cli.main(["backup", "--to", str(tmp_path / "backups")]) == 0
    finally:
        assert encryption.drop_keys(source, other) == 1
    folder = newest(tmp_path / "backups")
    assert (folder / backup.VERIFIED).is_file()
    with gzip.open(folder / encryption.KEY_VAULT_DB / f"{encryption.KEY_VAULT_COLLECTION}.bson.gz") as stream:
        backed_up_keys = [name for key in bson.decode_file_iter(stream) for name in key["keyAltNames"]]
    assert sorted(backed_up_keys) == sorted(encryption.key_names(main.hospitalizations).values())

    # Layout: mongodump --gzip, owner-only files.
    assert (folder / dbs["main"] / "hospitalizations.bson.gz").is_file()
    view_meta = json_util.loads(gzip.decompress((folder / dbs["main"] / f"{VIEW_NAME}.metadata.json.gz").read_bytes()))
    assert view_meta["type"] == "view" and view_meta["options"]["viewOn"] == "hospitalizations"
    assert not (folder / dbs["main"] / f"{VIEW_NAME}.bson.gz").exists()
    assert not (folder / "admin").exists()
    for path in folder.rglob("*"):
        assert stat.S_IMODE(path.stat().st_mode) == (0o700 if path.is_dir() else 0o600), path
    with gzip.open(folder / dbs["main"] / "hospitalizations.bson.gz") as stream:
        assert set(next(bson.decode_file_iter(stream))) >= {"_id", "personal_info", "metadata", "patient_id"}

    # Another server, empty: the restore gives the same databases.
    second_dir, first_uri = tmp_path / "second", os.environ["MONGODB_URI"]
    local_server.ensure_running(second_dir)
    try:
        monkeypatch.setenv("MONGODB_URI", local_server.client_uri(second_dir))
        capsys.readouterr()
        assert cli.main(["restore", "--from", str(tmp_path / "backups"), "--latest"]) == 0
        printed = capsys.readouterr().out
        target = connect(local_server.client_uri(second_dir))
        restored = target[dbs["main"]]
        expected = main.hospitalizations.count_documents({})
        assert expected == 54_966  # the committed export's documents (README)
        assert restored.hospitalizations.count_documents({}) == expected
        assert f"{dbs['main']}.hospitalizations: {expected:,} documents" in printed
        assert describe(restored) == describe(main)
        view = documents(restored[VIEW_NAME])
        assert view and view == documents(main[VIEW_NAME])  # the view answers as before
        copy_name = COPY_COLLECTION
        assert documents(target[dbs["analytics"]][copy_name]) == documents(source[dbs["analytics"]][copy_name])
        assert describe(target[dbs["analytics"]]) == describe(source[dbs["analytics"]])
        audit_before = documents(source[dbs["audit"]].audit_log)
        audit_after = documents(target[dbs["audit"]].audit_log)
        assert [d for d in audit_after if d["action"] != "restore"] == audit_before
        assert [d["action"] for d in audit_after if d not in audit_before] == ["restore"]
        # The names decrypt there: the deployment's data keys came with the backup.
        stay = main.hospitalizations.find_one({}, sort=[("_id", 1)])
        names = encryption.cipher(restored.hospitalizations)
        assert encryption.is_encrypted(stay["personal_info"]["name"])
        assert names.decrypt(restored.hospitalizations.find_one({"_id": stay["_id"]})["personal_info"]["name"]) \
            == encryption.cipher(main.hospitalizations).decrypt(stay["personal_info"]["name"])
        # The validator holds on the restored collection.
        with pytest.raises(WriteError, match="Document failed validation") as refused:
            restored.hospitalizations.insert_one({"not": "a hospitalization"})
        assert refused.value.code == 121  # DocumentValidationFailure

        # A second restore into the now non-empty databases is refused, and writes nothing.
        assert cli.main(["restore", "--from", str(tmp_path / "backups"), "--latest"]) == 7
        assert "non-empty" in capsys.readouterr().err
        assert restored.hospitalizations.count_documents({}) == expected
        # ... unless --drop replaces them.
        restored.hospitalizations.delete_many({"personal_info.gender": "Male"})
        vault = target[encryption.KEY_VAULT_DB][encryption.KEY_VAULT_COLLECTION]
        vault.insert_one({"keyAltNames": ["kept_elsewhere.c:personal_info.name"]})  # not this deployment's
        assert cli.main(["restore", "--from", str(folder), "--drop"]) == 0
        assert restored.hospitalizations.count_documents({}) == expected
        assert vault.count_documents({}) == len(backed_up_keys) + 1
    finally:
        monkeypatch.setenv("MONGODB_URI", first_uri)
        embedded_mongo.stop(second_dir)


def test_a_backup_holds_no_secret(loaded, tmp_path):
    written = backup.write_backup(loaded.client(), loaded.database, loaded.server_label(), str(tmp_path))
    secrets = {"pseudonym key": os.environ["HEALTHCARE_PSEUDONYM_KEY"],
               "admin password": uri_parser.parse_uri(loaded.uri())["password"],
               "master key": os.environ[master_keys.MASTER_KEY_VARIABLE]}
    assert all(len(value) >= 16 for value in secrets.values())
    folder = Path(written.location)
    payload = b"".join(gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()
                       for p in folder.rglob("*") if p.is_file())
    assert b"personal_info" in payload  # the search does read the documents
    for name, value in secrets.items():
        assert value.encode() not in payload, name
    assert master_keys.master_key() not in payload
    assert loaded.uri().encode() not in payload
    # the names stay encrypted: a leaked backup without the master key holds none
    dump = folder / databases(loaded.database)["main"] / "hospitalizations.bson.gz"
    docs = bson.decode_all(gzip.decompress(dump.read_bytes()))
    assert docs and all(encryption.is_encrypted(d[part][name]) for d in docs for part, name in ENCRYPTED_FIELDS)
    clear = encryption.cipher(loaded.hospitalizations()).decrypt_document(docs[0])
    for part, name in ENCRYPTED_FIELDS:
        assert clear[part][name].encode() not in payload


def deployment_documents(mongo: MongoResource) -> int:
    """Every document a backup of the deployment takes: its databases' collections and its data
    keys in the shared key vault."""
    client = mongo.client()
    found = sum(client[db][info["name"]].count_documents({}) for db in databases(mongo.database).values()
                for info in client[db].list_collections() if info["type"] == "collection")
    return found + client[encryption.KEY_VAULT_DB][encryption.KEY_VAULT_COLLECTION].count_documents(
        backup.key_vault_filter(mongo.database))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def test_the_bench_figures_a_backup_from_what_it_wrote(loaded, tmp_path):
    # measured in this process: its peak RSS is this process's high-water mark during the call
    rss_before, started = peak_rss_mb(), time.perf_counter()
    figures = measure_backup(loaded.database, tmp_path / "backups")
    rss_after, elapsed = peak_rss_mb(), time.perf_counter() - started
    in_source = deployment_documents(loaded)
    folder = newest(tmp_path / "backups")
    on_disk = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and p.parent != folder)
    assert figures["documents"] == in_source > 0
    assert figures["bytes"] == on_disk > 0
    assert rss_before - 0.1 <= figures["peak_rss_mb"] <= rss_after + 0.1, (rss_before, figures, rss_after)
    assert 0 < figures["backup_s"] and 0 < figures["verify_s"] and \
        figures["backup_s"] + figures["verify_s"] <= elapsed + 0.02, (figures, elapsed)


@pytest.mark.parametrize("damage", ["flipped byte", "truncated", "missing metadata"])
def test_a_damaged_backup_is_refused_naming_the_file(loaded, tmp_path, damage, capsys):
    written = backup.write_backup(loaded.client(), loaded.database, loaded.server_label(), str(tmp_path / "b"))
    main = databases(loaded.database)["main"]
    folder = Path(written.location)
    if damage == "missing metadata":
        broken = folder / main / "hospitalizations.metadata.json.gz"
        broken.unlink()
    else:
        broken = folder / main / "hospitalizations.bson.gz"
        data = bytearray(broken.read_bytes())
        if damage == "flipped byte":
            data[len(data) // 2] ^= 0x01
        else:
            del data[len(data) - 100:]
        broken.write_bytes(bytes(data))
    with pytest.raises(backup.BackupError, match=str(broken)):
        backup.verify(backup.open_backup(str(folder)))
    # The restore refuses it before writing anything, naming the file.
    scratch = {db: f"scratch_{uuid.uuid4().hex[:8]}" for db in written.manifest["databases"]}
    with pytest.raises(backup.BackupError, match=str(broken)):
        backup.restore(backup.open_backup(str(folder)), loaded.client(), loaded.database, rename=scratch)
    assert not set(scratch.values()) & set(loaded.client().list_database_names())


def test_a_bson_stream_cut_inside_a_document_is_named(tmp_path):
    """Damage the manifest agrees with (a backup written broken) is caught by the BSON framing."""
    store = LocalStore(tmp_path)
    docs = b"".join(bson.encode({"_id": i, "x": "y" * 50}) for i in range(3))
    summary = backup_files.write_file(store, "b", "db/c.bson.gz", iter([docs[:-10]]))
    opened = backup.Opened(store, "b", {"files": {"db/c.bson.gz": summary}})
    with pytest.raises(backup.BackupError, match=r"db/c\.bson\.gz: ends inside a document"):
        list(opened.documents("db", "c"))


def test_reads_go_range_by_range_and_take_every_document_once(loaded, monkeypatch):
    """The embedded server holds a query's whole result: a collection larger than a range is read in
    several, over the patient_id index, and the analysts' copy over its keyed _id index; together
    they take each document once, whatever its _id's type."""
    monkeypatch.setattr(scans, "RANGE_DOCUMENTS", 300)
    client, dbs = loaded.client(), databases(loaded.database)
    hospitalizations = client[dbs["main"]].hospitalizations
    copy = client[dbs["analytics"]][COPY_COLLECTION]
    copy.insert_one({"_id": 7, "odd": "an _id that is not a string"})
    for collection in (hospitalizations, copy):
        total = collection.count_documents({})
        matches = backup_files.read_ranges(collection, total)
        assert len(matches) > 3
        ids = [d["_id"] for d in backup_files.raw_documents(collection, matches)]
        assert len(ids) == len(set(ids)) == total
        plan = collection.find(matches[1]).explain()["queryPlanner"]["winningPlan"]
        assert "IXSCAN" in str(plan), plan


def signed_backup(store: LocalStore, name: str, verified: bool = True) -> None:
    """An empty backup this deployment signed (and, with `verified`, read back)."""
    manifest = signing.sign({"format": backup_files.FORMAT, "name": name, "databases": {}, "files": {}})
    backup_files.write_file(store, name, backup.MANIFEST, iter([json.dumps(manifest).encode()]), compress=False)
    if verified:
        backup.mark_verified(backup.Opened(store, name, manifest), {})


def test_retention_deletes_older_backups_only_after_a_newer_one_verified(tmp_path):
    store = LocalStore(tmp_path)
    a, b, c, d = (backup_files.new_name(dt.datetime(2026, 11, day, tzinfo=dt.UTC)) for day in (1, 2, 3, 4))
    for name in (a, b, d):
        signed_backup(store, name)
    signed_backup(store, c, verified=False)
    (tmp_path / "not-a-backup").mkdir()
    # c (unverified) and d (newer than the one just verified) are never counted or deleted; a
    # folder not named like a backup is never deleted.
    assert backup.prune(store, b, keep_count=1) == [a]
    assert store.names() == [b, c, d, "not-a-backup"]
    assert backup.prune(store, d, keep_count=1) == [b]
    assert store.names() == [c, d, "not-a-backup"]


def test_the_cli_keeps_the_newest_backups(loaded, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HEALTHCARE_BACKUP_KEEP", "2")
    monkeypatch.setenv("HEALTHCARE_BACKUP_URI", str(tmp_path / "backups"))
    for _ in range(3):
        assert cli.main(["backup"]) == 0
    names = LocalStore(tmp_path / "backups").names()
    assert len(names) == 2 and all((tmp_path / "backups" / n / backup.VERIFIED).exists() for n in names)
    assert "deleted older backup" in capsys.readouterr().out


def test_backup_to_s3_is_encrypted_and_restores(loaded, s3_bucket, monkeypatch):
    uri = f"s3://{s3_bucket}/backups"
    written = backup.write_backup(loaded.client(), loaded.database, loaded.server_label(), uri)
    s3 = boto3.client("s3")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket, Prefix="backups/")["Contents"]]
    assert f"backups/{written.name}/{backup.MANIFEST}" in keys
    for key in keys:
        assert s3.head_object(Bucket=s3_bucket, Key=key)["ServerSideEncryption"] == "AES256", key
    opened = backup.open_backup(uri, latest=True)
    assert opened.name == written.name
    scratch = {db: f"s3restore_{uuid.uuid4().hex[:8]}" for db in written.manifest["databases"]}
    client = loaded.client()
    try:
        counts = backup.restore(opened, client, loaded.database, rename=scratch).counts
        assert sum(counts.values()) == sum(written.collections.values())
        report = backup.compare(client, client, opened, scratch)
        assert not [t for t in report.values() if t["differing"] or t["only_in_backup"] or t["only_in_source"]]
        assert sum(t["identical"] for t in report.values()) == sum(written.collections.values())
    finally:
        for db in scratch.values():
            client.drop_database(db)
    # Retention on S3: deleting a backup removes every object under it.
    backup.mark_verified(opened, {})
    later = backup.write_backup(client, loaded.database, loaded.server_label(), uri)
    backup.mark_verified(backup.open_backup(later.location), {})
    assert backup.prune(S3Store(uri), later.name, keep_count=1) == [written.name]
    assert not s3.list_objects_v2(Bucket=s3_bucket, Prefix=f"backups/{written.name}/").get("KeyCount")


def test_s3_uploads_are_streamed_in_parts_with_the_kms_key(s3_bucket, monkeypatch):
    monkeypatch.setenv("HEALTHCARE_BACKUP_KMS_KEY_ID", "alias/healthcare-backups")
    store = S3Store(f"s3://{s3_bucket}/p")
    assert store.encryption() == {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "alias/healthcare-backups"}
    monkeypatch.delenv("HEALTHCARE_BACKUP_KMS_KEY_ID")
    payload = bytes(range(256)) * ((2 * PART_BYTES + 12345) // 256)
    with store.writer("b", "big.bin") as out:
        for start in range(0, len(payload), 1 << 20):
            out.write(payload[start:start + (1 << 20)])
        assert len(out.parts) == 2 and len(out.buffer) < PART_BYTES  # never more than a part held
    head = boto3.client("s3").head_object(Bucket=s3_bucket, Key="p/b/big.bin", PartNumber=1)
    assert head["PartsCount"] == 3
    with store.reader("b", "big.bin") as stream:
        assert stream.read() == payload


def test_a_failed_upload_leaves_no_object(s3_bucket):
    store = S3Store(f"s3://{s3_bucket}/p")
    with pytest.raises(RuntimeError, match="interrupted"), store.writer("b", "x.bin") as out:
        out.write(b"some bytes")
        raise RuntimeError("interrupted")
    assert not store.exists("b", "x.bin")
    assert not boto3.client("s3").list_multipart_uploads(Bucket=s3_bucket).get("Uploads")


def test_the_asset_its_check_and_the_restore_drill(loaded, tmp_path):
    """mongo_backup with its blocking check, then the drill: restored into scratch databases and
    compared document by document; a document that differs fails the comparison."""
    in_source = deployment_documents(loaded)
    result = dg.materialize([mongo_backup, *[c for c in DEFS.asset_checks if mongo_backup.key in
                                             {s.asset_key for s in c.check_specs}]],
                            resources={"mongo": loaded},
                            run_config={"ops": {"mongo_backup": {"config": {"to": str(tmp_path)}}}})
    assert check_results(result) == {"backup_reads_back_intact": True, "backup_restores_identically": True}
    drill = next(e for e in result.get_asset_check_evaluations() if e.check_name == "backup_restores_identically")
    assert drill.metadata["documents_restored"].value == in_source > 0  # every document, once
    assert not [n for n in loaded.client().list_database_names() if n.endswith("__restore_drill")]

    opened = backup.open_backup(str(tmp_path), latest=True)
    client = loaded.client()
    scratch = {db: f"drill_{uuid.uuid4().hex[:8]}" for db in opened.manifest["databases"]}
    try:
        backup.restore(opened, client, loaded.database, rename=scratch)
        restored = client[scratch[databases(loaded.database)["main"]]].hospitalizations
        restored.update_one({"personal_info.age": {"$lt": 100}}, {"$inc": {"personal_info.age": 1}})
        report = backup.compare(client, client, opened, scratch)
        assert report[f"{loaded.database}.hospitalizations"]["differing"] == 1
    finally:
        for db in scratch.values():
            client.drop_database(db)


def test_an_s3_uri_names_a_bucket(tmp_path):
    with pytest.raises(ValueError, match="s3://bucket/prefix"):
        S3Store("s3://")
    shutil.rmtree(tmp_path)
    with pytest.raises(backup.BackupError, match="no good backup"):
        backup.open_backup(str(tmp_path), latest=True)


# ---- erasure reaches the backups -----------------------------------------------------------------


def erase(collection, stay: dict) -> tuple[str, int]:
    """Erase the patient of one stay, as erase-patient does; returns its keyed id and its stays."""
    name = encryption.cipher(collection).decrypt(stay["personal_info"]["name"])
    person = stay["personal_info"]
    selection = gdpr.select(collection, name, person["gender"], person["blood_type"])
    [patient] = selection.patients
    gdpr.erase_patient(collection, selection)
    return patient.patient_id, patient.stays


def stays_of(collection, skip: int = 0) -> list[dict]:
    """Every stay of one patient (the one of the `skip`-th stay, by _id)."""
    first = next(collection.find({}).sort("_id", 1).skip(skip).limit(1))
    return list(collection.find({"patient_id": first["patient_id"]}))


def test_a_restore_from_before_an_erasure_keeps_the_patient_erased(loaded, small_csv, tmp_path, capsys):
    collection = loaded.hospitalizations()
    [stay, *_] = stays_of(collection)
    access.refresh_doctor_app(collection, stay["administrative_info"]["hospital"])
    app = access.doctor_app_copy(collection)
    in_app = app.count_documents({"patient_id": stay["patient_id"]})
    assert in_app >= 1
    assert cli.main(["backup", "--to", str(tmp_path / "backups")]) == 0
    documents = collection.count_documents({})
    patient_id, stays = erase(collection, stay)
    name = encryption.cipher(collection).decrypt(stay["personal_info"]["name"])
    capsys.readouterr()

    assert cli.main(["restore", "--from", str(tmp_path / "backups"), "--latest", "--drop"]) == 0
    printed = capsys.readouterr().out
    assert collection.count_documents({"patient_id": patient_id}) == 0
    assert app.count_documents({"patient_id": patient_id}) == 0
    assert collection.count_documents({}) == documents - stays  # everything else came back
    assert patient_id in audit.erased_patient_ids(collection.database)
    # said, and recorded in the audit log: counts and keyed ids, never a name
    assert f"erased patients' stays kept out: {stays} of {collection.full_name}, {in_app} of {app.full_name}" \
        in printed, printed
    entry = audit.audit_db(collection.database)[audit.AUDIT_COLLECTION].find_one({"action": "restore"},
                                                                               sort=[("at", -1)])
    assert entry["erased_stays_kept_out"] == {collection.full_name: stays, app.full_name: in_app}
    assert entry["patient_ids"] == [patient_id]
    assert name not in json_util.dumps(entry)
    # the analysts' release restored with them counted those stays: the erasure is applied to it
    # again, so its bookkeeping matches the collection, and the copy is what it may release
    assert release_audit(loaded) == {"released_copy_is_anonymous": True, "release_bookkeeping_matches_source": True}
    assert "erasure applied again to the analysts' release: " in printed, printed
    # a later load neither brings the patient back nor finds anything to redo
    again = materialize(small_csv, loaded)
    assert again.success
    assert collection.count_documents({"patient_id": patient_id}) == 0


def release_audit(mongo) -> dict[str, bool]:
    """The whole-collection audit of the analysts' release (collection_audit_job)."""
    result = dg.materialize([*DEFS.assets, *DEFS.asset_checks], selection=COLLECTION_AUDIT,
                            resources={"mongo": mongo, "settings": pipeline_settings()}, raise_on_error=False)
    return check_results(result)


def test_a_restore_never_shrinks_the_erasure_list(loaded, tmp_path):
    collection, client = loaded.hospitalizations(), loaded.client()
    erasures = audit.audit_db(collection.database)[audit.ERASURES_COLLECTION]
    older = backup.write_backup(client, loaded.database, loaded.server_label(), str(tmp_path))  # an empty list
    first, _ = erase(collection, stays_of(collection)[0])
    later = backup.write_backup(client, loaded.database, loaded.server_label(), str(tmp_path))  # lists `first`
    second, _ = erase(collection, stays_of(collection, skip=10)[0])

    backup.restore(backup.open_backup(older.location), client, loaded.database, drop=True)
    assert audit.erased_patient_ids(collection.database) == {first, second}
    assert collection.count_documents({"patient_id": {"$in": [first, second]}}) == 0
    # a live list that lost an id gets it back from the backup's: the union, never a replacement
    erasures.delete_one({"_id": first})
    restored = backup.restore(backup.open_backup(later.location), client, loaded.database, drop=True)
    assert audit.erased_patient_ids(collection.database) == {first, second}
    assert restored.erased_patients == 2
    assert collection.count_documents({"patient_id": {"$in": [first, second]}}) == 0


def drill(mongo, folder) -> dg.ExecuteInProcessResult:
    return dg.materialize([mongo_backup, *[c for c in DEFS.asset_checks if mongo_backup.key in
                                           {s.asset_key for s in c.check_specs}]],
                          resources={"mongo": mongo}, raise_on_error=False,
                          run_config={"ops": {"mongo_backup": {"config": {"to": str(folder)}}}})


def drill_metadata(result) -> dict:
    evaluation = next(e for e in result.get_asset_check_evaluations() if e.check_name == "backup_restores_identically")
    return {k: v.value for k, v in evaluation.metadata.items()}


def test_the_drill_proves_no_erased_patient_comes_back(loaded, tmp_path):
    collection, client = loaded.hospitalizations(), loaded.client()
    main = collection.full_name
    older = backup.write_backup(client, loaded.database, loaded.server_label(), str(tmp_path / "older"))
    saved = stays_of(collection)
    patient_id, _ = erase(collection, saved[0])

    result = drill(loaded, tmp_path / "drill")
    assert check_results(result) == {"backup_reads_back_intact": True, "backup_restores_identically": True}
    figures = drill_metadata(result)
    assert figures["erased_stays_returned"] == 0 and figures["erased_stays_kept_out"] == 0

    # The comparison counts an erased patient's stay found in what was restored.
    scratch = {db: f"drill_{uuid.uuid4().hex[:8]}" for db in older.manifest["databases"]}
    try:
        restored = backup.restore(backup.open_backup(older.location), client, loaded.database, rename=scratch)
        assert restored.kept_out[f"{scratch[loaded.database]}.hospitalizations"] == len(saved)
        client[scratch[loaded.database]].hospitalizations.insert_one(saved[0])  # came back
        report = backup.compare(client, client, backup.open_backup(older.location), scratch)
        assert report[main]["erased_returned"] == 1
        assert main in backup.differences(report)
    finally:
        for db in scratch.values():
            client.drop_database(db)

    # A source holding an erased patient's stay (as a restore used to leave it) fails the drill.
    collection.insert_one(saved[0], bypass_document_validation=True)
    result = drill(loaded, tmp_path / "drill")
    assert check_results(result)["backup_restores_identically"] is False
    figures = drill_metadata(result)
    assert figures["erased_stays_kept_out"] == 1 and figures["erased_stays_returned"] == 0
    assert patient_id not in str(figures)  # counts only
