"""Passes range by range of a keyed, so uniform, hex field: the embedded server holds a query's result in memory."""

import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import bson
from bson.raw_bson import RawBSONDocument
from pymongo.collection import Collection

RANGE_DOCUMENTS = 10_000


def ranges(documents: int, field: str, digits: int) -> list[dict]:
    """Filters taking every document once (the ends open, so any string falls in one, then no field)."""
    parts = math.ceil(documents / RANGE_DOCUMENTS)
    if parts <= 1:
        return [{}]
    bounds = [f"{16**digits * i // parts:0{digits}x}" for i in range(1, parts)]
    lows, highs = [None, *bounds], [*bounds, None]
    slices = [{field: {op: v for op, v in (("$gte", low), ("$lt", high)) if v is not None}}
              for low, high in zip(lows, highs, strict=True)]
    return [*slices, {field: None}]


def batches(collection: Collection, pipeline: list[dict], matches: list[dict]) -> Iterator[list[dict]]:
    """The pipeline's results, one range's worth at a time (a $group or $sort holds within a range only). The next
    range is fetched, undecoded, while the caller decodes and uses this one: the server's time and ours overlap."""
    raw = collection.with_options(codec_options=collection.codec_options.with_options(document_class=RawBSONDocument))

    def fetch(match: dict) -> list[RawBSONDocument]:
        return list(raw.aggregate([{"$match": match}, *pipeline]))

    with ThreadPoolExecutor(max_workers=1) as ahead:
        pending = [ahead.submit(fetch, match) for match in matches[:1]]
        for i in range(len(matches)):
            fetched = pending.pop().result()
            pending += [ahead.submit(fetch, match) for match in matches[i + 1:i + 2]]
            decoded = [bson.decode(document.raw, collection.codec_options) for document in fetched]
            del fetched  # before the caller holds the decoded range: one range undecoded at most
            yield decoded


def aggregate(collection: Collection, pipeline: list[dict], matches: list[dict]) -> Iterator[dict]:
    for batch in batches(collection, pipeline, matches):
        yield from batch


def count(collection: Collection, matches: list[dict], query: dict | None = None) -> int:
    """Documents matching query: its own $match after the range's, so the range comes from the index."""
    then = [{"$match": query}] if query else []
    return sum(result["n"] for result in aggregate(collection, [*then, {"$count": "n"}], matches))
