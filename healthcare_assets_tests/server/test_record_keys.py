"""Record keys are keyed: a backup's or the doctor app's `_id` neither confirms nor brute-forces a
row, loads stay idempotent, and an installation holding unkeyed ids is re-keyed once."""

from __future__ import annotations

import csv
import gzip
import hashlib
import itertools
from collections import Counter
from pathlib import Path

import bson
import dagster as dg
import pytest

from healthcare_assets.domain import access, encryption, migration
from healthcare_assets.domain.backup import writing
from healthcare_assets.domain.deployment_databases import databases
from healthcare_assets.domain.release.bookkeeping import LEDGER, REBUILD
from healthcare_assets.plumbing.backup_store import LocalStore
from healthcare_assets_tests.fixtures.environment import keys_now, keys_resource
from healthcare_assets_tests.fixtures.runs import DEFS, failure_messages, materialize, materialized

DATE = "%Y-%m-%d"


def row_text(clear: dict) -> str:
    """A decrypted document's cleaned row as anyone who reads the code knows to write it: every
    field in export order, as pandas prints it, joined by the unit separator."""
    person, medical = clear["personal_info"], clear["medical_info"]
    stay, admin = clear["admission_info"], clear["administrative_info"]
    values = (person["name"], person["age"], person["gender"], person["blood_type"], medical["condition"],
              stay["date_admission"].strftime(DATE), admin["doctor"], admin["hospital"], admin["insurance_provider"],
              admin["billing_amount"], stay["room_number"], stay["admission_type"],
              stay["date_discharge"].strftime(DATE), medical["medication"], "".join(medical["test_results"]))
    return "\x1f".join(str(v) for v in values)


def unkeyed(text: str) -> str:
    """The record key as it was: a SHA-256 of the row, which needs no key to compute."""
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def with_names(clear: dict, name: str, doctor: str) -> dict:
    return {**clear, "personal_info": {**clear["personal_info"], "name": name},
            "administrative_info": {**clear["administrative_info"], "doctor": doctor}}


def backed_up(folder: Path, db: str, collection: str = "hospitalizations") -> list[dict]:
    with gzip.open(folder / db / f"{collection}.bson.gz") as stream:
        return list(bson.decode_file_iter(stream))


def busiest_hospital(collection) -> str:
    return Counter(d["administrative_info"]["hospital"] for d in collection.find({}, {"administrative_info": 1})
                   ).most_common(1)[0][0]


@pytest.fixture
def doctor_app(mongo, small_csv):
    """The small export loaded, and the doctor app's copy of its busiest hospital."""
    assert materialize(small_csv, mongo).success
    collection = mongo.hospitalizations()
    hospital = busiest_hospital(collection)
    assert access.refresh_doctor_app(collection, keys_now(), hospital) > 1
    return access.doctor_app_copy(collection), hospital


def test_no_id_in_a_backup_or_the_doctor_app_is_the_hash_of_its_row(mongo, small_csv, doctor_app, tmp_path):
    collection = mongo.hospitalizations()
    copy, hospital = doctor_app
    written = writing.write_backup(mongo.client(), mongo.database, mongo.server_label(), LocalStore(tmp_path / "b"), keys_now())
    folder, dbs = Path(written.location), databases(mongo.database)
    readers = ((dbs["main"], encryption.cipher(collection, keys_now())),
               (dbs["doctor_app"], encryption.doctor_app_cipher(copy, keys_now(), hospital)))
    for db, cipher in readers:
        docs = backed_up(folder, db)
        assert docs and all(encryption.is_encrypted(d["personal_info"]["name"]) for d in docs)
        confirmed = [d["_id"] for d in docs if unkeyed(row_text(cipher.decrypt_document(d))) == d["_id"]]
        assert confirmed == [], f"{len(confirmed)} of {len(docs)} ids in {db} are the unkeyed hash of their row"
        assert all(len(d["_id"]) == 32 and int(d["_id"], 16) >= 0 for d in docs)  # still the record key's format
    # the doctor app's live copy too, and its records are the source's (erasure finds them by patient_id)
    app = encryption.doctor_app_cipher(copy, keys_now(), hospital)
    assert not [d for d in copy.find() if unkeyed(row_text(app.decrypt_document(d))) == d["_id"]]
    assert {d["_id"] for d in copy.find({}, {"_id": 1})} <= {d["_id"] for d in collection.find({}, {"_id": 1})}

    # the same rows loaded again, from the same file or another, are still one document each
    before = collection.count_documents({})
    part = tmp_path / "part_of_the_export.csv"
    with open(small_csv, newline="") as f, open(part, "w", newline="") as out:
        csv.writer(out, lineterminator="\n").writerows(itertools.islice(csv.reader(f), 501))
    for source in (small_csv, part):
        again = materialize(source, mongo)
        assert again.success
        assert materialized(again)["mongo_hospitalizations"]["documents_inserted"] == 0
    assert collection.count_documents({}) == before == len(collection.distinct("_id"))


@pytest.fixture
def loaded_backup(mongo, small_csv, tmp_path):
    assert materialize(small_csv, mongo).success
    written = writing.write_backup(mongo.client(), mongo.database, mongo.server_label(), LocalStore(tmp_path / "b"), keys_now())
    return backed_up(Path(written.location), mongo.database), encryption.cipher(mongo.hospitalizations(), keys_now())


def test_a_dictionary_attack_on_a_backup_confirms_no_name(loaded_backup):
    """The attacker holds a backup (every field in clear but the encrypted name and doctor) and
    lists of candidate names and doctors that include the true ones: no pair hashes to an _id."""
    docs, cipher = loaded_backup
    targets = docs[:20]
    truths = [cipher.decrypt_document(d) for d in targets]
    names = sorted({t["personal_info"]["name"] for t in truths} | {f"Candidate {i}" for i in range(20)})
    doctors = sorted({t["administrative_info"]["doctor"] for t in truths} | {f"Doctor {i}" for i in range(20)})
    confirmed = []
    for doc in targets:
        guesses = {unkeyed(row_text(with_names(doc, n, d))): n for n in names for d in doctors}
        if doc["_id"] in guesses:
            confirmed.append(guesses[doc["_id"]])
    assert len(names) * len(doctors) > 1_000
    assert confirmed == [], f"the brute force confirmed {len(confirmed)} of {len(targets)} names"


def make_unkeyed(collection, cipher) -> int:
    """Turn the collection's documents back into what an installation loaded before record keys
    were keyed: each under the unkeyed hash of its row, at migration version 1."""
    docs = list(collection.find())
    for doc in docs:
        legacy = {**doc, "_id": unkeyed(row_text(cipher.decrypt_document(doc))),
                  "metadata": {**doc["metadata"], "migration_version": 1}}
        collection.delete_one({"_id": doc["_id"]})
        collection.insert_one(legacy, bypass_document_validation=True)
    return len(docs)


@pytest.mark.slow
def test_an_installation_with_unkeyed_ids_is_refused_then_rekeyed_once(mongo, small_csv, doctor_app):
    # imported here: the job is new, and the other tests of this file stand without it
    from healthcare_assets.defs.migration import rekey_existing_documents

    collection = mongo.hospitalizations()
    copy, hospital = doctor_app
    keyed_ids = sorted(collection.distinct("_id"))
    keyed_app_ids = sorted(copy.distinct("_id"))
    source_cipher, app_cipher = encryption.cipher(collection, keys_now()), encryption.doctor_app_cipher(copy, keys_now(), hospital)
    documents = make_unkeyed(collection, source_cipher)
    make_unkeyed(copy, app_cipher)
    collection.database[migration.RECORD_KEYS].delete_one({"_id": collection.name})  # as an earlier version left it
    assert not set(collection.distinct("_id")) & set(keyed_ids)
    # a stay edited since it was loaded (the backend and the doctor app may update records) is re-keyed
    # from its _id, not from what it holds now: a load of its row still finds it
    edited = {"administrative_info.billing_amount": 1.25}
    collection.update_one({}, {"$set": edited})
    copy.update_one({}, {"$set": edited})

    # A load refuses to write beside unkeyed ids (it would duplicate every row), naming the job.
    with dg.DagsterInstance.ephemeral() as instance:
        refused = materialize(small_csv, mongo, instance=instance)
        assert not refused.success
        messages = " ".join(failure_messages(instance, refused.run_id))
    assert "rekey_existing_documents" in messages, messages
    assert collection.count_documents({}) == documents

    job = rekey_existing_documents
    assert DEFS.get_job_def(job.name)  # in the code location, where the message sends the operator
    assert job.execute_in_process(resources={"mongo": mongo, "keys": keys_resource()}).success
    # every id is the one a load computes now: the same documents, no unkeyed id left
    assert sorted(collection.distinct("_id")) == keyed_ids
    assert sorted(copy.distinct("_id")) == keyed_app_ids
    assert not [d for d in copy.find() if unkeyed(row_text(app_cipher.decrypt_document(d))) == d["_id"]]
    assert collection.count_documents({"metadata.migration_version": {"$lt": 2}}) == 0
    assert collection.count_documents(edited) == copy.count_documents(edited) == 1
    # the release's bookkeeping named the old ids: marked stale, so the next publication rebuilds it
    assert collection.database[LEDGER].find_one({"_id": REBUILD})["state"] == "rebuilding"
    # run again: nothing left to do
    assert job.execute_in_process(resources={"mongo": mongo, "keys": keys_resource()}).success
    assert sorted(collection.distinct("_id")) == keyed_ids

    again = materialize(small_csv, mongo)
    assert again.success
    assert materialized(again)["mongo_hospitalizations"]["documents_inserted"] == 0
    assert collection.count_documents({}) == documents and collection.count_documents(edited) == 1
    assert collection.database[LEDGER].find_one({"_id": REBUILD})["state"] == "done"  # the release was rebuilt
