"""Staged Parquet read back in batches and samples: every row once, in order."""

import pyarrow as pa
import pyarrow.parquet as pq

from healthcare_assets.staging import row_batches, sample_rows


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
