"""index_benchmarks: timings are reported, never asserted; the blocking check asserts the plans."""

import datetime as dt
import statistics
from dataclasses import asdict
from pathlib import Path

import dagster as dg
from tabulate import tabulate

from healthcare_assets.defs import verdicts
from healthcare_assets.defs.anonymize import anonymized_view
from healthcare_assets.defs.load import mongo_hospitalizations
from healthcare_assets.defs.s3_drops import DROP_SELECTION
from healthcare_assets.domain import encryption
from healthcare_assets.domain.master_keys import MasterKeys
from healthcare_assets.domain.query_benchmarks.measure import example_document, measure_suite
from healthcare_assets.domain.query_benchmarks.plans import ensure_indexes, plan_checks
from healthcare_assets.domain.query_benchmarks.report import (
    bounds,
    markdown_table,
    report_files,
    report_notes,
    server_costs,
    write_files,
)
from healthcare_assets.domain.query_benchmarks.suite import Query, query_suite
from healthcare_assets.domain.sources import Location
from healthcare_assets.plumbing import settings
from healthcare_assets.plumbing.keys import KeysResource
from healthcare_assets.plumbing.mongo import MongoResource


class IndexBenchmarkConfig(dg.Config):
    # Defaults: the full measurement (`make bench`, "Materialize all"); `make run` times fewer runs.
    repeats: int = 7  # timed runs of each query through its index
    scan_repeats: int = 5  # timed full scans per query (forced COLLSCAN, pandas): ~1.5 s each per 55k rows
    # The most documents one query may make the server hold: larger scans and results run on a sample of this
    # many (measured: ~1.1 GB of server memory at 100,000, ~0.35 GB at 30,000).
    max_held_documents: int = 100_000


def _metadata(report: dict, json_path: Path, png_path: Path) -> dict:
    speedups = [r["speedup"] for r in report["queries"] if r["speedup"]]
    return {
        "dagster/row_count": report["documents"], "queries": dg.MetadataValue.md(markdown_table(report["queries"])),
        "notes": dg.MetadataValue.md("\n".join(f"- {note}" for note in report["notes"])),
        "min_speedup": report["min_speedup"], "median_speedup": statistics.median(speedups) if speedups else None,
        "index_build_seconds": report["index_build_seconds"],
        "indexes_built_now": dg.MetadataValue.json([i["name"] for i in report["indexes"] if i["built_now"]]),
        "scan_sample_documents": report["scan_sample_documents"],
        "repeats": report["repeats"], "scan_repeats": report["scan_repeats"],
        "dagster/uri": verdicts.file_uri(json_path),
        **verdicts.links("report", json_path), **verdicts.links("chart", png_path),
    }


# Last in the chain: gated by the privacy checks, its timings never share the server with the copy being built.
@dg.asset(group_name="mongodb", kinds={"mongodb"}, deps=[mongo_hospitalizations, anonymized_view])
def index_benchmarks(context: dg.AssetExecutionContext, config: IndexBenchmarkConfig,
                     mongo: MongoResource, keys: KeysResource) -> dg.Output[dict]:
    """The client's indexes, and what they buy: each query of their suite timed with its index, forced
    to a collection scan and by scanning the source CSV with pandas, with its plan and what bounds it.
    No query makes the server hold more than `max_held_documents`."""
    collection = mongo.hospitalizations()
    indexes, build_seconds = ensure_indexes(collection)
    context.log.info(f"indexes ready in {build_seconds:.1f} s: {[i['name'] for i in indexes if i['built_now']]} built")
    documents = collection.estimated_document_count()
    example = example_document(collection, documents)
    if example is None:
        raise dg.Failure(f"{collection.full_name} is empty: nothing to benchmark")
    csv = Location.recorded(example["metadata"]["source"])  # the one place the source CSV's location is recorded
    name = encryption.cipher(collection, MasterKeys.of(keys)).decrypt(example["personal_info"]["name"])
    suite = query_suite(example, name)
    results, sample_documents = measure_suite(collection, documents, suite, config, csv, context.log)
    costs = server_costs(results)
    for result in results:
        result["bound"] = bounds(result, costs)
    notes = report_notes(results, costs, documents, sample_documents)
    report = {
        "collection": collection.full_name, "server": mongo.server_label(), "documents": documents,
        "csv": csv.uri, "repeats": config.repeats, "scan_repeats": config.scan_repeats,
        "max_held_documents": config.max_held_documents, "scan_sample_documents": sample_documents,
        "indexes": indexes, "index_build_seconds": round(build_seconds, 2),
        "min_speedup": min((r["speedup"] for r in results if r["speedup"]), default=None),
        "server_costs": costs, "notes": notes, "queries": results,
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    json_path, png_path = write_files(report, results, settings.reports_dir())
    # The output keeps the real queries (the check asks the server about them again).
    return dg.Output({**report, "suite": [asdict(q) for q, _ in suite]}, metadata=_metadata(report, json_path, png_path))


@dg.asset_check(asset=index_benchmarks, blocking=True)
def every_query_uses_its_index(index_benchmarks: dict, mongo: MongoResource) -> dg.AssetCheckResult:
    """Every query of the suite is served by an IXSCAN of the index meant for it (speedups are not asserted)."""
    suite = [Query(**q) for q in index_benchmarks["suite"]]
    plans = plan_checks(mongo.hospitalizations(), suite)
    wrong = [p for p in plans if not p.ok]
    table = tabulate([[p.query, p.intended_index, p.stage, p.index or ""] for p in plans],
                     headers=["query", "intended index", "plan", "index used"], tablefmt="github")
    figure = (f"{len(wrong)} of {len(plans)} queries do not use their index ("
              + ", ".join(f"{p.query}: {p.stage}" for p in wrong) + ")") if plans else "no query was planned"
    return verdicts.verdict(
        "every_query_uses_its_index", bool(plans) and not wrong,
        {"queries": len(plans), "not_on_their_index": dg.MetadataValue.json([p.query for p in wrong]),
         "plans": dg.MetadataValue.md(table)},
        verdicts.Why(figure, "every query of the suite is served by an IXSCAN of its index",
                     "none: INDEXES in healthcare_assets/domain/query_benchmarks/suite.py",
                     report_files(settings.reports_dir())[0]))


# `make run`: not the audit or the backups (they have their schedules); QUICK_BENCHMARK times a few
# runs and scans a sample once: about 25 s at 55,000 documents instead of about 5 minutes.
chain_job = dg.define_asset_job(
    "chain_job", selection=DROP_SELECTION | dg.AssetSelection.assets(index_benchmarks),
    description="The six assets of the chain on the configured source, with their blocking checks (`make run`).")
QUICK_BENCHMARK = {"repeats": 3, "scan_repeats": 1, "max_held_documents": 10_000}
