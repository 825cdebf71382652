"""Backups written and restored on real servers: the committed data onto a second embedded
daemon, no secret in a backup, the bench's figures, range-by-range reads."""

from __future__ import annotations

import gzip
import os
import resource
import stat
import time
import uuid
from pathlib import Path

import bson
import pytest
from bson import json_util
from pymongo import uri_parser
from pymongo.errors import WriteError

from healthcare_assets.domain import encryption, local_server, master_keys
from healthcare_assets.domain.backup import files as backup_files
from healthcare_assets.domain.backup import writing
from healthcare_assets.domain.deployment_databases import databases
from healthcare_assets.domain.privacy import COPY_COLLECTION, VIEW_NAME
from healthcare_assets.domain.schema import ENCRYPTED_FIELDS
from healthcare_assets.plumbing import embedded_mongo, scans
from healthcare_assets.plumbing.backup_store import LocalStore
from healthcare_assets.plumbing.mongo import connect
from healthcare_assets.tooling import cli
from healthcare_assets.tooling.bench.one_size import measure_backup
from healthcare_assets_tests.fixtures.backups import (
    deployment_documents,
    describe,
    documents,
    newest,
)
from healthcare_assets_tests.fixtures.environment import COMMITTED_CSV, keys_now
from healthcare_assets_tests.fixtures.runs import materialize


@pytest.mark.slow
def test_backup_of_the_committed_data_restores_on_another_server(cli_database, tmp_path, monkeypatch, capsys):
    source = cli_database.client()
    assert materialize(COMMITTED_CSV, cli_database).success
    dbs = databases(cli_database.database)
    main = source[dbs["main"]]
    # Another deployment's data key in the shared key vault: not this backup's to take.
    other = f"other_{uuid.uuid4().hex[:8]}"
    encryption.cipher(source[other].hospitalizations, keys_now(), create=True).key_id("personal_info.name")
    try:
        assert cli.main(["backup", "--to", str(tmp_path / "backups")]) == 0
    finally:
        assert encryption.drop_keys(source, other) == 1
    folder = newest(tmp_path / "backups")
    assert (folder / backup_files.VERIFIED).is_file()
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
        names = encryption.cipher(restored.hospitalizations, keys_now())
        assert encryption.is_encrypted(stay["personal_info"]["name"])
        assert names.decrypt(restored.hospitalizations.find_one({"_id": stay["_id"]})["personal_info"]["name"]) \
            == encryption.cipher(main.hospitalizations, keys_now()).decrypt(stay["personal_info"]["name"])
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


def test_a_backup_holds_no_secret(small_export_loaded, tmp_path):
    written = writing.write_backup(small_export_loaded.client(), small_export_loaded.database, small_export_loaded.server_label(), LocalStore(tmp_path), keys_now())
    secrets = {"pseudonym key": os.environ["HEALTHCARE_PSEUDONYM_KEY"],
               "admin password": uri_parser.parse_uri(small_export_loaded.uri())["password"],
               "master key": os.environ[master_keys.MASTER_KEY_VARIABLE]}
    assert all(len(value) >= 16 for value in secrets.values())
    folder = Path(written.location)
    payload = b"".join(gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()
                       for p in folder.rglob("*") if p.is_file())
    assert b"personal_info" in payload  # the search does read the documents
    for name, value in secrets.items():
        assert value.encode() not in payload, name
    assert keys_now().master_key() not in payload
    assert small_export_loaded.uri().encode() not in payload
    # the names stay encrypted: a leaked backup without the master key holds none
    dump = folder / databases(small_export_loaded.database)["main"] / "hospitalizations.bson.gz"
    docs = bson.decode_all(gzip.decompress(dump.read_bytes()))
    assert docs and all(encryption.is_encrypted(d[part][name]) for d in docs for part, name in ENCRYPTED_FIELDS)
    clear = encryption.cipher(small_export_loaded.hospitalizations(), keys_now()).decrypt_document(docs[0])
    for part, name in ENCRYPTED_FIELDS:
        assert clear[part][name].encode() not in payload


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def test_the_bench_figures_a_backup_from_what_it_wrote(small_export_loaded, tmp_path):
    # measured in this process: its peak RSS is this process's high-water mark during the call
    rss_before, started = peak_rss_mb(), time.perf_counter()
    figures = measure_backup(small_export_loaded.database, tmp_path / "backups")
    rss_after, elapsed = peak_rss_mb(), time.perf_counter() - started
    in_source = deployment_documents(small_export_loaded)
    folder = newest(tmp_path / "backups")
    on_disk = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and p.parent != folder)
    assert figures["documents"] == in_source > 0
    assert figures["bytes"] == on_disk > 0
    assert rss_before - 0.1 <= figures["peak_rss_mb"] <= rss_after + 0.1, (rss_before, figures, rss_after)
    assert 0 < figures["backup_s"] and 0 < figures["verify_s"] and \
        figures["backup_s"] + figures["verify_s"] <= elapsed + 0.02, (figures, elapsed)


def test_reads_go_range_by_range_and_take_every_document_once(small_export_loaded, monkeypatch):
    """The embedded server holds a query's whole result: a collection larger than a range is read in
    several, over the patient_id index, and the analysts' copy over its keyed _id index; together
    they take each document once, whatever its _id's type."""
    monkeypatch.setattr(scans, "RANGE_DOCUMENTS", 300)
    client, dbs = small_export_loaded.client(), databases(small_export_loaded.database)
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
