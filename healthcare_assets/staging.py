"""What passes between assets: small descriptors of Parquet files staged on disk.

Frames never travel through Dagster's IO manager whole; each stage streams the previous stage's
Parquet file row group by row group, so memory stays bounded however large the export is.
"""

from __future__ import annotations

import random
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from healthcare_assets.resources import settings

CHUNK_ROWS = 50_000  # rows per chunk and per Parquet row group
STAGING_KEEP_S = 24 * 3600  # older run folders are removed at the next ingest


@dataclass(frozen=True)
class SourceFile:
    """The input file as read: where it came from and what exactly was in it."""

    uri: str
    name: str
    size: int
    sha256: str
    schema_version: str
    etag: str | None = None

    def as_metadata(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class StagedFrame:
    path: str
    rows: int
    source: SourceFile
    chunk_rows: tuple[int, ...] = field(default=())
    counts: dict = field(default_factory=dict)  # stage-specific tallies (cleaning rules, ...)

    def chunks(self, columns: list[str] | None = None) -> Iterator[pd.DataFrame]:
        """The staged rows, one row group at a time."""
        parquet = pq.ParquetFile(self.path)
        for i in range(parquet.num_row_groups):
            yield parquet.read_row_group(i, columns=columns).to_pandas()


def row_batches(path: str, size: int) -> Iterator[list[dict]]:
    """Staged rows as dicts, `size` at a time, reading one row group at a time: pyarrow's
    iter_batches keeps what it has read allocated (≈ 120 MB more per million rows)."""
    parquet = pq.ParquetFile(path)
    for i in range(parquet.num_row_groups):
        for batch in parquet.read_row_group(i).to_batches(max_chunksize=size):
            yield batch.to_pylist()


def run_dir(run_id: str) -> Path:
    return settings.private_dir(settings.staging_dir() / run_id)


def remove_old_runs(now: float | None = None) -> None:
    root = settings.staging_dir()
    if not root.exists():
        return
    cutoff = (now or time.time()) - STAGING_KEEP_S
    for folder in root.iterdir():
        if folder.is_dir() and folder.stat().st_mtime < cutoff:
            shutil.rmtree(folder, ignore_errors=True)


class ParquetChunkWriter:
    """Appends DataFrame chunks with one fixed Arrow schema; each chunk is one row group."""

    def __init__(self, path: Path, schema: pa.Schema):
        self.path = path
        self.schema = schema
        self.rows = 0
        self.chunk_rows: list[int] = []
        self._writer = pq.ParquetWriter(path, schema)
        settings.owner_only(path)  # staged rows are patient data

    def write(self, frame: pd.DataFrame) -> None:
        if frame.empty:
            return
        table = pa.Table.from_pandas(frame, schema=self.schema, preserve_index=False)
        self._writer.write_table(table, row_group_size=len(frame))
        self.rows += len(frame)
        self.chunk_rows.append(len(frame))

    def close(self) -> None:
        self._writer.close()


def sample_rows(path: str, size: int, seed: str) -> list[dict]:
    """A reproducible random sample of staged rows, reading only the row groups it needs."""
    parquet = pq.ParquetFile(path)
    total = parquet.metadata.num_rows
    positions = sorted(random.Random(seed).sample(range(total), min(size, total)))
    rows: list[dict] = []
    start = 0
    for group in range(parquet.num_row_groups):
        count = parquet.metadata.row_group(group).num_rows
        wanted = [p - start for p in positions if start <= p < start + count]
        if wanted:
            rows += parquet.read_row_group(group).take(wanted).to_pylist()
        start += count
    return rows
