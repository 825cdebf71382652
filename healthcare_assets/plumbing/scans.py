"""Passes over many documents, one range of a keyed field at a time.

The embedded server holds a query's whole input and result in memory until the cursor is spent:
one aggregation over a million documents took it past 10 GB. A keyed hash (HMAC) is uniform over
its hex digits, so equal slices of that space, on an indexed field, are queries of about
RANGE_DOCUMENTS documents, each served by an index. On MongoDB it only adds round trips.

Which field a collection is sliced by, and which index serves it, is the caller's to say
(healthcare_assets/domain/collection_definitions.py).
"""

import math
from collections.abc import Iterator

from pymongo.collection import Collection

RANGE_DOCUMENTS = 20_000


def ranges(documents: int, field: str, digits: int) -> list[dict]:
    """$match filters that together take every one of `documents` documents once: slices of the
    hex space of `field` (`digits` hex digits; the first and last open-ended, so any string falls
    in one), and documents without the field."""
    parts = math.ceil(documents / RANGE_DOCUMENTS)
    if parts <= 1:
        return [{}]
    bounds = [f"{16**digits * i // parts:0{digits}x}" for i in range(1, parts)]
    lows, highs = [None, *bounds], [*bounds, None]
    slices = [{field: {op: v for op, v in (("$gte", low), ("$lt", high)) if v is not None}}
              for low, high in zip(lows, highs, strict=True)]
    return [*slices, {field: None}]


def batches(collection: Collection, pipeline: list[dict], matches: list[dict]) -> Iterator[list[dict]]:
    """The pipeline's results, one range's worth at a time (a $group or $sort holds within a range only)."""
    for match in matches:
        yield list(collection.aggregate([{"$match": match}, *pipeline]))


def aggregate(collection: Collection, pipeline: list[dict], matches: list[dict]) -> Iterator[dict]:
    """The pipeline's results, range after range."""
    for batch in batches(collection, pipeline, matches):
        yield from batch


def count(collection: Collection, matches: list[dict], query: dict | None = None) -> int:
    """Documents matching query. A $match of its own after the range's, so the server takes the
    range from the index and applies the query to that slice only."""
    then = [{"$match": query}] if query else []
    return sum(result["n"] for result in aggregate(collection, [*then, {"$count": "n"}], matches))
