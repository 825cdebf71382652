"""Passes over many documents, one range of a keyed (HMAC, so uniform) hex field at a time: the embedded
server holds a query's whole input and result in memory (a million documents: past 10 GB). The field
and its index are the caller's (domain/collection_definitions.py)."""

import math
from collections.abc import Iterator

from pymongo.collection import Collection

RANGE_DOCUMENTS = 20_000


def ranges(documents: int, field: str, digits: int) -> list[dict]:
    """$match filters taking every document once: slices of `field`'s hex space (the first and last
    open-ended, so any string falls in one), then documents without the field."""
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
    for batch in batches(collection, pipeline, matches):
        yield from batch


def count(collection: Collection, matches: list[dict], query: dict | None = None) -> int:
    """Documents matching query: its own $match after the range's, so the range comes from the index."""
    then = [{"$match": query}] if query else []
    return sum(result["n"] for result in aggregate(collection, [*then, {"$count": "n"}], matches))
