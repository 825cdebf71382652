"""Inserts that may be repeated: a document whose _id is already there is kept as it is."""

from __future__ import annotations

from pymongo.collection import Collection
from pymongo.errors import BulkWriteError

DUPLICATE_KEY = 11000  # the server's error code for a document whose _id is already there


def insert_keeping_existing(collection: Collection, documents: list, bypass_document_validation: bool = False,
                            existing: list | None = None) -> int:
    """Keeps a document whose _id is there (noted in `existing`); unordered insert_many beats upserts."""
    if not documents:
        return 0
    try:
        collection.insert_many(documents, ordered=False, bypass_document_validation=bypass_document_validation)
    except BulkWriteError as exc:
        if any(e["code"] != DUPLICATE_KEY for e in exc.details["writeErrors"]):
            raise
        if existing is not None:
            existing += [documents[e["index"]]["_id"] for e in exc.details["writeErrors"]]
    return len(documents)
