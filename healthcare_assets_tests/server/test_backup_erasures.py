"""The backup asset, its check and the restore drill, and erasures that survive a restore: a
restore from before an erasure keeps the patient erased and never shrinks the erasure list."""

from __future__ import annotations

import uuid

import dagster as dg
import pytest
from bson import json_util

from healthcare_assets.defs.backup import mongo_backup
from healthcare_assets.defs.collection_audit import COLLECTION_AUDIT
from healthcare_assets.defs.resources import pipeline_settings
from healthcare_assets.domain import access, audit, encryption, gdpr
from healthcare_assets.domain.backup import reading, restore, writing
from healthcare_assets.domain.deployment_databases import databases
from healthcare_assets.plumbing.backup_store import BackupStoreResource, LocalStore
from healthcare_assets.tooling import cli
from healthcare_assets_tests.fixtures.backups import deployment_documents
from healthcare_assets_tests.fixtures.environment import keys_now, keys_resource
from healthcare_assets_tests.fixtures.runs import DEFS, check_results, materialize


def test_the_asset_its_check_and_the_restore_drill(small_export_loaded, tmp_path):
    """mongo_backup with its blocking check, then the drill: restored into scratch databases and
    compared document by document; a document that differs fails the comparison."""
    in_source = deployment_documents(small_export_loaded)
    result = dg.materialize([mongo_backup, *[c for c in DEFS.asset_checks if mongo_backup.key in
                                             {s.asset_key for s in c.check_specs}]],
                            resources={"mongo": small_export_loaded, "keys": keys_resource(), "backups": BackupStoreResource()},
                            run_config={"ops": {"mongo_backup": {"config": {"to": str(tmp_path)}}}})
    assert check_results(result) == {"backup_reads_back_intact": True, "backup_restores_identically": True}
    drill = next(e for e in result.get_asset_check_evaluations() if e.check_name == "backup_restores_identically")
    assert drill.metadata["documents_restored"].value == in_source > 0  # every document, once
    assert not [n for n in small_export_loaded.client().list_database_names() if n.endswith("__restore_drill")]

    opened = reading.open_backup(str(tmp_path), keys_now(), latest=True)
    client = small_export_loaded.client()
    scratch = {db: f"drill_{uuid.uuid4().hex[:8]}" for db in opened.manifest["databases"]}
    try:
        restore.restore(opened, client, keys_now(),small_export_loaded.database, small_export_loaded.collection, rename=scratch)
        restored = client[scratch[databases(small_export_loaded.database)["main"]]].hospitalizations
        restored.update_one({"personal_info.age": {"$lt": 100}}, {"$inc": {"personal_info.age": 1}})
        report = restore.compare(client, client, opened, small_export_loaded.collection, scratch)
        assert report[f"{small_export_loaded.database}.hospitalizations"]["differing"] == 1
    finally:
        for db in scratch.values():
            client.drop_database(db)


# ---- erasure reaches the backups -----------------------------------------------------------------

def erase(collection, stay: dict) -> tuple[str, int]:
    """Erase the patient of one stay, as erase-patient does; returns its keyed id and its stays."""
    name = encryption.cipher(collection, keys_now()).decrypt(stay["personal_info"]["name"])
    person = stay["personal_info"]
    selection = gdpr.select(collection, keys_now(), name, person["gender"], person["blood_type"])
    [patient] = selection.patients
    gdpr.erase_patient(collection, keys_now(), selection)
    return patient.patient_id, patient.stays


def stays_of(collection, skip: int = 0) -> list[dict]:
    """Every stay of one patient (the one of the `skip`-th stay, by _id)."""
    first = next(collection.find({}).sort("_id", 1).skip(skip).limit(1))
    return list(collection.find({"patient_id": first["patient_id"]}))


def test_a_restore_from_before_an_erasure_keeps_the_patient_erased(small_export_loaded, small_csv, tmp_path, capsys):
    collection = small_export_loaded.hospitalizations()
    [stay, *_] = stays_of(collection)
    access.refresh_doctor_app(collection, keys_now(), stay["administrative_info"]["hospital"])
    app = access.doctor_app_copy(collection)
    in_app = app.count_documents({"patient_id": stay["patient_id"]})
    assert in_app >= 1
    assert cli.main(["backup", "--to", str(tmp_path / "backups")]) == 0
    documents = collection.count_documents({})
    patient_id, stays = erase(collection, stay)
    name = encryption.cipher(collection, keys_now()).decrypt(stay["personal_info"]["name"])
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
    assert release_audit(small_export_loaded) == {"released_copy_is_anonymous": True, "release_bookkeeping_matches_source": True}
    assert "erasure applied again to the analysts' release: " in printed, printed
    # a later load neither brings the patient back nor finds anything to redo
    again = materialize(small_csv, small_export_loaded)
    assert again.success
    assert collection.count_documents({"patient_id": patient_id}) == 0


def release_audit(mongo) -> dict[str, bool]:
    """The whole-collection audit of the analysts' release (collection_audit_job)."""
    result = dg.materialize([*DEFS.assets, *DEFS.asset_checks], selection=COLLECTION_AUDIT,
                            resources={"mongo": mongo, "keys": keys_resource(), "settings": pipeline_settings(), "backups": BackupStoreResource()}, raise_on_error=False)
    return check_results(result)


def test_a_restore_never_shrinks_the_erasure_list(small_export_loaded, tmp_path):
    collection, client = small_export_loaded.hospitalizations(), small_export_loaded.client()
    erasures = audit.audit_db(collection.database)[audit.ERASURES_COLLECTION]
    older = writing.write_backup(client, small_export_loaded.database, small_export_loaded.server_label(), LocalStore(tmp_path), keys_now())  # an empty list
    first, _ = erase(collection, stays_of(collection)[0])
    later = writing.write_backup(client, small_export_loaded.database, small_export_loaded.server_label(), LocalStore(tmp_path), keys_now())  # lists `first`
    second, _ = erase(collection, stays_of(collection, skip=10)[0])

    restore.restore(reading.open_backup(older.location, keys_now()), client, keys_now(),small_export_loaded.database, small_export_loaded.collection, drop=True)
    assert audit.erased_patient_ids(collection.database) == {first, second}
    assert collection.count_documents({"patient_id": {"$in": [first, second]}}) == 0
    # a live list that lost an id gets it back from the backup's: the union, never a replacement
    erasures.delete_one({"_id": first})
    restored = restore.restore(reading.open_backup(later.location, keys_now()), client, keys_now(),small_export_loaded.database, small_export_loaded.collection, drop=True)
    assert audit.erased_patient_ids(collection.database) == {first, second}
    assert restored.erased_patients == 2
    assert collection.count_documents({"patient_id": {"$in": [first, second]}}) == 0


def drill(mongo, folder) -> dg.ExecuteInProcessResult:
    return dg.materialize([mongo_backup, *[c for c in DEFS.asset_checks if mongo_backup.key in
                                           {s.asset_key for s in c.check_specs}]],
                          resources={"mongo": mongo, "keys": keys_resource(), "backups": BackupStoreResource()}, raise_on_error=False,
                          run_config={"ops": {"mongo_backup": {"config": {"to": str(folder)}}}})


def drill_metadata(result) -> dict:
    evaluation = next(e for e in result.get_asset_check_evaluations() if e.check_name == "backup_restores_identically")
    return {k: v.value for k, v in evaluation.metadata.items()}


@pytest.mark.slow
def test_the_drill_proves_no_erased_patient_comes_back(small_export_loaded, tmp_path):
    collection, client = small_export_loaded.hospitalizations(), small_export_loaded.client()
    main = collection.full_name
    older = writing.write_backup(client, small_export_loaded.database, small_export_loaded.server_label(), LocalStore(tmp_path / "older"), keys_now())
    saved = stays_of(collection)
    patient_id, _ = erase(collection, saved[0])

    result = drill(small_export_loaded, tmp_path / "drill")
    assert check_results(result) == {"backup_reads_back_intact": True, "backup_restores_identically": True}
    figures = drill_metadata(result)
    assert figures["erased_stays_returned"] == 0 and figures["erased_stays_kept_out"] == 0

    # The comparison counts an erased patient's stay found in what was restored.
    scratch = {db: f"drill_{uuid.uuid4().hex[:8]}" for db in older.manifest["databases"]}
    try:
        restored = restore.restore(reading.open_backup(older.location, keys_now()), client, keys_now(),small_export_loaded.database, small_export_loaded.collection, rename=scratch)
        assert restored.kept_out[f"{scratch[small_export_loaded.database]}.hospitalizations"] == len(saved)
        client[scratch[small_export_loaded.database]].hospitalizations.insert_one(saved[0])  # came back
        report = restore.compare(client, client, reading.open_backup(older.location, keys_now()), small_export_loaded.collection, scratch)
        assert report[main]["erased_returned"] == 1
        assert main in restore.differences(report)
    finally:
        for db in scratch.values():
            client.drop_database(db)

    # A source holding an erased patient's stay (as a restore used to leave it) fails the drill.
    collection.insert_one(saved[0], bypass_document_validation=True)
    result = drill(small_export_loaded, tmp_path / "drill")
    assert check_results(result)["backup_restores_identically"] is False
    figures = drill_metadata(result)
    assert figures["erased_stays_kept_out"] == 1 and figures["erased_stays_returned"] == 0
    assert patient_id not in str(figures)  # counts only
