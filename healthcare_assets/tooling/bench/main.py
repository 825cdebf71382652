"""The scale benchmark, `make bench`: how the chain's cost grows with the export, and what the indexes buy.

A fresh embedded server in a temporary data directory, a database per size. Each size runs in child processes, so peak
memory is that size's alone: the chain, its insert_many ceiling and the index benchmarks (`--one`), a backup
(`--backup`), the release stream (`--stream-one`). Then whole processes (processes.py). Tables are printed and written
to $HEALTHCARE_DATA_DIR/reports/bench.json."""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from healthcare_assets.domain import local_server
from healthcare_assets.plumbing import embedded_mongo, settings
from healthcare_assets.tooling.bench import exports, report, targets
from healthcare_assets.tooling.bench.one_size import measure_backup, run_one
from healthcare_assets.tooling.bench.processes import Processes, run_processes
from healthcare_assets.tooling.bench.stream import DROP_ROWS, DROPS, run_stream

MODULE = "healthcare_assets.tooling.bench"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=MODULE, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--sizes", default=f"{exports.COMMITTED_ROWS},{exports.MID_ROWS},{exports.BIG_ROWS}",
        help="comma-separated row counts; 55500 is the committed export, others are generated")
    add("--repeats", type=int, default=7, help="timed runs per query with its index")
    add("--scan-repeats", type=int, help="timed runs per query forced to a COLLSCAN and per pandas scan "
                                         "(default 3, and 1 from 1,000,000 rows where one scan takes ~25 s)")
    add("--chain-only", action="store_true", help="only the chain: no insert_many ceiling, no index benchmarks")
    add("--keep", action="store_true", help="keep the temporary data directory")
    add("--release-stream", action="store_true",
        help="only the analysts' release simulated as a stream of drops (no database)")
    add("--drops", type=int, default=DROPS, help="drops in the release stream")
    add("--drop-rows", type=int, default=DROP_ROWS, help="rows of each drop in the release stream")
    # the size whose collection a 1,000-row drop is compared in (a smaller one to try the bench out)
    add("--big-size", type=int, default=exports.BIG_ROWS, help=argparse.SUPPRESS)
    for hidden in ("--one", "--stream-one"):  # child modes
        add(hidden, type=int, help=argparse.SUPPRESS)
    for hidden in ("--csv", "--database", "--backup", "--to"):
        add(hidden, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _scan_repeats(size: int, args) -> int:
    return args.scan_repeats or (3 if size < 1_000_000 else 1)


def _child_mode(args: argparse.Namespace) -> bool:
    """Run a child mode if asked for one, its figures printed as one JSON line; say whether it was."""
    if args.one:
        figures = run_one(args.one, args.csv, args.database, args.repeats, args.scan_repeats, args.chain_only)
    elif args.backup:
        figures = measure_backup(args.backup, Path(args.to))
    elif args.stream_one:
        figures = run_stream(args.stream_one, args.csv, Path(args.to), args.drops, args.drop_rows)
    else:
        return False
    print(json.dumps(figures), flush=True)
    return True


def _child(options: list[str], env: dict, log: Path) -> dict | None:
    """A child mode in a process of its own; the JSON line it prints last, None if it failed."""
    with open(log, "w") as err:  # Dagster's event log goes here
        child = subprocess.run([sys.executable, "-m", MODULE, *options], check=False, stdout=subprocess.PIPE,
                               stderr=err, env=env, cwd=exports.REPO, text=True)
    lines = [line for line in child.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if child.returncode == 0 and lines else None


def _stream_child(size: int, csv: str, args, env: dict, work: Path) -> dict | None:
    log = work / f"release_stream_{size}.log"
    stream = _child(["--stream-one", str(size), "--csv", csv, "--to", str(work / "stream_drops"),
                     "--drops", str(args.drops), "--drop-rows", str(args.drop_rows)], env, log)
    if stream is None:
        print(f"  release stream: the child failed; see {log}")
    else:
        print(f"  release stream: {stream['drops']} drops of {stream['drop_rows']:,} rows in {stream['seconds']:.0f} s, "
              f"peak RSS {stream['peak_rss_mb']:.0f} MB", flush=True)
    return stream


def _export(size: int, work: Path) -> str:
    csv, generate_s = exports.export_for(size, work)
    print(f"{size:,} rows: {csv}" + (f" (generated in {generate_s} s)" if generate_s else ""), flush=True)
    return csv, generate_s


def run_sizes(sizes: list[int], args, env: dict, work: Path, report_dir: Path) -> dict[int, dict]:
    results = {}
    for size in sizes:
        csv, generate_s = _export(size, work)
        started, log = time.perf_counter(), work / f"bench_{size}.log"
        r = _child(["--one", str(size), "--csv", csv, "--database", exports.database_for(size), "--repeats", str(args.repeats),
                    "--scan-repeats", str(_scan_repeats(size, args)), *(["--chain-only"] if args.chain_only else [])],
                   env, log)
        if r is None:
            raise RuntimeError(f"size {size}: the child failed; see {log}")
        r = results[size] = r | {"process_s": round(time.perf_counter() - started, 2), "generate_s": generate_s}
        print(f"  done in {r['process_s']:.0f} s, success={r['success']}, peak RSS {r['peak_rss_mb']:.0f} MB"
              + ("" if r["success"] else f"; failed checks: {[k for k, v in r['checks'].items() if not v]}, "
                                         f"failed steps: {r['failures']}"), flush=True)
        if "load" in r:
            r["backup"] = _child(["--backup", exports.database_for(size), "--to", str(work / f"backups_{size}")], env,
                                 work / f"backup_{size}.log")
            print(f"  backup of {r['backup']['documents']:,} documents in {r['backup']['backup_s']:.0f} s, "
                  f"peak RSS {r['backup']['peak_rss_mb']:.0f} MB", flush=True)
        if stream := _stream_child(size, csv, args, env, work):
            r["release_stream"] = stream
        for suffix in ("json", "png"):  # the size's index report and chart, into the caller's reports
            if (produced := work / "reports" / f"index_benchmarks.{suffix}").exists():
                settings.private_dir(report_dir / "bench")
                settings.owner_only(Path(shutil.copy(produced, report_dir / "bench" / f"index_benchmarks_{size}.{suffix}")))
    return results


def _environment(work: Path) -> dict[str, str]:
    env = {**os.environ, "HEALTHCARE_DATA_DIR": str(work),  # its generated exports live there: runs may read them
           "HEALTHCARE_IMPORT_DIR": os.pathsep.join([str(work), str(exports.REPO / "data")])}
    for name in ("MONGODB_URI", "MONGODB_DATABASE", "MONGODB_COLLECTION", "HEALTHCARE_SOURCE_CSV"):
        env.pop(name, None)
    return env


def _release_streams(sizes: list[int], args, report_dir: Path) -> int:
    work = Path(tempfile.mkdtemp(prefix="healthcare-stream-"))
    streams = {size: _stream_child(size, _export(size, work)[0], args, _environment(work), work) for size in sizes}
    failed = None in streams.values()
    if failed or args.keep:
        print(f"kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    streams = {size: stream for size, stream in streams.items() if stream}
    found = targets.stream_targets(streams)
    report.print_streams(streams)
    report.print_targets(found)
    path = report_dir / "release_stream.json"
    settings.write_owner_only(path, json.dumps({"sizes": {str(k): v for k, v in streams.items()}, "targets": found},
                                               indent=2))
    print(f"\nreport: {path}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if _child_mode(args):
        return 0
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    report_dir = settings.reports_dir()  # the caller's, before the temporary one takes over
    if args.release_stream:
        return _release_streams(sizes, args, report_dir)
    work = Path(tempfile.mkdtemp(prefix="healthcare-bench-"))
    env = _environment(work)
    results, figures, failed = {}, {}, True
    try:
        print(f"embedded server {local_server.ensure_running(work)}, data in {work}")
        results = run_sizes(sizes, args, env, work, report_dir)
        figures = run_processes(results, args.big_size, Processes(work, env))
        failed = not all(r["success"] for r in results.values()) or not all(f["success"] for f in figures.values())
    finally:
        embedded_mongo.stop(work)
        if failed:
            print(f"kept {work} (the child's Dagster log is bench_<size>.log there, each process's <name>.log)")
        elif not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    found = targets.size_targets(results) + targets.process_targets(figures)
    report.print_sizes(results)
    report.print_processes(figures)
    report.print_targets(found)
    report.write_report(report_dir / "bench.json", {
        "repeats": args.repeats, "scan_repeats": {str(size): _scan_repeats(size, args) for size in results},
        "sizes": {str(k): v for k, v in results.items()}, "processes": figures, "targets": found})
    print(f"\nreport: {report_dir / 'bench.json'}" + (f"; data kept in {work}" if args.keep else ""))
    return 0
