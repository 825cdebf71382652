"""Descriptors of Parquet files staged between assets, streamed a row group at a time: bounded memory."""

from __future__ import annotations

import fcntl
import os
import random
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from healthcare_assets.plumbing import settings

CHUNK_ROWS = 50_000  # rows per chunk and per Parquet row group
STAGING_KEEP_S = 24 * 3600  # older run folders are removed at the next ingest
NAME_CHARS = 80  # of a source's name in the names of files about it
LOCK = ".lock"


@dataclass(frozen=True)
class SourceFile:

    uri: str
    name: str
    size: int
    sha256: str
    schema_version: str
    etag: str | None = None
    bucket: str | None = None  # an S3 object: bucket and key as S3 has them (uri is for reading)
    key: str | None = None

    def as_metadata(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    @property
    def file_stem(self) -> str:
        """Hash, so same-named sources never share a file; name made safe and short (an S3 key may be 1 KiB)."""
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", self.name.removesuffix(".csv")).strip("._")[:NAME_CHARS]
        return f"{self.sha256[:16]}-{safe or 'export'}"


@dataclass(frozen=True)
class StagedFrame:
    path: str
    rows: int
    source: SourceFile
    chunk_rows: tuple[int, ...] = field(default=())
    counts: dict = field(default_factory=dict)  # stage-specific tallies (cleaning rules, ...)

    def chunks(self, columns: list[str] | None = None) -> Iterator[pd.DataFrame]:
        hold(Path(self.path).parent)
        parquet = pq.ParquetFile(self.path)
        for i in range(parquet.num_row_groups):
            yield parquet.read_row_group(i, columns=columns).to_pandas()


def row_batches(path: str, size: int) -> Iterator[list[dict]]:
    """Staged rows as dicts, one row group at a time: iter_batches keeps what it read (≈ 120 MB/million rows)."""
    hold(Path(path).parent)
    parquet = pq.ParquetFile(path)
    for i in range(parquet.num_row_groups):
        for batch in parquet.read_row_group(i).to_batches(max_chunksize=size):
            yield batch.to_pylist()


# A run's staging folder is in use while a process holding a shared flock on its .lock lives (docs/security.md):
# the OS drops it however the process ends, so a crash leaves no stale lock; removal skips a folder it cannot lock.
_held: dict[Path, int] = {}


def hold(folder: Path, create: bool = False) -> None:
    folder = Path(folder)
    if folder in _held or not (create or folder.is_dir()):
        return
    while True:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_SH)
        try:  # a removal may have taken the folder between open and flock: start again
            if os.stat(folder / LOCK).st_ino == os.fstat(fd).st_ino:
                _held[folder] = fd
                return
        except FileNotFoundError:
            pass
        os.close(fd)


def run_dir(run_id: str) -> Path:
    path = settings.private_dir(settings.staging_dir() / run_id)
    hold(path, create=True)
    return path


def remove_if_unused(folder: Path) -> bool:
    try:
        fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    except FileNotFoundError:
        return False  # removed meanwhile
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    shutil.rmtree(folder, ignore_errors=True)
    os.close(fd)
    return True


def in_use(folder: Path) -> bool:
    """Whether a living process holds the folder (a dry run's question: nothing is removed)."""
    try:
        fd = os.open(folder / LOCK, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def remove_old_runs(now: float | None = None) -> None:
    root = settings.staging_dir()
    if not root.exists():
        return
    cutoff = (now or time.time()) - STAGING_KEEP_S
    for folder in root.iterdir():
        if folder.is_dir() and folder.stat().st_mtime < cutoff:
            remove_if_unused(folder)


class ParquetChunkWriter:

    def __init__(self, path: Path, schema: pa.Schema):
        self.path, self.schema, self.rows = path, schema, 0
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
    hold(Path(path).parent)
    parquet = pq.ParquetFile(path)
    total = parquet.metadata.num_rows
    positions = sorted(random.Random(seed).sample(range(total), min(size, total)))
    rows: list[dict] = []
    start = 0
    for group in range(parquet.num_row_groups):
        count = parquet.metadata.row_group(group).num_rows
        if wanted := [p - start for p in positions if start <= p < start + count]:
            rows += parquet.read_row_group(group).take(wanted).to_pylist()
        start += count
    return rows
