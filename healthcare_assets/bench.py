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
import threading
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

def _selection() -> tuple[list, list]:
    """(the chain's assets and checks, the benchmark asset and its check)."""
    from healthcare_assets.definitions import defs
    from healthcare_assets.defs.benchmark import every_query_uses_its_index, index_benchmarks

    chain = [a for a in defs.assets if index_benchmarks.key not in a.keys]
    chain += [c for c in defs.asset_checks
              if all(s.asset_key != index_benchmarks.key for s in c.check_specs)]
    return chain, [index_benchmarks, every_query_uses_its_index]


class RssSampler(threading.Thread):
    """Samples this process's and the server's RSS, so each step gets its own peak."""

    def __init__(self, server_pid: int | None):
        super().__init__(daemon=True)
        self.server_pid = server_pid
        self.samples: list[tuple[float, float, float]] = []  # (time, own MB, server MB)
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(POLL_S):
            self.samples.append((time.time(), _rss_mb(os.getpid()), _rss_mb(self.server_pid) if self.server_pid else 0.0))

    def peaks(self, start: float, end: float) -> tuple[float, float]:
        window = [(own, server) for t, own, server in self.samples if start <= t <= end + POLL_S]
        return (round(max((w[0] for w in window), default=0), 1), round(max((w[1] for w in window), default=0), 1))


def _steps(result, instance, sampler: RssSampler) -> dict[str, dict]:
    """Seconds and peak RSS (this process, the server) of every step of a run."""
    entries = [e for e in instance.all_logs(result.run_id) if e.dagster_event and e.dagster_event.step_key]
    starts = {e.dagster_event.step_key: e.timestamp for e in entries if e.dagster_event.event_type_value == "STEP_START"}
    steps = {}
    for e in entries:
        event = e.dagster_event
        if event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE"):
            rss, server = sampler.peaks(starts.get(event.step_key, e.timestamp), e.timestamp)
            steps[event.step_key] = {"s": round(e.timestamp - starts.get(event.step_key, e.timestamp), 3),
                                     "peak_rss_mb": rss, "server_peak_rss_mb": server}
    return steps


def _failures(result) -> list[dict]:
    return [{"step": e.step_key, "error": str(e.event_specific_data.error.message)[:500]}
            for e in result.all_events if e.event_type_value == "STEP_FAILURE"]


def _per_asset(steps: dict[str, dict], assets: list[str]) -> dict[str, dict]:
    """Each step counted under its asset: the asset's own step, and its checks' steps."""
    out = {a: {"asset_s": 0.0, "checks_s": 0.0, "peak_rss_mb": 0.0, "server_peak_rss_mb": 0.0} for a in assets}
    for key, step in steps.items():
        owner = key if key in out else max((a for a in assets if key.startswith(a + "_")), key=len, default=None)
        if owner is None:
            continue
        part = out[owner]
        if key == owner:
            part["asset_s"] = step["s"]
        else:
            part["checks_s"] = round(part["checks_s"] + step["s"], 3)
        part["peak_rss_mb"] = max(part["peak_rss_mb"], step["peak_rss_mb"])
        part["server_peak_rss_mb"] = max(part["server_peak_rss_mb"], step["server_peak_rss_mb"])
    return out


def measure_ceiling(db, cleaned_path: str, source: dict) -> dict:
    """Insert the load's documents again, batch by batch, with a bare insert_many: into a plain
    collection (the server's ceiling) and into one prepared like the pipeline's (validator and
    metadata.sources index), timing documents built and inserted separately."""
    from healthcare_assets.defs.load import LOAD_BATCH, prepare_collection
    from healthcare_assets.schema import to_document
    from healthcare_assets.staging import row_batches

    bare, validated = db["bench_ceiling_bare"], db["bench_ceiling_validated"]
    bare.drop()
    validated.drop()
    prepare_collection(validated)
    created_at = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
    timings = {"build_s": 0.0, "bare_s": 0.0, "validated_s": 0.0}
    documents = 0
    for rows in row_batches(cleaned_path, LOAD_BATCH):
        started = time.perf_counter()
        docs = [to_document(row, source, created_at) for row in rows]
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


def run_one(size: int, csv: str, database: str, repeats: int, scan_repeats: int, chain_only: bool = False) -> dict:
    """The chain, then the insert_many ceiling (on the server as the load left it, before the
    benchmark's collection scans grow the server's heap), then the index benchmarks."""
    import dagster as dg

    from healthcare_assets.resources.mongo import MongoResource

    mongo = MongoResource(database=database)
    mongo.client()  # starts nothing new: the parent's server answers for this data directory
    sampler = RssSampler((embedded_mongo.status(settings.data_dir()) or {}).get("pid"))
    sampler.start()
    chain, benchmark = _selection()
    started = time.perf_counter()
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(chain, resources={"mongo": mongo}, instance=instance,
                            run_config={"ops": {"raw_csv": {"config": {"source": csv}}}}, raise_on_error=False)
    chain_s = time.perf_counter() - started
    steps = _steps(result, instance, sampler)
    out = {"size": size, "csv": csv, "database": database, "success": result.success,
           "checks": {e.check_name: e.passed for e in result.get_asset_check_evaluations()},
           "pipeline_run_s": round(chain_s, 2), "failures": _failures(result)}
    loaded = any(e.asset_key.to_user_string() == "mongo_hospitalizations" for e in result.get_asset_materialization_events())
    if loaded:  # a later stage failing (the view, ...) does not void the load's figures
        load = result.output_for_node("mongo_hospitalizations")
        load_s = next(e.materialization.metadata for e in result.get_asset_materialization_events()
                      if e.asset_key.to_user_string() == "mongo_hospitalizations")["load_seconds"].value
        out["load"] = {"documents": load["documents_inserted"], "load_s": load_s, "rows_in": load["rows_in"],
                       "docs_per_s": round(load["documents_inserted"] / load_s) if load_s else None}
        source = result.output_for_node("cleaned_frame").source.as_metadata()
    if loaded and not chain_only:  # the largest sizes: the chain alone, it is what must scale
        out["ceiling"] = measure_ceiling(mongo.db(), load["cleaned_path"], source)
        out["load"]["ratio_to_bare_insert_many"] = round(out["load"]["docs_per_s"] / out["ceiling"]["bare_docs_per_s"], 3)
        out["load"]["ratio_to_validated_insert_many"] = round(
            out["load"]["docs_per_s"] / out["ceiling"]["validated_docs_per_s"], 3)
        bench = dg.materialize(benchmark, resources={"mongo": mongo}, instance=instance, raise_on_error=False, run_config={
            "ops": {"index_benchmarks": {"config": {"repeats": repeats, "scan_repeats": scan_repeats}}}})
        out["success"] = result.success and bench.success
        out["failures"] += _failures(bench)
        out["checks"] |= {e.check_name: e.passed for e in bench.get_asset_check_evaluations()}
        steps |= _steps(bench, instance, sampler)
        if any(e.asset_key.to_user_string() == "index_benchmarks" for e in bench.get_asset_materialization_events()):
            report = bench.output_for_node("index_benchmarks")
            out["index_benchmarks"] = {
                "documents": report["documents"], "index_build_s": report["index_build_seconds"],
                "min_speedup": report["min_speedup"],
                "queries": {q["name"]: {"speedup": q["speedup"], "indexed_median_ms": q["indexed"]["median_ms"],
                                        "indexed_p95_ms": q["indexed"]["p95_ms"],
                                        "collscan_median_ms": q["collscan"]["median_ms"],
                                        "pandas_median_ms": q["pandas"]["median_ms"] if q["pandas"] else None,
                                        "plan": f"{q['indexed']['stage']} {q['indexed']['index']}",
                                        "rows": q["rows"]}
                            for q in report["queries"]},
            }
    sampler.done.set()
    assets = [k.to_user_string() for a in chain + benchmark if isinstance(a, dg.AssetsDefinition) for k in a.keys]
    out["steps"] = steps
    out["per_asset"] = _per_asset(steps, assets)
    # the chain proper; the benchmark asset is measurement, not pipeline
    out["pipeline_s"] = round(sum(v["asset_s"] + v["checks_s"] for k, v in out["per_asset"].items()
                                  if k != "index_benchmarks"), 2)
    out["peak_rss_mb"] = max((v["peak_rss_mb"] for v in out["per_asset"].values()), default=0)
    out["server_peak_rss_mb"] = max((v["server_peak_rss_mb"] for v in out["per_asset"].values()), default=0)
    out["process_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux
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


def scan_repeats_for(size: int, args) -> int:
    return args.scan_repeats or (3 if size < 1_000_000 else 1)


def run_child(size: int, csv: str, args, env: dict, log: Path) -> dict:
    """One size in its own process, so its peak memory is its own; the child prints one JSON line."""
    command = [sys.executable, "-m", "healthcare_assets.bench", "--one", str(size), "--csv", csv,
               "--database", f"bench_{size}", "--repeats", str(args.repeats), "--scan-repeats", str(scan_repeats_for(size, args))]
    command += ["--chain-only"] if args.chain_only else []
    started = time.perf_counter()
    with open(log, "w") as err:  # Dagster's event log goes here
        child = subprocess.run(command, check=False, stdout=subprocess.PIPE, stderr=err, env=env, cwd=REPO, text=True)
    lines = [line for line in child.stdout.splitlines() if line.startswith("{")]
    if child.returncode != 0 or not lines:
        raise RuntimeError(f"size {size}: the child exited {child.returncode}; see {log}")
    return {**json.loads(lines[-1]), "process_s": round(time.perf_counter() - started, 2)}


def evaluate(results: dict[int, dict]) -> list[dict]:
    """The issue's targets, each with the measured figure; only for the sizes that ran."""
    targets = []
    for size, r in results.items():
        if "ceiling" in r:
            targets.append({"target": f"load / bare insert_many >= {LOAD_RATIO_MIN} ({size:,} rows)",
                            "measured": r["load"]["ratio_to_bare_insert_many"],
                            "met": r["load"]["ratio_to_bare_insert_many"] >= LOAD_RATIO_MIN})
    small = results.get(COMMITTED_ROWS)
    for size, big in results.items():
        if size < 1_000_000:
            continue
        targets.append({"target": f"peak RSS at {size:,} rows < {RSS_MAX_MB} MB",
                        "measured": big["peak_rss_mb"], "met": big["peak_rss_mb"] < RSS_MAX_MB})
        if small:
            growth = round(big["peak_rss_mb"] / small["peak_rss_mb"], 2)
            targets.append({"target": f"peak RSS {size:,} / 55,500 rows <= {RSS_GROWTH_MAX}", "measured": growth,
                            "met": growth <= RSS_GROWTH_MAX})
            wall = round(big["pipeline_s"] / small["pipeline_s"], 2)
            limit = WALL_GROWTH_MAX * size / 1_000_000
            targets.append({"target": f"pipeline wall time {size:,} / 55,500 rows <= {limit:g}", "measured": wall,
                            "met": wall <= limit})
    if small and "index_benchmarks" in small:
        for name, q in small["index_benchmarks"]["queries"].items():
            targets.append({"target": f"{name}: index >= {SPEEDUP_MIN}x its COLLSCAN (committed data)",
                            "measured": q["speedup"], "met": (q["speedup"] or 0) >= SPEEDUP_MIN})
    return targets


def print_report(results: dict[int, dict], targets: list[dict]) -> None:
    sizes = list(results)

    def row(label, value):
        cells = []
        for size in sizes:
            try:
                cells.append(value(results[size]))
            except (KeyError, TypeError):  # that size stopped early
                cells.append("-")
        print(f"{label:38}" + "".join(f"{c:>22}" for c in cells))

    print("\n== chain, per size: step s + its checks s, peak RSS MB of the pipeline process / server ==")
    print(f"{'':38}" + "".join(f"{s:>22,}" for s in sizes))
    for asset in dict.fromkeys(a for r in results.values() for a in r.get("per_asset", {})):
        row(asset, lambda r, a=asset: (f"{r['per_asset'][a]['asset_s']:.1f}+{r['per_asset'][a]['checks_s']:.1f}s "
                                       f"{r['per_asset'][a]['peak_rss_mb']:,.0f}/{r['per_asset'][a]['server_peak_rss_mb']:,.0f}"))
    row("pipeline s (w/o index_benchmarks)", lambda r: f"{r['pipeline_s']:.1f}")
    row("load docs/s", lambda r: f"{r['load']['docs_per_s']:,}")
    row("bare insert_many docs/s", lambda r: f"{r['ceiling']['bare_docs_per_s']:,}")
    row("insert_many like the load's coll", lambda r: f"{r['ceiling']['validated_docs_per_s']:,}")
    row("building the documents docs/s", lambda r: f"{r['ceiling']['build_docs_per_s']:,}")
    row("load / bare insert_many", lambda r: f"{r['load']['ratio_to_bare_insert_many']:.2f}")
    row("load / insert_many like the load's", lambda r: f"{r['load']['ratio_to_validated_insert_many']:.2f}")
    row("peak RSS MB, pipeline process", lambda r: f"{r['peak_rss_mb']:,.0f}")
    row("peak RSS MB, embedded server", lambda r: f"{r['server_peak_rss_mb']:,.0f}")
    row("index build s (7 indexes)", lambda r: f"{r['index_benchmarks']['index_build_s']:.1f}")
    names = next((list(r["index_benchmarks"]["queries"]) for r in results.values() if "index_benchmarks" in r), [])
    print("\n== index queries: speedup (COLLSCAN median / indexed median), indexed median ms ==")
    for name in names:
        row(name, lambda r, n=name: (f"{r['index_benchmarks']['queries'][n]['speedup']}x "
                                     f"{r['index_benchmarks']['queries'][n]['indexed_median_ms']:,.0f}ms"))
    print("\n== targets (issue 5) ==")
    for t in targets:
        print(f"{'met ' if t['met'] else 'MISS'}  {t['target']:62} {t['measured']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="healthcare_assets.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default=f"{COMMITTED_ROWS},1000000",
                        help="comma-separated row counts; 55500 is the committed export, others are generated")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per query with its index")
    parser.add_argument("--scan-repeats", type=int,
                        help="timed runs per query forced to a COLLSCAN and per pandas scan "
                             "(default 3, and 1 from 1,000,000 rows where one scan takes ~25 s)")
    parser.add_argument("--chain-only", action="store_true",
                        help="only the chain: no insert_many ceiling, no index benchmarks (for 5,000,000 rows)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data directory")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # child mode
    parser.add_argument("--csv", help=argparse.SUPPRESS)
    parser.add_argument("--database", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.one:
        print(json.dumps(run_one(args.one, args.csv, args.database, args.repeats, args.scan_repeats, args.chain_only)),
              flush=True)
        return 0

    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    report_dir = settings.reports_dir()  # the caller's, before the temporary one takes over
    work = Path(tempfile.mkdtemp(prefix="healthcare-bench-"))
    env = {**os.environ, "HEALTHCARE_DATA_DIR": str(work)}
    env.pop("MONGODB_URI", None)  # always the fresh embedded server
    env.pop("HEALTHCARE_SOURCE_CSV", None)
    results: dict[int, dict] = {}
    failed = True
    try:
        uri = embedded_mongo.ensure_running(work)
        print(f"embedded server {uri}, data in {work}")
        for size in sizes:
            csv, generate_s = _export_for(size, work)
            print(f"{size:,} rows: {csv}" + (f" (generated in {generate_s} s)" if generate_s else ""), flush=True)
            results[size] = run_child(size, csv, args, env, work / f"bench_{size}.log")
            results[size]["generate_s"] = generate_s
            r = results[size]
            print(f"  done in {r['process_s']:.0f} s, success={r['success']}, peak RSS {r['peak_rss_mb']:.0f} MB"
                  + ("" if r["success"] else f"; failed checks: {[k for k, v in r['checks'].items() if not v]}, "
                                             f"failed steps: {r['failures']}"),
                  flush=True)
            bench_reports = work / "reports"
            for suffix in ("json", "png"):
                if (bench_reports / f"index_benchmarks.{suffix}").exists():
                    (report_dir / "bench").mkdir(parents=True, exist_ok=True)
                    shutil.copy(bench_reports / f"index_benchmarks.{suffix}",
                                report_dir / "bench" / f"index_benchmarks_{size}.{suffix}")
        failed = not all(r["success"] for r in results.values())
    finally:
        embedded_mongo.stop(work)
        if failed:
            print(f"kept {work} (the child's Dagster log is bench_<size>.log there)")
        elif not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    targets = evaluate(results)
    print_report(results, targets)
    report = {"measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "memory_gb": round(psutil.virtual_memory().total / 2**30, 1)},
              "repeats": args.repeats, "scan_repeats": {str(size): scan_repeats_for(size, args) for size in sizes},
              "sizes": {str(k): v for k, v in results.items()}, "targets": targets}
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "bench.json").write_text(json.dumps(report, indent=2))
    print(f"\nreport: {report_dir / 'bench.json'}" + (f"; data kept in {work}" if args.keep else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
