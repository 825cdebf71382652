"""What a run of the chain says about itself: each step's seconds and peak RSS, failures, figures."""

import os
import threading
import time

import dagster as dg
import psutil

from healthcare_assets.domain import generalization, privacy
from healthcare_assets.domain.collection_definitions import copy_ranges
from healthcare_assets.domain.release.publishing import Release
from healthcare_assets.plumbing import scans

POLL_S = 0.25
ENDED = ("SUCCESS", "FAILURE")  # a step's status once it ran to its end (skipped steps never ran)
PEAKS = ("peak_rss_mb", "server_peak_rss_mb")


def rss_mb(pid: int) -> float:
    try:
        return psutil.Process(pid).memory_info().rss / 2**20
    except psutil.Error:
        return 0.0


class RssSampler(threading.Thread):
    """Samples this process's and the server's RSS, so each step gets its own peak."""

    def __init__(self, server_pid: int | None):
        super().__init__(daemon=True)
        self.server_pid, self.samples, self.done = server_pid, [], threading.Event()

    def run(self) -> None:
        while not self.done.wait(POLL_S):
            self.samples.append((time.time(), rss_mb(os.getpid()), rss_mb(self.server_pid) if self.server_pid else 0.0))

    def peaks(self, start: float, end: float) -> list[float]:
        window = [s[1:] for s in self.samples if start <= s[0] <= end + POLL_S]
        return [round(max((w[i] for w in window), default=0), 1) for i in (0, 1)]


def ended_steps(stats: list) -> dict[str, tuple[float, float]]:
    """(start, end) epoch seconds of every step that ran to its end, from `get_run_step_stats`."""
    return {step.step_key: (step.start_time or step.end_time, step.end_time) for step in stats
            if step.status is not None and step.status.value in ENDED and step.end_time}


def step_timings(run_id: str, instance: dg.DagsterInstance, sampler: RssSampler) -> dict[str, dict]:
    return {key: dict(zip(("s", *PEAKS), (round(end - start, 3), *sampler.peaks(start, end)), strict=True))
            for key, (start, end) in ended_steps(instance.get_run_step_stats(run_id)).items()}


def owners(definitions: list, selection: dg.AssetSelection, graph) -> dict[str, str]:
    """Step key (the op's name) -> the asset it belongs to: an asset's own step or its checks'."""
    assets, checks = selection.resolve(graph), selection.resolve_checks(graph)
    found = {}
    for d in definitions:
        if keys := [k for k in d.keys if k in assets] or [k.asset_key for k in d.check_keys if k in checks]:
            found[d.node_def.name] = keys[0].to_user_string()
    return found


def per_asset(timings: dict[str, dict], step_owners: dict[str, str]) -> dict[str, dict]:
    out = {a: dict.fromkeys(("asset_s", "checks_s", *PEAKS), 0.0) for a in dict.fromkeys(step_owners.values())}
    for key, step in timings.items():
        if (owner := step_owners.get(key)) is None:
            continue
        part = out[owner]
        if key == owner:
            part["asset_s"] = step["s"]
        else:
            part["checks_s"] = round(part["checks_s"] + step["s"], 3)
        part |= {peak: max(part[peak], step[peak]) for peak in PEAKS}
    return out


def failures(result: dg.ExecuteInProcessResult) -> list[dict]:
    return [{"step": e.step_key, "error": str(e.event_specific_data.error.message)[:500]}
            for e in result.all_events if e.event_type_value == "STEP_FAILURE"]


def _materialization(result: dg.ExecuteInProcessResult, asset: str) -> dict | None:
    event = next((e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(asset)), None)
    return None if event is None else {k: v.value for k, v in event.materialization.metadata.items()}


def load_figures(result: dg.ExecuteInProcessResult) -> dict | None:
    """The whole load step, its insert phase, and the index builds a first load defers to the end."""
    metadata = _materialization(result, "mongo_hospitalizations")
    if metadata is None:
        return None
    load = result.output_for_node("mongo_hospitalizations")
    documents, load_s, insert_s = load["documents_inserted"], metadata["load_seconds"], metadata["insert_seconds"]
    return {"documents": documents, "rows_in": load["rows_in"], "load_s": load_s, "insert_s": insert_s,
            "index_build_s": metadata["index_build_seconds"],
            "docs_per_s": round(documents / load_s) if load_s else None,
            "insert_docs_per_s": round(documents / insert_s) if insert_s else None}


def release_figures(result: dg.ExecuteInProcessResult, mongo) -> dict | None:
    """The release's own figures, and k, l and the largest share measured on the copy by pycanon."""
    metadata = _materialization(result, "anonymized_view")
    if metadata is None:
        return None
    copy = Release(mongo.hospitalizations(), b"").copy
    started = time.perf_counter()
    released = generalization.Encoder(privacy.VIEW_FIELDS)
    for doc in scans.aggregate(copy, [{"$project": {"_id": 0}}], copy_ranges(copy)):
        released.add(doc)
    k, l_div, share = generalization.independent_measures(released.frame())
    return {"released": len(released.codes[privacy.QI_FIELDS[0]]), "k_pycanon": k, "l_pycanon": l_div,
            "largest_share": share, "judge_s": round(time.perf_counter() - started, 1),
            **{name: metadata[name] for name in ("stays_counted", "stays_held_back", "held_back_share",
                                                 "groups_held_back", "generalization", "uniqueness")}}


def index_figures(report: dict) -> dict:
    return {"documents": report["documents"], "index_build_s": report["index_build_seconds"],
            "min_speedup": report["min_speedup"],
            "queries": {q["name"]: {"speedup": q["speedup"], "indexed_median_ms": q["indexed"]["median_ms"],
                                    "indexed_p95_ms": q["indexed"]["p95_ms"],
                                    "collscan_median_ms": q["collscan"]["median_ms"],
                                    "pandas_median_ms": q["pandas"]["median_ms"] if q["pandas"] else None,
                                    "plan": f"{q['indexed']['stage']} {q['indexed']['index']}", "rows": q["rows"]}
                        for q in report["queries"]}}
