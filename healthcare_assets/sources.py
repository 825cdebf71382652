"""Reading an export, local or in S3, as a stream of raw-string chunks.

File-level problems (empty, binary, not UTF-8, unknown header, wrong delimiter, broken quoting)
raise SourceReadError with one message naming the file and what is wrong; row-level problems
(wrong number of fields) are kept on the row in `parse_error` for the cleaning stage to quarantine.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

import pandas as pd

from healthcare_assets.schema import (
    FIELDS,
    SchemaVersion,
    UnknownSchemaError,
    detect_schema_version,
)

csv.field_size_limit(1 << 20)  # one absurd field must not abort a whole file


class SourceReadError(ValueError):
    """The file as a whole cannot be read; the message says which file and why."""


class _HashingReader(io.RawIOBase):
    """Passes bytes through while computing their SHA-256 and size."""

    def __init__(self, raw: BinaryIO):
        self.raw = raw
        self.sha256 = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.raw.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self.sha256.update(data)
        self.size += n
        return n


def source_name(uri: str) -> str:
    return Path(urlsplit(uri).path).name if uri.startswith("s3://") else Path(uri).name


def open_source(uri: str) -> tuple[BinaryIO, dict]:
    """A binary stream of the file plus what the store says of it (S3: key, ETag, size)."""
    if uri.startswith("s3://"):
        import boto3
        import botocore.exceptions

        parts = urlsplit(uri)
        bucket, key = parts.netloc, parts.path.lstrip("/")
        try:
            response = boto3.client("s3").get_object(Bucket=bucket, Key=key)
        except botocore.exceptions.ClientError as exc:
            raise SourceReadError(f"{uri}: cannot read the object ({exc.response['Error'].get('Code')}); "
                                  "check that it still exists and that the credentials may read it") from None
        info = {"s3_key": key, "etag": response["ETag"].strip('"'), "size": response["ContentLength"]}
        return response["Body"], info
    path = Path(uri)
    if not path.is_file():
        raise SourceReadError(f"{uri}: no such file")
    return open(path, "rb"), {}


class RawCsvReader:
    """Iterates an export in chunks of raw strings; after iteration, `sha256`, `size`, `rows`
    and `blank_lines` describe the whole file."""

    def __init__(self, stream: BinaryIO, name: str, chunk_rows: int):
        self.name = name
        self.chunk_rows = chunk_rows
        self._bytes = _HashingReader(stream)
        self.version: SchemaVersion | None = None
        self.header: list[str] = []
        self.rows = 0
        self.blank_lines = 0

    @property
    def sha256(self) -> str:
        return self._bytes.sha256.hexdigest()

    @property
    def size(self) -> int:
        return self._bytes.size

    def _fail(self, line: int, what: str) -> SourceReadError:
        return SourceReadError(f"{self.name}, line {line}: {what}")

    def _records(self, text) -> Iterator[tuple[int, list[str]]]:
        reader = csv.reader(text, strict=True)
        line = 1
        while True:
            start = line  # a quoted field may span lines: report where the record starts
            try:
                record = next(reader)
            except StopIteration:
                return
            except UnicodeDecodeError as exc:
                bad = exc.object[exc.start : exc.start + 4]
                raise SourceReadError(
                    f"{self.name}: not UTF-8 text (bytes {bad!r} near line {reader.line_num + 1}); "
                    "re-export the file as UTF-8") from None
            except csv.Error as exc:
                if "NUL" in str(exc):
                    raise self._fail(reader.line_num or 1, "contains a NUL byte; is this a binary file?") from None
                raise self._fail(start, f"broken CSV quoting ({exc}); the file may be truncated") from None
            line = reader.line_num + 1
            yield start, record

    def chunks(self) -> Iterator[pd.DataFrame]:
        buffered = io.BufferedReader(self._bytes, buffer_size=1 << 16)
        if b"\x00" in buffered.peek(4096)[:4096]:
            raise SourceReadError(f"{self.name}: contains NUL bytes: this is a binary file, not a CSV export")
        text = io.TextIOWrapper(buffered, encoding="utf-8-sig", newline="")
        records = self._records(text)
        first = next(records, None)
        if first is None:
            raise SourceReadError(f"{self.name}: the file is empty ({self._bytes.size} bytes): expected a CSV header and rows")
        self.header = [h.strip() for h in first[1]]
        self.version = self._detect(self.header)
        by_header = {csv_name: field for field, csv_name in self.version.headers.items()}
        columns = [by_header[h] for h in self.header]
        width = len(columns)
        batch: list[list] = []
        for line, record in records:
            if not record or record == [""] * len(record):
                self.blank_lines += 1
                continue
            error = ""
            if len(record) != width:
                error = f"row has {len(record)} fields, expected {width}"
                if len(record) > width:
                    error += f"; extra values {record[width:]}"
                record = (record + [""] * width)[:width]
            batch.append([line, error, *record])
            if len(batch) >= self.chunk_rows:
                yield self._frame(batch, columns)
                batch = []
        if batch:
            yield self._frame(batch, columns)
        if self.rows == 0:
            raise SourceReadError(f"{self.name}: has a header but no data rows")

    def _detect(self, header: list[str]) -> SchemaVersion:
        if len(header) == 1:
            for delimiter in (";", "\t", "|"):
                if delimiter in header[0]:
                    raise SourceReadError(
                        f"{self.name}: the header is delimited by {delimiter!r}; expected comma-separated values"
                    )
        try:
            return detect_schema_version(header, self.name)
        except UnknownSchemaError as exc:
            raise SourceReadError(str(exc)) from None

    def _frame(self, batch: list[list], columns: list[str]) -> pd.DataFrame:
        frame = pd.DataFrame(batch, columns=["line_number", "parse_error", *columns])
        for field_name, default in self.version.defaults.items():
            frame[field_name] = default
        self.rows += len(frame)
        return frame[["line_number", "parse_error", *FIELDS]].astype({"line_number": "int64"})
