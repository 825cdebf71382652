"""Passes over many documents, one patient_id range at a time.

The embedded server holds a query's whole input and result in memory until the cursor is spent:
one aggregation over a million documents took it past 10 GB. patient_id is a keyed hash, uniform
over its 64 hex digits and indexed, so equal slices of that space are queries of about
RANGE_DOCUMENTS documents, each served by an index. On MongoDB it only adds round trips.

Two kinds of pass: over the whole collection (`patient_id` index), and over one source file's
documents (the compound `metadata.sources, patient_id` index), whose cost follows the file's size,
not the collection's. The analysts' copy has no patient_id: its passes slice its keyed `_id`
(32 hex digits), through an index that starts with `_id` (the embedded server's planner scans the
whole collection for a range on the plain `_id` index).
"""

import math
from collections.abc import Iterator

from pymongo.collection import Collection

from healthcare_assets.plumbing import document_counts

FIELD = "patient_id"
SOURCES = "metadata.sources"
RANGE_DOCUMENTS = 20_000
_HEX_DIGITS = 64  # HMAC-SHA256


def ranges(documents: int, field: str = FIELD, digits: int = _HEX_DIGITS) -> list[dict]:
    """$match filters that together take every one of `documents` documents once: slices of the
    hex space of `field` (the first and last open-ended, so any string falls in one), and documents
    without the field."""
    parts = math.ceil(documents / RANGE_DOCUMENTS)
    if parts <= 1:
        return [{}]
    bounds = [f"{16**digits * i // parts:0{digits}x}" for i in range(1, parts)]
    lows, highs = [None, *bounds], [*bounds, None]
    slices = [{field: {op: v for op, v in (("$gte", low), ("$lt", high)) if v is not None}}
              for low, high in zip(lows, highs, strict=True)]
    return [*slices, {field: None}]


def collection_ranges(collection: Collection) -> list[dict]:
    return ranges(document_counts.known(collection))


COPY_INDEX = [("_id", 1), ("medical_condition", 1)]


def copy_ranges(copy: Collection) -> list[dict]:
    """Slices of the analysts' copy by its keyed _id (see the module's doc for COPY_INDEX)."""
    return ranges(copy.estimated_document_count(), "_id", 32)


def file_ranges(source_sha256: str, documents: int) -> list[dict]:
    """The documents that came in one file (SHA-256 in metadata.sources), in slices sized by the file."""
    return [{SOURCES: source_sha256, **match} for match in ranges(documents)]


def batches(collection: Collection, pipeline: list[dict], matches: list[dict] | None = None) -> Iterator[list[dict]]:
    """The pipeline's results, one range's worth at a time (a $group or $sort holds within a range
    only); over the whole collection unless the ranges are given."""
    for match in collection_ranges(collection) if matches is None else matches:
        yield list(collection.aggregate([{"$match": match}, *pipeline]))


def aggregate(collection: Collection, pipeline: list[dict], matches: list[dict] | None = None) -> Iterator[dict]:
    """The pipeline's results, range after range."""
    for batch in batches(collection, pipeline, matches):
        yield from batch


def count(collection: Collection, query: dict | None = None, matches: list[dict] | None = None) -> int:
    """Documents matching query. A $match of its own after the range's, so the server takes the
    range from the index and applies the query to that slice only."""
    then = [{"$match": query}] if query else []
    return sum(result["n"] for result in aggregate(collection, [*then, {"$count": "n"}], matches))
