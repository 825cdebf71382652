"""index_benchmarks on a small generated export: its structure, its report, and the IXSCAN gate.

No timing is asserted here (timings belong to `make bench`); plans, counts and files are.
"""

import json

import dagster as dg
import pandas as pd

from healthcare_assets.definitions import defs
from healthcare_assets.defs.benchmark import (
    INDEXES,
    NATURAL,
    Query,
    ensure_indexes,
    every_query_uses_its_index,
    index_benchmarks,
    query_suite,
)
from healthcare_assets.resources import settings
from healthcare_assets_tests.conftest import check_results, materialize, materialized

# The chain without the benchmark, and with it (whether or not definitions.py lists it yet).
CHAIN = [a for a in defs.assets if index_benchmarks.key not in a.keys]
CHAIN_CHECKS = [c for c in defs.asset_checks if all(s.asset_key != index_benchmarks.key for s in c.check_specs)]
ASSETS = [*CHAIN, index_benchmarks]
CHECKS = [*CHAIN_CHECKS, every_query_uses_its_index]
SELECTION = ASSETS + CHECKS
FAST = {"repeats": 2, "scan_repeats": 1}


def run_with_benchmarks(source, mongo) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        SELECTION,
        resources={"mongo": mongo},
        run_config={"ops": {"raw_csv": {"config": {"source": str(source)}},
                            "index_benchmarks": {"config": FAST}}},
        raise_on_error=False,
    )


def test_asset_sits_after_the_load_with_a_blocking_check():
    graph = dg.Definitions(assets=ASSETS, asset_checks=CHECKS, resources=defs.resources).resolve_asset_graph()
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
        assert ix["runs"] == FAST["repeats"] and scan["runs"] == FAST["scan_repeats"]
        assert q["speedup"] > 0 and q["indexed"]["p95_ms"] >= q["indexed"]["median_ms"] > 0
        # the counts are the server's answers, computed again here
        query = suite[q["name"]]
        expected = len(list(collection.aggregate(query.pipeline()))) if query.group else collection.count_documents(query.filter)
        assert q["rows"] == expected > 0, q["name"]
        assert query.run(collection, hint=NATURAL) == expected
        # pandas reads the raw CSV: duplicates (never loaded) are the only extra rows it can find
        assert q["rows"] <= q["pandas"]["rows"] <= q["rows"] + duplicates, q["name"]
    assert "[redacted]" in json.dumps(report) and suite["patient_by_name"].filter["personal_info.name"] not in json.dumps(report)

    png = (settings.reports_dir() / "index_benchmarks.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    meta = materialized(result)["index_benchmarks"]
    table = meta["queries"]
    assert table.count("\n") == 1 + len(report["queries"])  # header, rule, one line per query
    assert meta["min_speedup"] == min(q["speedup"] for q in report["queries"])


def test_check_fails_until_every_index_exists(mongo, small_csv):
    # Load only (no benchmark asset): the collection has none of the client's indexes yet.
    assert materialize(small_csv, mongo, selection=CHAIN + CHAIN_CHECKS).success
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
