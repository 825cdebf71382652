"""MongoDB's own tools against the project's backups, on embedded servers: `mongorestore --gzip
--dir <backup>` restores a backup identically on a fresh server, and a plain `mongodump --gzip`
folder of a deployment reads as a backup does (domain/backup/plain_dump.py)."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import pytest
from bson import json_util

from healthcare_assets.domain import encryption, local_server
from healthcare_assets.domain.backup import reading, restore, writing
from healthcare_assets.domain.backup.files import RAW
from healthcare_assets.domain.backup.plain_dump import open_plain_dump
from healthcare_assets.domain.deployment_databases import databases
from healthcare_assets.domain.privacy import VIEW_NAME
from healthcare_assets.plumbing import embedded_mongo
from healthcare_assets.plumbing.backup_store import LocalStore
from healthcare_assets.plumbing.mongo import MongoResource, connect
from healthcare_assets.tooling import cli
from healthcare_assets.tooling.generate import generate_csv
from healthcare_assets_tests.fixtures.environment import keys_now
from healthcare_assets_tests.fixtures.runs import materialize

VAULT = (encryption.KEY_VAULT_DB, encryption.KEY_VAULT_COLLECTION)


@pytest.fixture(scope="module")
def tiny_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("exports") / "tiny_export.csv"
    generate_csv(rows=300, seed=23, out=path)
    return path


@pytest.fixture
def tiny_chain_beside_other_keys(mongo, tiny_csv) -> MongoResource:
    """A small deployment through the whole drop chain (collection, view, analysts' copy, audit
    log, data keys), and another deployment's data key beside its own in the shared key vault."""
    assert materialize(tiny_csv, mongo).success
    client, other = mongo.client(), f"other_{uuid.uuid4().hex[:8]}"
    encryption.cipher(client[other].hospitalizations, keys_now(), create=True).key_id("personal_info.name")
    yield mongo
    encryption.drop_keys(client, other)


def schema(db) -> dict:
    """Each collection's type and options (validators, a view's definition) and its indexes, whole
    but for `ns`: mongorestore sends the legacy field in its index specs, and the embedded server
    keeps it (it names the restored namespace: nothing a query or a constraint reads)."""
    return {info["name"]: (info.get("type"), info.get("options"),
                           sorted(({k: v for k, v in ix.items() if k != "ns"} for ix in db[info["name"]].list_indexes()),
                                  key=lambda ix: ix["name"])
                           if info.get("type") != "view" else [])
            for info in db.list_collections()}


def digests(collection, match: dict | None = None) -> dict:
    return {doc["_id"]: hashlib.sha256(doc.raw).hexdigest()
            for doc in collection.with_options(codec_options=RAW).find(match or {})}


def test_mongorestore_restores_a_backup_identically_on_a_fresh_server(tiny_chain_beside_other_keys, mongo_tools, tmp_path):
    source = tiny_chain_beside_other_keys.client()
    written = writing.write_backup(source, tiny_chain_beside_other_keys.database, tiny_chain_beside_other_keys.server_label(), LocalStore(tmp_path / "b"), keys_now())
    vault_filter = writing.key_vault_filter(tiny_chain_beside_other_keys.database)
    keys = source[VAULT[0]][VAULT[1]].count_documents(vault_filter)
    assert written.collections[".".join(VAULT)] == keys and 0 < keys < source[VAULT[0]][VAULT[1]].count_documents({})
    second = tmp_path / "second"
    local_server.ensure_running(second)
    try:
        uri = local_server.client_uri(second)
        done = mongo_tools.run("mongorestore", uri, "--gzip", f"--dir={written.location}")
        target = connect(uri)
        report = restore.compare(source, target, reading.open_backup(written.location, keys_now()), tiny_chain_beside_other_keys.collection, {})
        assert not restore.differences(report), restore.differences(report)
        assert {name: tally["identical"] for name, tally in report.items()} == written.collections
        assert sum(written.collections.values()) > 300
        for db in databases(tiny_chain_beside_other_keys.database).values():
            assert schema(target[db]) == schema(source[db]), db
            assert set(target[db].list_collection_names()) == set(written.manifest["databases"][db])
        main = databases(tiny_chain_beside_other_keys.database)["main"]
        view = [json_util.dumps(d) for d in target[main][VIEW_NAME].find().sort("_id")]
        assert view and view == [json_util.dumps(d) for d in source[main][VIEW_NAME].find().sort("_id")]
        vault, source_vault = target[VAULT[0]][VAULT[1]], source[VAULT[0]][VAULT[1]]
        assert digests(vault) == digests(source_vault, vault_filter)  # this deployment's keys, no other
        assert schema(target[VAULT[0]]) == schema(source[VAULT[0]])
        # the names decrypt there with the restored keys
        stay = source[main].hospitalizations.find_one({}, sort=[("_id", 1)])
        name = encryption.cipher(target[main].hospitalizations, keys_now()).decrypt(
            target[main].hospitalizations.find_one({"_id": stay["_id"]})["personal_info"]["name"])
        assert name == encryption.cipher(source[main].hospitalizations, keys_now()).decrypt(stay["personal_info"]["name"])
        assert "0 document(s) failed to restore" in done.stderr
    finally:
        embedded_mongo.stop(second)


def test_a_plain_mongodump_folder_reads_as_a_backup(tiny_chain_beside_other_keys, mongo_tools, mongo_uri, tmp_path):
    source = tiny_chain_beside_other_keys.client()
    out = mongo_tools.dump_deployment(mongo_uri, tiny_chain_beside_other_keys.database, tmp_path / "dump")
    # mongodump's layout: one folder per database, nothing beside them, no other deployment's key
    dbs = databases(tiny_chain_beside_other_keys.database)
    held = {db for db in dbs.values() if source[db].list_collection_names()} | {VAULT[0]}
    assert {p.name for p in out.iterdir()} == held
    assert all(p.is_dir() for p in out.iterdir())
    dump = open_plain_dump(str(out))

    expected = {db: {info["name"]: {"type": "view"} if info["type"] == "view" else
                     {"type": "collection", "documents": source[db][info["name"]].count_documents({})}
                     for info in source[db].list_collections()} for db in held - {VAULT[0]}}
    vault = source[VAULT[0]][VAULT[1]]
    keys = vault.count_documents(writing.key_vault_filter(tiny_chain_beside_other_keys.database))
    assert 0 < keys < vault.count_documents({})
    expected[VAULT[0]] = {VAULT[1]: {"type": "collection", "documents": keys}}
    assert dump.manifest["databases"] == expected
    assert dump.manifest["files"] == {
        str(p.relative_to(out)): {"bytes": p.stat().st_size, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
        for p in out.rglob("*") if p.is_file()}
    hospitalizations = source[dbs["main"]].hospitalizations
    dumped = sorted(hashlib.sha256(raw).hexdigest() for raw in dump.documents(dbs["main"], "hospitalizations"))
    assert dumped == sorted(digests(hospitalizations).values())  # byte-identical
    meta = dump.metadata(dbs["main"], VIEW_NAME)
    view = next(i for i in source[dbs["main"]].list_collections() if i["name"] == VIEW_NAME)
    assert meta["type"] == "view" and meta["options"]["viewOn"] == "hospitalizations"
    assert json_util.dumps(meta["options"]) == json_util.dumps(view["options"])  # key order too
    report = dump.verify()
    assert report["documents"] == sum(e.get("documents", 0) for cs in expected.values() for e in cs.values())
    assert report["unverified"] and all(isinstance(s, str) for s in report["unverified"])


def test_restore_takes_a_plain_mongodump_folder_only_when_asked(tiny_chain_beside_other_keys, mongo_tools, mongo_uri, tmp_path,
                                                                 monkeypatch, capsys):
    """`restore --mongodump` into a fresh installation holding the same keys: every document as
    dumped, the names readable; without the flag the unsigned folder is refused."""
    source, dbs = tiny_chain_beside_other_keys.client(), databases(tiny_chain_beside_other_keys.database)
    folder = mongo_tools.dump_deployment(mongo_uri, tiny_chain_beside_other_keys.database, tmp_path / "dump")
    dump = open_plain_dump(str(folder))
    monkeypatch.setenv("MONGODB_DATABASE", tiny_chain_beside_other_keys.database)
    second_dir, first_uri = tmp_path / "second", mongo_uri
    local_server.ensure_running(second_dir)
    try:
        monkeypatch.setenv("MONGODB_URI", local_server.client_uri(second_dir))
        assert cli.main(["restore", "--from", str(folder)]) == 7
        assert "manifest.json: missing" in capsys.readouterr().err
        assert cli.main(["restore", "--from", str(folder), "--mongodump"]) == 0
        printed = capsys.readouterr().out
        assert "unverified without a manifest" in printed and "data keys: " in printed
        target = connect(local_server.client_uri(second_dir))
        for db, coll, entry in dump.collections():
            if entry["type"] == "collection" and db != dbs["audit"]:  # the audit log gains the restore's entry
                assert set(digests(target[db][coll]).values()) == \
                    {hashlib.sha256(raw).hexdigest() for raw in dump.documents(db, coll)}, f"{db}.{coll}"
        stay = source[dbs["main"]].hospitalizations.find_one({}, sort=[("_id", 1)])
        restored = target[dbs["main"]].hospitalizations
        assert encryption.cipher(restored, keys_now()).decrypt(restored.find_one({"_id": stay["_id"]})["personal_info"]["name"]) \
            == encryption.cipher(source[dbs["main"]].hospitalizations, keys_now()).decrypt(stay["personal_info"]["name"])
    finally:
        monkeypatch.setenv("MONGODB_URI", first_uri)
        embedded_mongo.stop(second_dir)
