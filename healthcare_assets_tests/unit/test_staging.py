"""Staged Parquet read back in batches and samples: every row once, in order; run folders
removed only when no process uses them."""

import os
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq

from healthcare_assets.plumbing import settings, staging
from healthcare_assets.plumbing.staging import row_batches, sample_rows


def staged(tmp_path, rows: int, row_group: int) -> str:
    path = tmp_path / "staged.parquet"
    pq.write_table(pa.table({"n": list(range(rows))}), path, row_group_size=row_group)
    return str(path)


def test_row_batches_cover_every_row_in_order_within_the_size(tmp_path):
    batches = list(row_batches(staged(tmp_path, 23, 10), 4))
    assert [row["n"] for batch in batches for row in batch] == list(range(23))
    assert max(len(b) for b in batches) == 4
    assert all(batches)


def test_sample_rows_are_reproducible_and_distinct(tmp_path):
    path = staged(tmp_path, 500, 64)
    first, again = sample_rows(path, 50, "seed"), sample_rows(path, 50, "seed")
    assert first == again
    assert len({row["n"] for row in first}) == 50
    assert sample_rows(path, 900, "seed") == [{"n": n} for n in range(500)]


HOLD = ("import sys, time; from pathlib import Path; from healthcare_assets.plumbing import staging; "
        "staging.hold(Path(sys.argv[1]), create=True); print('held', flush=True); time.sleep(float(sys.argv[2]))")


def hold_in_a_process(folder) -> subprocess.Popen:
    """Another process using a run's staging folder, as a run in progress does, until stopped."""
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), "600"], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_old_staging_folders_of_runs_in_progress_are_kept(data_dir):
    in_progress, finished = settings.staging_dir() / "run-in-progress", settings.staging_dir() / "run-finished"
    process = hold_in_a_process(in_progress)
    try:
        subprocess.run([sys.executable, "-c", HOLD, str(finished), "0"], check=True, capture_output=True,
                       timeout=60)  # a run that ended
        day_old = time.time() - staging.STAGING_KEEP_S - 60  # a long run's folder is older than a day
        for folder in (in_progress, finished):
            (folder / "raw.parquet").write_bytes(b"staged rows")
            os.utime(folder, (day_old, day_old))
        staging.remove_old_runs()
        assert (in_progress / "raw.parquet").exists()  # its process still runs
        assert not finished.exists()
    finally:
        process.kill()
        process.wait(timeout=30)
    assert staging.remove_if_unused(in_progress)  # once the process is gone, so is its hold
    assert not in_progress.exists()
