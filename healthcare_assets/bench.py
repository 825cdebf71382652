"""`make bench`: how the chain's cost grows with the export, and what the indexes buy, in one run.

    python -m healthcare_assets.bench [--sizes 55500,1000000] [--repeats 7] [--scan-repeats 3] [--keep]

A fresh embedded server in a temporary data directory serves every size, each in a database of its
own. 55,500 rows is the committed export; other sizes are generated (seeded). Each size runs the
whole chain through Dagster in a child process (`--one SIZE`), so peak memory is that size's
alone. The child then inserts the very same documents with a bare `insert_many` (same batch size,
same server) to measure the ceiling the load can reach. Results print as tables and land in
`$HEALTHCARE_DATA_DIR/reports/bench.json` (the caller's data directory, not the temporary one).

Speed and memory targets live here, never in tests; a missed target is printed, not raised.
"""

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from healthcare_assets.resources import embedded_mongo, settings

REPO = Path(__file__).resolve().parents[1]
COMMITTED_ROWS = 55_500
SEED = 5  # generated exports are a pure function of (rows, seed)
POLL_S = 0.25

# The targets (issue 5, "Done when").
LOAD_RATIO_MIN = 0.8
RSS_MAX_MB = 1500
RSS_GROWTH_MAX = 1.5
WALL_GROWTH_MAX = 25
SPEEDUP_MIN = 10


# ---- child: one size, in its own process --------------------------------------------------

def _selection():
    from healthcare_assets.definitions import defs
    from healthcare_assets.defs.benchmark import every_query_uses_its_index, index_benchmarks

    assets = list(defs.assets)
    checks = list(defs.asset_checks)
    # Until definitions.py lists the benchmark module, add it here (and never twice after).
    if not any(index_benchmarks.key in a.keys for a in assets):
        assets.append(index_benchmarks)
        checks.append(every_query_uses_its_index)
    return assets + checks


def _step_seconds(result) -> dict[str, float]:
    return {e.step_key: round(e.event_specific_data.duration_ms / 1000, 3)
            for e in result.all_events if e.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE")}


def _per_asset(steps: dict[str, float], assets: list[str]) -> dict[str, dict]:
    """Each step counted under its asset: the asset's own step, and its checks' steps."""
    out = {a: {"asset_s": 0.0, "checks_s": 0.0} for a in assets}
    for key, seconds in steps.items():
        if key in out:
            out[key]["asset_s"] = seconds
        else:
            owner = max((a for a in assets if key.startswith(a + "_")), key=len, default=None)
            if owner:
                out[owner]["checks_s"] = round(out[owner]["checks_s"] + seconds, 3)
    return out


def measure_ceiling(db, cleaned_path: str, source: dict) -> dict:
    """Insert the load's documents again, batch by batch, with a bare insert_many: into a plain
    collection (the server's ceiling) and into one prepared like the pipeline's (validator and
    metadata.sources index), timing documents built and inserted separately."""
    import pyarrow.parquet as pq

    from healthcare_assets.defs.load import LOAD_BATCH, prepare_collection
    from healthcare_assets.schema import to_document

    bare, validated = db["bench_ceiling_bare"], db["bench_ceiling_validated"]
    bare.drop()
    validated.drop()
    prepare_collection(validated)
    created_at = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
    timings = {"build_s": 0.0, "bare_s": 0.0, "validated_s": 0.0}
    documents = 0
    for batch in pq.ParquetFile(cleaned_path).iter_batches(batch_size=LOAD_BATCH):
        started = time.perf_counter()
        docs = [to_document(row, source, created_at) for row in batch.to_pylist()]
        timings["build_s"] += time.perf_counter() - started
        for name, target in (("bare_s", bare), ("validated_s", validated)):
            started = time.perf_counter()
            target.insert_many(docs, ordered=False)  # the docs carry their _id: pymongo leaves them as they are
            timings[name] += time.perf_counter() - started
        documents += len(docs)
    bare.drop()
    validated.drop()
    rate = {k.replace("_s", "_docs_per_s"): round(documents / v) if v else None for k, v in timings.items()}
    return {"documents": documents, "batch": LOAD_BATCH, **{k: round(v, 2) for k, v in timings.items()}, **rate}


def run_one(size: int, csv: str, database: str, repeats: int, scan_repeats: int) -> dict:
    import dagster as dg

    from healthcare_assets.resources.mongo import MongoResource

    mongo = MongoResource(database=database)
    selection = _selection()
    started = time.perf_counter()
    result = dg.materialize(
        selection,
        resources={"mongo": mongo},
        run_config={"ops": {"raw_csv": {"config": {"source": csv}},
                            "index_benchmarks": {"config": {"repeats": repeats, "scan_repeats": scan_repeats}}}},
        raise_on_error=False,
    )
    run_s = time.perf_counter() - started
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    steps = _step_seconds(result)
    assets = [a for a in ("raw_csv", "cleaned_frame", "quality_report", "mongo_hospitalizations",
                          "anonymized_view", "index_benchmarks") if a in steps]
    per_asset = _per_asset(steps, assets)
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    out = {"size": size, "csv": csv, "database": database, "success": result.success, "checks": checks,
           "run_s": round(run_s, 2), "steps_s": steps, "per_asset": per_asset,
           # the chain proper; the benchmark asset is measurement, not pipeline
           "pipeline_s": round(sum(v["asset_s"] + v["checks_s"] for k, v in per_asset.items()
                                   if k != "index_benchmarks"), 2),
           "peak_rss_mb": round(peak_rss_mb, 1)}
    if not result.success:
        return out
    load = result.output_for_node("mongo_hospitalizations")
    load_meta = next(e.materialization.metadata for e in result.get_asset_materialization_events()
                     if e.asset_key.to_user_string() == "mongo_hospitalizations")
    load_s = load_meta["load_seconds"].value
    out["load"] = {"documents": load["documents_inserted"], "load_s": load_s,
                   "docs_per_s": round(load["documents_inserted"] / load_s) if load_s else None,
                   "step_s": per_asset["mongo_hospitalizations"]["asset_s"],
                   "rows_in": load["rows_in"]}
    bench = result.output_for_node("index_benchmarks")
    out["index_benchmarks"] = {
        "documents": bench["documents"], "index_build_s": bench["index_build_seconds"],
        "min_speedup": bench["min_speedup"],
        "queries": {q["name"]: {"speedup": q["speedup"], "indexed_median_ms": q["indexed"]["median_ms"],
                                "indexed_p95_ms": q["indexed"]["p95_ms"], "collscan_median_ms": q["collscan"]["median_ms"],
                                "pandas_median_ms": q["pandas"]["median_ms"] if q["pandas"] else None,
                                "plan": f"{q['indexed']['stage']} {q['indexed']['index']}", "rows": q["rows"]}
                    for q in bench["queries"]},
    }
    source = result.output_for_node("cleaned_frame").source.as_metadata()
    ceiling = measure_ceiling(mongo.db(), load["cleaned_path"], source)
    out["ceiling"] = ceiling
    out["load"]["ratio_to_bare_insert_many"] = round(out["load"]["docs_per_s"] / ceiling["bare_docs_per_s"], 3)
    return out


# ---- parent: sizes, processes, memory, the report -------------------------------------------

def _export_for(size: int, folder: Path) -> tuple[str, float]:
    if size == COMMITTED_ROWS:
        return str(REPO / "data" / "healthcare_dataset.csv"), 0.0
    from healthcare_assets.generate import generate_csv

    path = folder / f"generated_{size}.csv"
    started = time.perf_counter()
    generate_csv(rows=size, seed=SEED, out=path)
    return str(path), round(time.perf_counter() - started, 2)


def _rss_mb(pid: int) -> float:
    try:
        return psutil.Process(pid).memory_info().rss / 2**20
    except psutil.Error:
        return 0.0


def run_child(size: int, csv: str, args, env: dict, log: Path, server_pid: int) -> dict:
    command = [sys.executable, "-m", "healthcare_assets.bench", "--one", str(size), "--csv", csv,
               "--database", f"bench_{size}", "--repeats", str(args.repeats), "--scan-repeats", str(args.scan_repeats)]
    started = time.perf_counter()
    peaks = {"child": 0.0, "server": 0.0}
    with open(log, "w") as err:
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, env=env, cwd=REPO, text=True)
        # stdout is one JSON line at the end, so polling cannot deadlock on a full pipe
        while child.poll() is None:
            peaks["child"] = max(peaks["child"], _rss_mb(child.pid))
            peaks["server"] = max(peaks["server"], _rss_mb(server_pid))
            time.sleep(POLL_S)
        stdout = child.stdout.read()
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if child.returncode != 0 or not lines:
        raise RuntimeError(f"size {size}: the child exited {child.returncode}; see {log}")
    out = json.loads(lines[-1])
    out["process_s"] = round(time.perf_counter() - started, 2)
    out["polled_peak_rss_mb"] = round(peaks["child"], 1)
    out["server_peak_rss_mb"] = round(peaks["server"], 1)
    return out


def evaluate(results: dict[int, dict]) -> list[dict]:
    """The issue's targets, each with the measured figure; only for the sizes that ran."""
    targets = []
    for size, r in results.items():
        if "load" in r:
            targets.append({"target": f"load / bare insert_many >= {LOAD_RATIO_MIN} ({size:,} rows)",
                            "measured": r["load"]["ratio_to_bare_insert_many"],
                            "met": r["load"]["ratio_to_bare_insert_many"] >= LOAD_RATIO_MIN})
    small, big = results.get(COMMITTED_ROWS), results.get(1_000_000)
    if big:
        targets.append({"target": f"peak RSS at 1,000,000 rows < {RSS_MAX_MB} MB",
                        "measured": big["peak_rss_mb"], "met": big["peak_rss_mb"] < RSS_MAX_MB})
    if big and small:
        growth = round(big["peak_rss_mb"] / small["peak_rss_mb"], 2)
        targets.append({"target": f"peak RSS 1M / 55.5k <= {RSS_GROWTH_MAX}", "measured": growth,
                        "met": growth <= RSS_GROWTH_MAX})
        wall = round(big["pipeline_s"] / small["pipeline_s"], 2)
        targets.append({"target": f"pipeline wall time 1M / 55.5k <= {WALL_GROWTH_MAX}", "measured": wall,
                        "met": wall <= WALL_GROWTH_MAX})
    if small and "index_benchmarks" in small:
        for name, q in small["index_benchmarks"]["queries"].items():
            targets.append({"target": f"{name}: index >= {SPEEDUP_MIN}x its COLLSCAN (committed data)",
                            "measured": q["speedup"], "met": (q["speedup"] or 0) >= SPEEDUP_MIN})
    return targets


def print_report(results: dict[int, dict], targets: list[dict]) -> None:
    sizes = list(results)
    print("\n== chain, per size ==")
    print(f"{'':34}" + "".join(f"{s:>16,}" for s in sizes))

    def row(label, value):
        print(f"{label:34}" + "".join(f"{value(results[s]):>16}" for s in sizes))

    for asset in ("raw_csv", "cleaned_frame", "quality_report", "mongo_hospitalizations", "anonymized_view",
                  "index_benchmarks"):
        if any(asset in r.get("per_asset", {}) for r in results.values()):
            row(f"{asset} s (+checks)", lambda r, a=asset: (
                f"{r['per_asset'][a]['asset_s']:.1f} +{r['per_asset'][a]['checks_s']:.1f}" if a in r["per_asset"] else "-"))
    row("pipeline wall s (w/o benchmark)", lambda r: f"{r['pipeline_s']:.1f}")
    row("whole run s", lambda r: f"{r['run_s']:.1f}")
    row("load docs/s", lambda r: f"{r['load']['docs_per_s']:,}" if "load" in r else "-")
    row("bare insert_many docs/s", lambda r: f"{r['ceiling']['bare_docs_per_s']:,}" if "ceiling" in r else "-")
    row("insert_many, validated coll docs/s", lambda r: f"{r['ceiling']['validated_docs_per_s']:,}" if "ceiling" in r else "-")
    row("building documents docs/s", lambda r: f"{r['ceiling']['build_docs_per_s']:,}" if "ceiling" in r else "-")
    row("load / bare insert_many", lambda r: f"{r['load']['ratio_to_bare_insert_many']:.2f}" if "load" in r else "-")
    row("peak RSS MB (pipeline process)", lambda r: f"{r['peak_rss_mb']:,.0f}")
    row("peak RSS MB (embedded server)", lambda r: f"{r['server_peak_rss_mb']:,.0f}")
    row("index build s (7 indexes)", lambda r: f"{r['index_benchmarks']['index_build_s']:.1f}" if "index_benchmarks" in r else "-")
    names = next((list(r["index_benchmarks"]["queries"]) for r in results.values() if "index_benchmarks" in r), [])
    print("\n== index speedup (median COLLSCAN / median with index); indexed median ms ==")
    for name in names:
        row(name, lambda r, n=name: (f"{r['index_benchmarks']['queries'][n]['speedup']}x "
                                     f"{r['index_benchmarks']['queries'][n]['indexed_median_ms']:.0f}ms")
            if "index_benchmarks" in r else "-")
    print("\n== targets (issue 5) ==")
    for t in targets:
        print(f"{'met ' if t['met'] else 'MISS'}  {t['target']:60} {t['measured']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="healthcare_assets.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default=f"{COMMITTED_ROWS},1000000",
                        help="comma-separated row counts; 55500 is the committed export, others are generated")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per query with its index")
    parser.add_argument("--scan-repeats", type=int, default=3,
                        help="timed runs per query forced to a COLLSCAN (~25 s each at 1M rows) and per pandas scan")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data directory")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # child mode
    parser.add_argument("--csv", help=argparse.SUPPRESS)
    parser.add_argument("--database", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.one:
        print(json.dumps(run_one(args.one, args.csv, args.database, args.repeats, args.scan_repeats)), flush=True)
        return 0

    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    report_dir = settings.reports_dir()  # the caller's, before the temporary one takes over
    work = Path(tempfile.mkdtemp(prefix="healthcare-bench-"))
    env = {**os.environ, "HEALTHCARE_DATA_DIR": str(work)}
    env.pop("MONGODB_URI", None)  # always the fresh embedded server
    env.pop("HEALTHCARE_SOURCE_CSV", None)
    results: dict[int, dict] = {}
    try:
        uri = embedded_mongo.ensure_running(work)
        server_pid = embedded_mongo.status(work)["pid"]
        print(f"embedded server {uri} (pid {server_pid}), data in {work}")
        for size in sizes:
            csv, generate_s = _export_for(size, work)
            print(f"{size:,} rows: {csv}" + (f" (generated in {generate_s} s)" if generate_s else ""), flush=True)
            results[size] = run_child(size, csv, args, env, work / f"bench_{size}.log", server_pid)
            results[size]["generate_s"] = generate_s
            r = results[size]
            print(f"  done in {r['process_s']:.0f} s, success={r['success']}, peak RSS {r['peak_rss_mb']:.0f} MB"
                  + ("" if r["success"] else f"; failed checks: {[k for k, v in r['checks'].items() if not v]}"),
                  flush=True)
            bench_reports = work / "reports"
            for suffix in ("json", "png"):
                if (bench_reports / f"index_benchmarks.{suffix}").exists():
                    (report_dir / "bench").mkdir(parents=True, exist_ok=True)
                    shutil.copy(bench_reports / f"index_benchmarks.{suffix}",
                                report_dir / "bench" / f"index_benchmarks_{size}.{suffix}")
    finally:
        embedded_mongo.stop(work)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    targets = evaluate(results)
    print_report(results, targets)
    report = {"measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "memory_gb": round(psutil.virtual_memory().total / 2**30, 1)},
              "repeats": args.repeats, "scan_repeats": args.scan_repeats,
              "sizes": {str(k): v for k, v in results.items()}, "targets": targets}
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "bench.json").write_text(json.dumps(report, indent=2))
    print(f"\nreport: {report_dir / 'bench.json'}" + (f"; data kept in {work}" if args.keep else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
