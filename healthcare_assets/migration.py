"""Documents loaded before names were encrypted: their direct identifiers encrypted in place.

One-time and resumable: each range of the collection (scans) is read for the documents that still
hold a clear identifier, and each is updated only if it still holds the clear values read, so a
stopped run leaves every document either as it was or encrypted, and the next run takes what is
left. Then `clear_identifiers` counts, over the whole collection, the documents whose identifiers
are not encrypted: zero proves the migration complete.
"""

from __future__ import annotations

from collections.abc import Callable

from pymongo import UpdateOne
from pymongo.collection import Collection

from healthcare_assets import encryption, scans

NOT_ENCRYPTED = {"$or": [{path: {"$not": {"$type": "binData"}}} for path in encryption.field_paths()]}


def encrypt_existing(collection: Collection, log: Callable[[str], None] = print) -> int:
    """Encrypt every clear identifier of the collection; returns how many documents changed.
    Validation is bypassed: a migrated document fits the validator only once both of its
    identifiers are encrypted, and the old validator (strings) does not accept them."""
    cipher = encryption.cipher(collection, create=True)
    projection = {"$project": dict.fromkeys(encryption.field_paths(), 1)}
    changed = 0
    for batch in scans.batches(collection, [{"$match": NOT_ENCRYPTED}, projection]):
        requests = []
        for doc in batch:
            read = {path: value for path in encryption.field_paths()
                    if isinstance(value := _get(doc, path), str)}
            encrypted = cipher.encrypt_document(doc)
            requests.append(UpdateOne({"_id": doc["_id"], **read},
                                      {"$set": {path: _get(encrypted, path) for path in read}}))
        if requests:
            changed += collection.bulk_write(requests, ordered=False, bypass_document_validation=True).modified_count
            log(f"encrypted the identifiers of {changed:,} documents so far")
    cipher.close()
    return changed


def clear_identifiers(collection: Collection) -> int:
    """Documents of the collection with an identifier that is not BinData (the whole collection)."""
    return scans.count(collection, NOT_ENCRYPTED)


def _get(doc: dict, path: str):
    part, _, name = path.partition(".")
    return doc.get(part, {}).get(name)
