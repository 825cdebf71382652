"""Range-by-range passes take every document exactly once, whatever the number of ranges."""

import datetime as dt
import random
import time

import pytest
from bson.binary import Binary

from healthcare_assets.domain.collection_definitions import file_ranges, stays_ranges
from healthcare_assets.plumbing import scans


@pytest.fixture
def collection(mongo):
    rng = random.Random(5)
    ids = [f"{rng.getrandbits(256):064x}" for _ in range(1_500)]
    docs = [{"_id": n, "patient_id": rng.choice(ids), "odd": n % 2} for n in range(3_000)]
    docs += [{"_id": "no-id"}, {"_id": "null-id", "patient_id": None},  # written around the validator
             {"_id": "low", "patient_id": ""}, {"_id": "high", "patient_id": "zz"}, {"_id": "top", "patient_id": "f" * 64}]
    collection = mongo.hospitalizations()
    collection.create_index("patient_id")
    collection.insert_many(docs)
    return collection


@pytest.mark.parametrize("per_range", [10**9, 700, 90])
def test_every_document_once(collection, monkeypatch, per_range):
    monkeypatch.setattr(scans, "RANGE_DOCUMENTS", per_range)
    expected_ranges = 1 if per_range > 3_005 else -(-3_005 // per_range) + 1  # slices + no patient_id
    ranges = stays_ranges(collection)
    assert len(ranges) == expected_ranges
    seen = [doc["_id"] for doc in scans.aggregate(collection, [{"$project": {"_id": 1}}], ranges)]
    assert len(seen) == len(set(seen)) == collection.count_documents({})
    assert scans.count(collection, ranges) == 3_005
    assert scans.count(collection, ranges, {"odd": 1}) == collection.count_documents({"odd": 1}) == 1_500


@pytest.mark.parametrize("per_range", [10**9, 300, 45])
def test_a_files_ranges_take_its_documents_once_and_no_other(collection, monkeypatch, per_range):
    monkeypatch.setattr(scans, "RANGE_DOCUMENTS", per_range)
    mine = [d["_id"] for d in collection.find({"odd": 1}, {"_id": 1}).limit(900)]
    collection.update_many({"_id": {"$in": mine}}, {"$set": {"metadata.sources": ["a" * 64]}})
    collection.update_many({"_id": {"$in": mine[:100]}}, {"$push": {"metadata.sources": "b" * 64}})
    collection.update_many({"odd": 0}, {"$set": {"metadata.sources": ["b" * 64]}})
    collection.create_index([("metadata.sources", 1), ("patient_id", 1)])
    seen = [d["_id"] for d in scans.aggregate(collection, [{"$project": {"_id": 1}}], file_ranges("a" * 64, 900))]
    assert sorted(seen) == sorted(mine)
    assert scans.count(collection, file_ranges("b" * 64, 1_600)) == 100 + 1_500


def test_ranges_come_in_order_decoded_as_the_collection_decodes_and_a_pass_may_stop_early(collection, monkeypatch):
    """The next range is fetched while the caller works on this one: what the caller gets must not change."""
    monkeypatch.setattr(scans, "RANGE_DOCUMENTS", 500)
    collection.insert_one({"_id": "typed", "patient_id": "8" * 64, "when": dt.datetime(2024, 2, 29, 13, 5),
                           "name": Binary(b"\x01\x02", 6), "nested": {"list": [1, 2.5, None]}})
    ranges = stays_ranges(collection)
    plain = [list(collection.aggregate([{"$match": match}])) for match in ranges]
    fetched = list(scans.batches(collection, [], ranges))
    assert fetched == plain and len(fetched) == len(ranges) > 2
    typed = next(d for batch in fetched for d in batch if d["_id"] == "typed")
    assert isinstance(typed["name"], Binary) and typed["when"] == dt.datetime(2024, 2, 29, 13, 5)
    started = time.monotonic()
    passing = scans.batches(collection, [], ranges)
    assert next(passing) == plain[0]
    passing.close()  # a caller that stops: the range fetched ahead is awaited, nothing is left running
    assert time.monotonic() - started < 30
