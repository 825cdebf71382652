"""The scale benchmark, `make bench`: how the chain's cost grows with the export, and what the indexes buy, in one run.

    python -m healthcare_assets.tooling.bench [--sizes 55500,1000000] [--repeats 7] [--scan-repeats 3] [--keep]
    python -m healthcare_assets.tooling.bench --release-stream [--sizes 55500,1000000] [--drops 100] [--drop-rows 1000]

A fresh embedded server in a temporary data directory serves every size, each in a database of its
own. 55,500 rows is the committed export; other sizes are generated (seeded). Each size runs the
whole chain through Dagster in a child process (`--one SIZE`), so peak memory is that size's
alone. The child then inserts the very same documents with a bare `insert_many` (same batch size,
same server) to measure the ceiling the load can reach, and runs the index benchmarks. A
backup of what the chain left (every database of the deployment) is then written and read back
in a process of its own (`--backup`), whose peak memory must stay under 500 MB at any size.

Then whole processes, started as a user or the sensor starts them, on the same server:

- a 1,000-row file through `s3_csv_drop_job` (`dagster job execute`) into an empty collection and
  into the 1,000,000-row one: a file's run must cost what the file costs, not the collection;
- two such runs started at the same moment on two new files into the 55,500-row database: both
  succeed, each loads every row of its own file, and the analysts' copy then equals the
  anonymized view, document for document;
- the gated chain up to a loaded collection (`dagster asset materialize`) against the client's own
  ungated script (`../shared/bench/client_approach.py`) on the committed export, alternating,
  median of three each.

At each size, the analysts' release as a stream is simulated without a database, in a process of
its own (`--stream-one`, release_stream.py): the first release of the export, then 100 drops of
1,000 rows; the stays released, pending and held back after each, and how many drops a stay
waits. `--release-stream` runs only that, at the sizes given, and writes
`$HEALTHCARE_DATA_DIR/reports/release_stream.json`.

Not the `index_benchmarks` asset (`defs/index_benchmarks.py`, which times the client's queries on
one collection): this benchmark runs that asset as one of its steps, at every size.

Results print as tables and land in `$HEALTHCARE_DATA_DIR/reports/bench.json` (the caller's data
directory, not the temporary one). Speed and memory targets live here, never in tests; a missed
target is printed, not raised.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

from healthcare_assets.domain import local_server
from healthcare_assets.plumbing import embedded_mongo, settings
from healthcare_assets.tooling.bench.exports import BIG_ROWS, COMMITTED_ROWS, REPO, export_for
from healthcare_assets.tooling.bench.figures import SizeRun, as_json
from healthcare_assets.tooling.bench.launcher import Processes
from healthcare_assets.tooling.bench.one_size import measure_backup, run_one
from healthcare_assets.tooling.bench.processes import ProcessFigures, run_processes
from healthcare_assets.tooling.bench.report import (
    print_processes,
    print_sizes,
    print_streams,
    print_targets,
    write_report,
)
from healthcare_assets.tooling.bench.sizes import MODULE, run_sizes, run_stream_child
from healthcare_assets.tooling.bench.stream_files import DROP_ROWS, DROPS, run_stream
from healthcare_assets.tooling.bench.targets import evaluate, stream_targets


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=MODULE, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default=f"{COMMITTED_ROWS},{BIG_ROWS}",
                        help="comma-separated row counts; 55500 is the committed export, others are generated")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per query with its index")
    parser.add_argument("--scan-repeats", type=int,
                        help="timed runs per query forced to a COLLSCAN and per pandas scan "
                             "(default 3, and 1 from 1,000,000 rows where one scan takes ~25 s)")
    parser.add_argument("--chain-only", action="store_true",
                        help="only the chain: no insert_many ceiling, no index benchmarks")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data directory")
    parser.add_argument("--release-stream", action="store_true",
                        help="only the analysts' release simulated as a stream of drops (no database)")
    parser.add_argument("--drops", type=int, default=DROPS, help="drops in the release stream")
    parser.add_argument("--drop-rows", type=int, default=DROP_ROWS, help="rows of each drop in the release stream")
    # the size whose collection a 1,000-row drop is compared in (a smaller one to try the bench out)
    parser.add_argument("--big-size", type=int, default=BIG_ROWS, help=argparse.SUPPRESS)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # child mode
    parser.add_argument("--csv", help=argparse.SUPPRESS)
    parser.add_argument("--database", help=argparse.SUPPRESS)
    parser.add_argument("--backup", metavar="DATABASE", help=argparse.SUPPRESS)  # child mode
    parser.add_argument("--stream-one", type=int, help=argparse.SUPPRESS)  # child mode
    parser.add_argument("--to", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _child_mode(args: argparse.Namespace) -> bool:
    """Run a child mode if asked for one (its figures printed as one JSON line); say whether it was."""
    if args.one:
        run = run_one(args.one, args.csv, args.database, args.repeats, args.scan_repeats, args.chain_only)
        print(json.dumps(as_json(run)), flush=True)
    elif args.backup:
        print(json.dumps(measure_backup(args.backup, Path(args.to))), flush=True)
    elif args.stream_one:
        stream = run_stream(args.stream_one, args.csv, Path(args.to), args.drops, args.drop_rows)
        print(json.dumps(as_json(stream)), flush=True)
    return bool(args.one or args.backup or args.stream_one)


def _environment(work: Path) -> dict[str, str]:
    """The children's and processes' environment: the bench's own data directory and server."""
    # its generated exports live in the work folder: runs may read them from there
    env = {**os.environ, "HEALTHCARE_DATA_DIR": str(work),
           "HEALTHCARE_IMPORT_DIR": os.pathsep.join([str(work), str(REPO / "data")])}
    for name in ("MONGODB_URI", "MONGODB_DATABASE", "MONGODB_COLLECTION", "HEALTHCARE_SOURCE_CSV"):
        env.pop(name, None)  # always the fresh embedded server, the bench's own databases and files
    return env


def _release_streams(sizes: list[int], args: argparse.Namespace, report_dir: Path) -> int:
    """`--release-stream`: each size's stream in a child process, no server; the exports and drops
    generated into a temporary folder."""
    work = Path(tempfile.mkdtemp(prefix="healthcare-stream-"))
    streams = {}
    for size in sizes:
        csv, generate_s = export_for(size, work)
        print(f"{size:,} rows: {csv}" + (f" (generated in {generate_s} s)" if generate_s else ""), flush=True)
        streams[size] = run_stream_child(size, csv, args, _environment(work), work)
    failed = any(stream is None for stream in streams.values())
    if failed or args.keep:
        print(f"kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    streams = {size: stream for size, stream in streams.items() if stream}
    targets = stream_targets(streams)
    print_streams(streams)
    print_targets(targets)
    path = report_dir / "release_stream.json"
    settings.write_owner_only(path, json.dumps({"sizes": {str(k): as_json(v) for k, v in streams.items()},
                                                "targets": [asdict(t) for t in targets]}, indent=2))
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
    results: dict[int, SizeRun] = {}
    figures, failed = ProcessFigures(), True
    try:
        print(f"embedded server {local_server.ensure_running(work)}, data in {work}")
        results = run_sizes(sizes, args, env, work, report_dir)
        figures = run_processes(results, args, Processes.prepare(work, env))
        failed = not all(r.success for r in results.values()) or not figures.success
    finally:
        embedded_mongo.stop(work)
        if failed:
            print(f"kept {work} (the child's Dagster log is bench_<size>.log there, each process's <name>.log)")
        elif not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    targets = evaluate(results) + figures.targets()
    print_sizes(results)
    print_processes(figures)
    print_targets(targets)
    write_report(report_dir / "bench.json", args, results, figures, targets)
    print(f"\nreport: {report_dir / 'bench.json'}" + (f"; data kept in {work}" if args.keep else ""))
    return 0
