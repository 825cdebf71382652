"""What a run of the chain says about itself, read from its result: failed steps, the load's and the
release's figures, and the index benchmarks' report."""

from __future__ import annotations

import time

import dagster as dg

from healthcare_assets.domain import generalization, privacy
from healthcare_assets.domain.release.publishing import Release
from healthcare_assets.plumbing import scans
from healthcare_assets.plumbing.mongo import MongoResource
from healthcare_assets.tooling.bench.figures import (
    IndexFigures,
    LoadFigures,
    QueryFigures,
    ReleaseFigures,
    StepFailure,
)


def failures(result: dg.ExecuteInProcessResult) -> list[StepFailure]:
    return [StepFailure(e.step_key, str(e.event_specific_data.error.message)[:500])
            for e in result.all_events if e.event_type_value == "STEP_FAILURE"]


def _materialization(result: dg.ExecuteInProcessResult, asset: str) -> dict | None:
    """An asset's materialization metadata as plain values; None when it did not materialize."""
    event = next((e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(asset)), None)
    return None if event is None else {k: v.value for k, v in event.materialization.metadata.items()}


def load_figures(result: dg.ExecuteInProcessResult) -> LoadFigures | None:
    """The load's documents and seconds, as its metadata has them: the whole step, its insert
    phase, and the index builds a first load defers to the end. None when the load did not run."""
    metadata = _materialization(result, "mongo_hospitalizations")
    if metadata is None:
        return None
    load = result.output_for_node("mongo_hospitalizations")
    documents, load_s, insert_s = load["documents_inserted"], metadata["load_seconds"], metadata["insert_seconds"]
    return LoadFigures(documents=documents, rows_in=load["rows_in"], load_s=load_s, insert_s=insert_s,
                       index_build_s=metadata["index_build_seconds"],
                       docs_per_s=round(documents / load_s) if load_s else None,
                       insert_docs_per_s=round(documents / insert_s) if insert_s else None)


def release_figures(result: dg.ExecuteInProcessResult, mongo: MongoResource) -> ReleaseFigures | None:
    """What analysts can read after the chain: the release's own figures, and k, l and the largest
    share of a sensitive value measured on the copy independently of the release's bookkeeping. None when it did not publish."""
    metadata = _materialization(result, "anonymized_view")
    if metadata is None:
        return None
    copy = Release(mongo.hospitalizations(), b"").copy
    started = time.perf_counter()
    released = generalization.Encoder(privacy.VIEW_FIELDS)
    for doc in scans.aggregate(copy, [{"$project": {"_id": 0}}], scans.copy_ranges(copy)):
        released.add(doc)
    k, l_div, share = generalization.independent_measures(released.frame())
    return ReleaseFigures(released=len(released.codes[privacy.QI_FIELDS[0]]), k_pycanon=k, l_pycanon=l_div,
                          largest_share=share,
                          judge_s=round(time.perf_counter() - started, 1),
                          **{name: metadata[name] for name in ("stays_counted", "stays_held_back", "held_back_share",
                                                               "groups_held_back", "generalization", "uniqueness")})


def index_figures(report: dict) -> IndexFigures:
    """What the index benchmark's report says, per query."""
    return IndexFigures(
        documents=report["documents"], index_build_s=report["index_build_seconds"], min_speedup=report["min_speedup"],
        queries={q["name"]: QueryFigures(speedup=q["speedup"], indexed_median_ms=q["indexed"]["median_ms"],
                                         indexed_p95_ms=q["indexed"]["p95_ms"],
                                         collscan_median_ms=q["collscan"]["median_ms"],
                                         pandas_median_ms=q["pandas"]["median_ms"] if q["pandas"] else None,
                                         plan=f"{q['indexed']['stage']} {q['indexed']['index']}", rows=q["rows"])
                 for q in report["queries"]})
