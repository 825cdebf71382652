"""Whole-collection passes, one patient_id range at a time.

The embedded server holds a query's whole input and result in memory until the cursor is spent:
one aggregation over a million documents took it past 10 GB. patient_id is a keyed hash, uniform
over its 64 hex digits and indexed, so equal slices of that space are queries of about
RANGE_DOCUMENTS documents, each served by the index. On MongoDB it only adds round trips.
"""

import math
from collections.abc import Iterator

from pymongo.collection import Collection

FIELD = "patient_id"
RANGE_DOCUMENTS = 20_000
_HEX_DIGITS = 64  # HMAC-SHA256


def ranges(collection: Collection) -> list[dict]:
    """$match filters that together take every document once: slices of the hex space (the first
    and last open-ended, so any string falls in one), and documents with no patient_id at all."""
    parts = math.ceil(collection.estimated_document_count() / RANGE_DOCUMENTS)
    if parts <= 1:
        return [{}]
    bounds = [f"{16**_HEX_DIGITS * i // parts:0{_HEX_DIGITS}x}" for i in range(1, parts)]
    lows, highs = [None, *bounds], [*bounds, None]
    slices = [{FIELD: {op: v for op, v in (("$gte", low), ("$lt", high)) if v is not None}}
              for low, high in zip(lows, highs, strict=True)]
    return [*slices, {FIELD: None}]


def batches(collection: Collection, pipeline: list[dict]) -> Iterator[list[dict]]:
    """The pipeline's results, one range's worth at a time (a $group or $sort holds within a range only)."""
    for match in ranges(collection):
        yield list(collection.aggregate([{"$match": match}, *pipeline]))


def aggregate(collection: Collection, pipeline: list[dict]) -> Iterator[dict]:
    """The pipeline's results, range after range."""
    for batch in batches(collection, pipeline):
        yield from batch


def count(collection: Collection, query: dict | None = None) -> int:
    """Documents matching query. A $match of its own after the range's, so the server takes the
    range from the index and applies the query to that slice only."""
    then = [{"$match": query}] if query else []
    return sum(result["n"] for result in aggregate(collection, [*then, {"$count": "n"}]))
