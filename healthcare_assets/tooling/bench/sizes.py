"""The scale benchmark's parent side of each size: the size's child process (`--one`), then its
backup's (`--backup`) and its release stream's (`--stream-one`), their printed figures read back,
the index reports copied out."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from healthcare_assets.plumbing import settings
from healthcare_assets.tooling.bench.exports import REPO, database_for, export_for
from healthcare_assets.tooling.bench.figures import BackupFigures, ReleaseStreamFigures, SizeRun

MODULE = "healthcare_assets.tooling.bench"


def scan_repeats_for(size: int, args) -> int:
    return args.scan_repeats or (3 if size < 1_000_000 else 1)


def printed_figures(stdout: str) -> dict | None:
    """The JSON line a child mode prints last (`--one`, `--backup`)."""
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else None


def run_child(size: int, csv: str, args, env: dict, log: Path) -> SizeRun:
    """One size in its own process, so its peak memory is its own; the child prints one JSON line."""
    command = [sys.executable, "-m", MODULE, "--one", str(size), "--csv", csv,
               "--database", database_for(size), "--repeats", str(args.repeats),
               "--scan-repeats", str(scan_repeats_for(size, args))]
    command += ["--chain-only"] if args.chain_only else []
    started = time.perf_counter()
    with open(log, "w") as err:  # Dagster's event log goes here
        child = subprocess.run(command, check=False, stdout=subprocess.PIPE, stderr=err, env=env, cwd=REPO, text=True)
    figures = printed_figures(child.stdout)
    if child.returncode != 0 or figures is None:
        raise RuntimeError(f"size {size}: the child exited {child.returncode}; see {log}")
    run = SizeRun.from_json(figures)
    run.process_s = round(time.perf_counter() - started, 2)
    return run


def run_backup_child(size: int, env: dict, work: Path) -> BackupFigures:
    """The size's backup in a process of its own (`--backup`), into the work folder."""
    command = [sys.executable, "-m", MODULE, "--backup", database_for(size), "--to", str(work / f"backups_{size}")]
    child = subprocess.run(command, check=True, stdout=subprocess.PIPE, env=env, cwd=REPO, text=True)
    return BackupFigures(**printed_figures(child.stdout))


def run_stream_child(size: int, csv: str, args, env: dict, work: Path) -> ReleaseStreamFigures | None:
    """The size's release stream (release_stream.py) in a process of its own, so its peak memory is
    its own; its drops generated into the work folder, once for every size. None if it failed."""
    command = [sys.executable, "-m", MODULE, "--stream-one", str(size), "--csv", csv, "--to", str(work / "stream_drops"),
               "--drops", str(args.drops), "--drop-rows", str(args.drop_rows)]
    with open(work / f"release_stream_{size}.log", "w") as err:
        child = subprocess.run(command, check=False, stdout=subprocess.PIPE, stderr=err, env=env, cwd=REPO, text=True)
    figures = printed_figures(child.stdout)
    if child.returncode != 0 or figures is None:
        print(f"  release stream: the child exited {child.returncode}; see {work / f'release_stream_{size}.log'}")
        return None
    stream = ReleaseStreamFigures.from_json(figures)
    print(f"  release stream: {stream.drops} drops of {stream.drop_rows:,} rows in {stream.seconds:.0f} s, "
          f"peak RSS {stream.peak_rss_mb:.0f} MB", flush=True)
    return stream


def _copy_index_reports(work: Path, report_dir: Path, size: int) -> None:
    """The size's index_benchmarks report and chart, into the caller's reports under bench/."""
    for suffix in ("json", "png"):
        produced = work / "reports" / f"index_benchmarks.{suffix}"
        if produced.exists():
            settings.private_dir(report_dir / "bench")
            copied = shutil.copy(produced, report_dir / "bench" / f"index_benchmarks_{size}.{suffix}")
            settings.owner_only(Path(copied))


def run_sizes(sizes: list[int], args, env: dict, work: Path, report_dir: Path) -> dict[int, SizeRun]:
    """Each size's chain, ceiling and index benchmarks, one child process per size."""
    results: dict[int, SizeRun] = {}
    for size in sizes:
        csv, generate_s = export_for(size, work)
        print(f"{size:,} rows: {csv}" + (f" (generated in {generate_s} s)" if generate_s else ""), flush=True)
        r = results[size] = run_child(size, csv, args, env, work / f"bench_{size}.log")
        r.generate_s = generate_s
        print(f"  done in {r.process_s:.0f} s, success={r.success}, peak RSS {r.peak_rss_mb:.0f} MB"
              + ("" if r.success else f"; failed checks: {[k for k, v in r.checks.items() if not v]}, "
                                      f"failed steps: {[asdict(f) for f in r.failures]}"),
              flush=True)
        if r.load:
            r.backup = run_backup_child(size, env, work)
            print(f"  backup of {r.backup.documents:,} documents in {r.backup.backup_s:.0f} s, "
                  f"peak RSS {r.backup.peak_rss_mb:.0f} MB", flush=True)
        r.release_stream = run_stream_child(size, csv, args, env, work)
        _copy_index_reports(work, report_dir, size)
    return results
