"""Exactly once: overlapping files add only their new rows; a row in two files lists both."""

import csv

from healthcare_assets_tests.fixtures.runs import document_digests, materialize, materialized


def write_rows(path, header, rows):
    with open(path, "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows([header, *rows])
    return path


def test_overlapping_files_add_only_new_rows(mongo, small_csv, tmp_path):
    with open(small_csv, newline="") as f:
        header, *rows = list(csv.reader(f))
    rows = list(map(list, dict.fromkeys(map(tuple, rows))))[:1000]  # distinct rows
    first = write_rows(tmp_path / "january.csv", header, rows[:600])
    second = write_rows(tmp_path / "february.csv", header, rows[400:])  # 200 rows in both

    a = materialized(materialize(first, mongo))["mongo_hospitalizations"]
    b_result = materialize(second, mongo)
    assert b_result.success
    b = materialized(b_result)["mongo_hospitalizations"]

    collection = mongo.hospitalizations()
    assert (a["documents_inserted"], b["documents_inserted"]) == (600, 400)
    assert b["documents_already_present"] == 200
    assert collection.count_documents({}) == 1000
    both = collection.count_documents({"metadata.sources": {"$all": [a["source_sha256"], b["source_sha256"]]}})
    assert both == 200
    assert collection.count_documents({"metadata.sources": b["source_sha256"]}) == 600

    before = document_digests(collection)
    again = materialized(materialize(second, mongo))["mongo_hospitalizations"]
    assert again["documents_inserted"] == 0 and len(before) == 1000
    assert document_digests(collection) == before  # not one document rewritten
