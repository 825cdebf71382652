"""index_benchmarks on a small generated export: its structure, its report, and the IXSCAN gate.

No timing is asserted here (timings belong to `make bench`); plans, counts, files, and what each
query was measured on are.
"""

import json

import dagster as dg
import pandas as pd
import pytest

from healthcare_assets.defs.index_benchmarks import (
    IndexBenchmarkConfig,
    every_query_uses_its_index,
    index_benchmarks,
)
from healthcare_assets.defs.ingest import SourceConfig
from healthcare_assets.defs.resources import pipeline_settings
from healthcare_assets.defs.s3_drops import DROP_SELECTION
from healthcare_assets.domain import encryption
from healthcare_assets.domain.collection_definitions import STAYS_KEY
from healthcare_assets.domain.query_benchmarks.measure import (
    SAMPLE_PREFIX,
    copy_scan_sample,
    example_document,
    latency,
    timed,
)
from healthcare_assets.domain.query_benchmarks.plans import ensure_indexes
from healthcare_assets.domain.query_benchmarks.suite import INDEXES, NATURAL, Query, query_suite
from healthcare_assets.plumbing import scans, settings
from healthcare_assets.plumbing.backup_store import BackupStoreResource
from healthcare_assets_tests.fixtures.environment import keys_now, keys_resource
from healthcare_assets_tests.fixtures.runs import (
    DEFS,
    check_results,
    materialize,
    materialized,
    table_rows,
)

# What a drop runs, then the benchmark asset and its check after it.
WITH_BENCHMARK = DROP_SELECTION | dg.AssetSelection.assets(index_benchmarks)
FAST = {"repeats": 2, "scan_repeats": 1}


def run_with_benchmarks(source, mongo, **config) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [*DEFS.assets, *DEFS.asset_checks],
        selection=WITH_BENCHMARK,
        resources={"mongo": mongo, "keys": keys_resource(), "settings": pipeline_settings(), "backups": BackupStoreResource()},
        run_config=dg.RunConfig(ops={"raw_csv": SourceConfig(source=str(source)),
                                     "index_benchmarks": IndexBenchmarkConfig(**FAST | config)}),
        raise_on_error=False,
    )


def table_cells(table: str) -> dict[str, list[str]]:
    """The markdown table's rows, by query name, as lists of cells."""
    return {row[0]: row for row in table_rows(table)[1:]}


def assert_bounds_are_stated(q: dict, documents: int) -> None:
    """Every query says what bounds it with the index, forced to a COLLSCAN, and in pandas."""
    bound, ix = q["bound"], q["indexed"]
    assert bound["kind"] in ("result size", "index lookup"), q["name"]
    assert bound["indexed"].startswith(bound["kind"] + ":"), bound
    assert f"{ix['docs_fetched']:,} docs" in bound["indexed"], bound
    if bound["kind"] == "result size":
        assert "µs/doc" in bound["indexed"], bound
    assert bound["collscan"].startswith(f"every document: the server reads and decodes all {documents:,} docs"), bound
    assert bound["pandas"].startswith("the whole CSV"), bound


def test_asset_sits_after_the_load_with_a_blocking_check():
    graph = DEFS.resolve_asset_graph()
    node = graph.get(dg.AssetKey("index_benchmarks"))
    assert "mongo_hospitalizations" in {k.to_user_string() for k in node.parent_keys}
    assert node.group_name == "mongodb" and node.kinds == {"mongodb"}
    specs = list(every_query_uses_its_index.check_specs)
    assert [s.asset_key for s in specs] == [dg.AssetKey("index_benchmarks")]
    assert all(s.blocking for s in specs)


def test_every_index_has_a_query_and_every_query_an_index():
    sample = {"personal_info": {"name": "Ann Lee", "age": 40, "gender": "Female"},
              "medical_info": {"condition": "Asthma"},
              "admission_info": {"date_admission": pd.Timestamp("2021-03-04").to_pydatetime()},
              "administrative_info": {"hospital": "Kim Inc", "billing_amount": 1234.5}}
    suite = [q for q, _ in query_suite(sample)]
    assert len(suite) == 8
    assert {q.index for q in suite} == set(INDEXES)
    # each query filters on its index's leading field, so an index can serve it
    for q in suite:
        assert INDEXES[q.index][0][0] in q.filter, q.name


def test_latency_is_the_median_and_p95_of_every_run():
    calls = []
    figures, rows = timed(5, lambda: calls.append(1) or 7)
    assert len(calls) == 5 and figures["runs"] == 5 and rows == 7
    # four runs of 1 to 4 ms; the 95th percentile interpolates between the two slowest
    assert latency([0.004, 0.001, 0.003, 0.002]) == {"median_ms": 2.5, "p95_ms": 3.85, "runs": 4}
    scaled = latency([0.004, 0.001, 0.003, 0.002], scale=10)
    assert scaled == {"median_ms": 25.0, "p95_ms": 38.5, "runs": 4, "measured_median_ms": 2.5, "measured_p95_ms": 3.85}


@pytest.mark.slow
def test_benchmark_reports_plans_counts_and_files(mongo, small_csv):
    result = run_with_benchmarks(small_csv, mongo)
    assert result.success
    assert all(check_results(result).values()), check_results(result)
    assert check_results(result)["every_query_uses_its_index"] is True

    collection = mongo.hospitalizations()
    documents = collection.count_documents({})
    indexes = {tuple(tuple(k) for k in info["key"]): name for name, info in collection.index_information().items()}
    for name, keys in INDEXES.items():
        assert indexes.get(tuple(keys)) == name

    report = json.loads((settings.reports_dir() / "index_benchmarks.json").read_text())
    assert report["documents"] == documents
    assert [i["name"] for i in report["indexes"]] == list(INDEXES)
    assert all(i["built_now"] for i in report["indexes"])
    raw = pd.read_csv(small_csv, dtype=str, keep_default_na=False)
    duplicates = int(raw.duplicated().sum())
    suite = {q["name"]: Query(**q) for q in result.output_for_node("index_benchmarks")["suite"]}
    assert [q["name"] for q in report["queries"]] == list(suite)
    for q in report["queries"]:
        ix, scan = q["indexed"], q["collscan"]
        assert ix["stage"] == "IXSCAN" and ix["index"] == q["index"], q["name"]
        assert [tuple(k) for k in ix["key_pattern"]] == INDEXES[q["index"]]
        assert scan["stage"] == "COLLSCAN" and scan["docs_examined"] == documents
        assert 0 < ix["docs_examined"] < documents, q["name"]
        assert q["speedup"] == round(scan["median_ms"] / ix["median_ms"], 1)  # of the figures it reports
        assert q["indexed"]["p95_ms"] >= q["indexed"]["median_ms"] > 0
        # the counts are the server's answers, computed again here
        query = suite[q["name"]]
        expected = len(list(collection.aggregate(query.pipeline()))) if query.group else collection.count_documents(query.filter)
        assert q["rows"] == expected > 0, q["name"]
        assert query.run(collection, hint=NATURAL) == expected
        # pandas reads the raw CSV: duplicates (never loaded) are the only extra rows it can find
        assert q["rows"] <= q["pandas"]["rows"] <= q["rows"] + duplicates, q["name"]
        # a collection this small is measured as it is: nothing scaled, every bound stated
        assert ix["measured_on"] == scan["measured_on"] == "collection" and ix["scale"] == scan["scale"] == 1
        assert ix["docs_fetched"] == ix["docs_examined"] and not q["rows_estimated"]
        assert q["speedup_basis"] == "measured"
        assert_bounds_are_stated(q, documents)
    stored = suite["patient_by_name"].filter["personal_info.name"]
    assert encryption.is_encrypted(stored)  # asked as stored (and served by the index, above); the CSV in clear
    assert "[redacted]" in json.dumps(report) and encryption.cipher(collection, keys_now()).decrypt(stored) not in json.dumps(report)

    png = (settings.reports_dir() / "index_benchmarks.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    meta = materialized(result)["index_benchmarks"]
    assert meta["dagster/uri"] == meta["report_url"] == (settings.reports_dir() / "index_benchmarks.json").as_uri()
    table = meta["queries"]
    assert table.count("\n") == 1 + len(report["queries"])  # header, rule, one line per query
    assert table_rows(table)[0][-1] == "bounded by"
    assert not any("~" in cell for cells in table_cells(table).values() for cell in cells[3:9])  # nothing scaled
    assert all(q["bound"]["indexed"] in table for q in report["queries"])
    assert meta["min_speedup"] == min(q["speedup"] for q in report["queries"])
    assert report["scan_sample_documents"] is None and meta["scan_sample_documents"] is None
    assert report["notes"] and all(note in meta["notes"] for note in report["notes"])
    assert "sample" not in meta["notes"]
    costs = report["server_costs"]
    assert costs["fixed_ms"] > 0 and costs["us_per_fetched_doc"] > 0


def test_check_fails_until_every_index_exists(mongo, small_csv):
    # Load only (no benchmark asset): the collection has none of the client's indexes yet.
    assert materialize(small_csv, mongo).success
    collection = mongo.hospitalizations()
    suite = {"suite": [vars(q) for q, _ in query_suite(collection.find_one())]}

    without = every_query_uses_its_index(index_benchmarks=suite, mongo=mongo)
    assert without.passed is False
    assert len(without.metadata["not_on_their_index"].value) == 8

    ensure_indexes(collection)
    assert every_query_uses_its_index(index_benchmarks=suite, mongo=mongo).passed is True

    collection.drop_index("gender_age")
    one_missing = every_query_uses_its_index(index_benchmarks=suite, mongo=mongo)
    assert one_missing.passed is False
    assert one_missing.metadata["not_on_their_index"].value == ["demographics"]
    assert "demographics" in one_missing.description
    assert {"figure", "limit", "setting", "look_at"} <= one_missing.metadata.keys()
    assert one_missing.metadata["look_at"].value == (settings.reports_dir() / "index_benchmarks.json").as_uri()


def test_a_larger_collection_is_scanned_through_a_sample(mongo, small_csv):
    """Past max_held_documents, no query makes the server read the whole collection: the forced
    COLLSCANs examine the sample's documents only, indexed queries with a larger result run there
    too, both are scaled, and the sample is dropped afterwards."""
    held = 200  # of ~2,000 documents: the condition query (~1/6 of them) then has too large a result
    result = run_with_benchmarks(small_csv, mongo, max_held_documents=held)
    assert result.success
    assert check_results(result)["every_query_uses_its_index"] is True

    collection = mongo.hospitalizations()
    documents = collection.count_documents({})
    report = json.loads((settings.reports_dir() / "index_benchmarks.json").read_text())
    assert report["documents"] == documents > held
    assert report["scan_sample_documents"] == held
    assert not [name for name in mongo.db().list_collection_names() if name.startswith(SAMPLE_PREFIX)]

    suite = {q["name"]: Query(**q) for q in result.output_for_node("index_benchmarks")["suite"]}
    on_sample = set()
    for q in report["queries"]:
        ix, scan = q["indexed"], q["collscan"]
        # the forced scan read the sample and nothing else, and its time stands for the collection's
        assert scan["stage"] == "COLLSCAN" and scan["docs_examined"] == scan["measured_documents"] == held
        assert scan["measured_on"] == "sample" and scan["scale"] == round(documents / held, 3)
        assert abs(scan["median_ms"] - scan["measured_median_ms"] * documents / held) < 0.01
        assert ix["stage"] == "IXSCAN" and ix["index"] == q["index"], q["name"]
        # an indexed query moves to the sample exactly when its result, estimated there, passes the limit
        too_large = scan["returned"] * documents / held > held
        assert (ix["measured_on"] == "sample") is too_large, q["name"]
        if too_large:
            on_sample.add(q["name"])
            assert ix["docs_examined"] <= held and ix["docs_fetched"] == round(ix["docs_examined"] * documents / held)
            assert q["rows_estimated"] and q["speedup_basis"] == "both scaled from the sample"
        else:
            expected = (len(list(collection.aggregate(suite[q["name"]].pipeline()))) if suite[q["name"]].group
                        else collection.count_documents(suite[q["name"]].filter))
            assert ix["scale"] == 1 and q["rows"] == expected and not q["rows_estimated"], q["name"]
            assert q["speedup_basis"] == "COLLSCAN scaled from the sample"
        assert_bounds_are_stated(q, documents)
        assert f"timed on a {held:,}-doc sample" in q["bound"]["collscan"]
    assert "condition" in on_sample and "patient_by_name" not in on_sample

    meta = materialized(result)["index_benchmarks"]
    assert meta["scan_sample_documents"] == held
    assert f"{held:,}-document sample" in meta["notes"]
    assert all(name in meta["notes"] for name in on_sample)
    cells = table_cells(meta["queries"])
    assert all(cells[name][5].startswith("~") and cells[name][6].startswith("~") for name in suite)  # COLLSCAN, speedup
    assert all(cells[name][4].startswith("~") == (name in on_sample) for name in suite)  # indexed


def test_sample_and_parameters_come_from_the_lowest_patient_id_slices(mongo, small_csv, monkeypatch):
    assert materialize(small_csv, mongo).success
    collection = mongo.hospitalizations()
    documents = collection.count_documents({})
    monkeypatch.setattr(scans, "RANGE_DOCUMENTS", 100)  # ~20 slices of this small collection
    slices = scans.ranges(documents, *STAYS_KEY)
    assert len(slices) > 10

    ids = sorted(d["patient_id"] for d in collection.find({}, {"patient_id": 1}))
    assert example_document(collection, documents)["patient_id"] == ids[0]

    size = 250  # two and a half slices
    sample = mongo.db()[f"{SAMPLE_PREFIX}test"]
    try:
        assert copy_scan_sample(collection, sample, documents, size) == size
        copied = list(sample.find())
        assert len(copied) == size == len({d["_id"] for d in copied})
        for doc in copied[:: size // 10]:  # the documents themselves, unchanged
            assert collection.find_one({"_id": doc["_id"]}) == doc
        # all of them from the lowest slices: none above the third slice's upper bound
        assert max(d["patient_id"] for d in copied) < slices[2]["patient_id"]["$lt"]
        assert ids[0] in {d["patient_id"] for d in copied}
    finally:
        sample.drop()
