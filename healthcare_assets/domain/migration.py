"""Documents of earlier versions brought up to date (one-time, resumable; docs/pipeline.md and
docs/deployment.md): each update applies only if the document still holds what was read, so a stopped run resumes.
A re-keyed document is copied under its new _id before the old one is deleted (stopped: at worst both, the next
run keeps the copy); the release's bookkeeping names the old _ids, so it is marked stale and rebuilt whole."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from pymongo import UpdateOne
from pymongo.collection import Collection

from healthcare_assets.domain import access, encryption
from healthcare_assets.domain.cleaning import keyed_record_key
from healthcare_assets.domain.collection_definitions import stays_ranges
from healthcare_assets.domain.master_keys import MasterKeys
from healthcare_assets.domain.release.bookkeeping import request_rebuild
from healthcare_assets.domain.schema import MIGRATION_VERSION
from healthcare_assets.plumbing import scans
from healthcare_assets.plumbing.idempotent_inserts import insert_keeping_existing

NOT_ENCRYPTED = {"$or": [{path: {"$not": {"$type": "binData"}}} for path in encryption.field_paths()]}


def encrypt_existing(collection: Collection, keys: MasterKeys, log: Callable[[str], None] = print) -> int:
    cipher = encryption.cipher(collection, keys, create=True)
    return _encrypt_in_place(collection, lambda doc: cipher, log)


def encrypt_doctor_app_copy(copy: Collection, keys: MasterKeys, log: Callable[[str], None] = print) -> int:
    ciphers: dict[str, encryption.FieldCipher] = {}

    def cipher_of(doc: dict) -> encryption.FieldCipher:
        hospital = doc["administrative_info"]["hospital"]
        if hospital not in ciphers:
            ciphers[hospital] = encryption.doctor_app_cipher(copy, keys, hospital, create=True)
        return ciphers[hospital]

    return _encrypt_in_place(copy, cipher_of, log)


def _encrypt_in_place(collection: Collection, cipher_of: Callable[[dict], encryption.FieldCipher],
                      log: Callable[[str], None]) -> int:
    """Validation is bypassed: a half-migrated document fits neither the old validator nor the new."""
    projection = {"$project": dict.fromkeys([*encryption.field_paths(), "administrative_info.hospital"], 1)}
    changed = 0
    for batch in scans.batches(collection, [{"$match": NOT_ENCRYPTED}, projection], stays_ranges(collection)):
        requests = []
        for doc in batch:
            read = {path: value for path in encryption.field_paths()
                    if isinstance(value := _get(doc, path), str)}
            encrypted = cipher_of(doc).encrypt_document(doc)
            requests.append(UpdateOne({"_id": doc["_id"], **read},
                                      {"$set": {path: _get(encrypted, path) for path in read}}))
        if requests:
            changed += collection.bulk_write(requests, ordered=False, bypass_document_validation=True).modified_count
            log(f"{collection.full_name}: encrypted the identifiers of {changed:,} documents so far")
    return changed


def clear_identifiers(collection: Collection) -> int:
    return scans.count(collection, stays_ranges(collection), NOT_ENCRYPTED)


def _get(doc: dict, path: str):
    part, _, name = path.partition(".")
    return doc.get(part, {}).get(name)


RECORD_KEYS = "record_keys"  # in the main database: one document per collection whose _ids are keyed
UNKEYED = {"metadata.migration_version": {"$lt": MIGRATION_VERSION}}
DELETE_BATCH = 1_000  # ids per $in (quadratic on the embedded server)


def mark_keyed(collection: Collection) -> None:
    collection.database[RECORD_KEYS].update_one(
        {"_id": collection.name}, {"$setOnInsert": {"since": dt.datetime.now(dt.UTC).replace(tzinfo=None)}},
        upsert=True)


def is_keyed(collection: Collection) -> bool:
    return collection.database[RECORD_KEYS].find_one({"_id": collection.name}, {"_id": 1}) is not None


def rekey_deployment(collection: Collection, secret: bytes, log: Callable[[str], None] = print) -> int:
    """The collection and the doctor app's copy; nothing to do once the collection is marked keyed."""
    if is_keyed(collection):
        return 0
    reason = "the collection's _ids were re-keyed; the release's bookkeeping and copy name the old ones"
    request_rebuild(collection.database, "rekey_existing_documents", reason)  # even if this run stops halfway
    changed = sum(_rekey(c, secret, log) for c in (collection, access.doctor_app_copy(collection)))
    request_rebuild(collection.database, "rekey_existing_documents", reason)  # a rebuild meanwhile saw old _ids
    return changed


def _rekey(collection: Collection, secret: bytes, log: Callable[[str], None]) -> int:
    changed = 0
    for batch in scans.batches(collection, [{"$match": UNKEYED}], stays_ranges(collection)):
        for start in range(0, len(batch), DELETE_BATCH):
            old = batch[start:start + DELETE_BATCH]
            insert_keeping_existing(collection, [
                {**doc, "_id": keyed_record_key(doc["_id"], secret),
                 "metadata": {**doc["metadata"], "migration_version": MIGRATION_VERSION}} for doc in old],
                bypass_document_validation=True)  # as they were: a document of version 1 may predate the validator
            changed += collection.delete_many({"_id": {"$in": [d["_id"] for d in old]}, **UNKEYED}).deleted_count
        if batch:
            log(f"{collection.full_name}: re-keyed {changed:,} documents so far")
    return changed


def unkeyed_documents(collection: Collection) -> int:
    return scans.count(collection, stays_ranges(collection), UNKEYED)
