"""Kept document counts: the embedded server counts by reading every document (docs/operations.md)."""

from pymongo import ReturnDocument
from pymongo.collection import Collection

COUNTS = "document_counts"


def start(collection: Collection) -> None:
    collection.database[COUNTS].update_one({"_id": collection.name}, {"$setOnInsert": {"documents": 0}}, upsert=True)


def known(collection: Collection) -> int:
    """The kept count, else the server's estimate (it only sizes range passes)."""
    kept = collection.database[COUNTS].find_one({"_id": collection.name})
    return kept["documents"] if kept else collection.estimated_document_count()


def adjust(collection: Collection, delta: int) -> int:
    """Add `delta` (already applied to the collection) to its count; returns the count."""
    counts = collection.database[COUNTS]
    kept = counts.find_one_and_update({"_id": collection.name}, {"$inc": {"documents": delta}},
                                      return_document=ReturnDocument.AFTER)
    if kept is None:  # a collection from before the count was kept: count it once
        counts.update_one({"_id": collection.name}, {"$setOnInsert": {"documents": collection.count_documents({})}},
                          upsert=True)
        kept = counts.find_one({"_id": collection.name})
    return kept["documents"]
