"""Documents loaded before names were encrypted: their direct identifiers encrypted in place.

One-time and resumable: each range of the collection (scans) is read for the documents that still
hold a clear identifier, and each is updated only if it still holds the clear values read, so a
stopped run leaves every document either as it was or encrypted, and the next run takes what is
left. The doctor app's copy gets the same, under its hospitals' own data keys. Then `clear_identifiers`
counts, over a whole collection, the documents whose identifiers are not encrypted: zero in both
proves the migration complete.
"""

from __future__ import annotations

from collections.abc import Callable

from pymongo import UpdateOne
from pymongo.collection import Collection

from healthcare_assets.domain import encryption
from healthcare_assets.plumbing import scans

NOT_ENCRYPTED = {"$or": [{path: {"$not": {"$type": "binData"}}} for path in encryption.field_paths()]}


def encrypt_existing(collection: Collection, log: Callable[[str], None] = print) -> int:
    """Encrypt every clear identifier of the collection under its data keys."""
    cipher = encryption.cipher(collection, create=True)
    return _encrypt_in_place(collection, lambda doc: cipher, log)


def encrypt_doctor_app_copy(copy: Collection, log: Callable[[str], None] = print) -> int:
    """Encrypt every clear identifier of the doctor app's copy under its hospital's data key."""
    ciphers: dict[str, encryption.FieldCipher] = {}

    def cipher_of(doc: dict) -> encryption.FieldCipher:
        hospital = doc["administrative_info"]["hospital"]
        if hospital not in ciphers:
            ciphers[hospital] = encryption.doctor_app_cipher(copy, hospital, create=True)
        return ciphers[hospital]

    return _encrypt_in_place(copy, cipher_of, log)


def _encrypt_in_place(collection: Collection, cipher_of: Callable[[dict], encryption.FieldCipher],
                      log: Callable[[str], None]) -> int:
    """Returns how many documents changed. Validation is bypassed: a migrated document fits the
    validator only once both of its identifiers are encrypted, and the old validator (strings)
    does not accept them."""
    projection = {"$project": dict.fromkeys([*encryption.field_paths(), "administrative_info.hospital"], 1)}
    changed = 0
    for batch in scans.batches(collection, [{"$match": NOT_ENCRYPTED}, projection]):
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
    """Documents of the collection with an identifier that is not BinData (the whole collection)."""
    return scans.count(collection, NOT_ENCRYPTED)


def _get(doc: dict, path: str):
    part, _, name = path.partition(".")
    return doc.get(part, {}).get(name)
