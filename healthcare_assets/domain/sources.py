"""Reading an export, local or in S3, as raw-string chunks: a file-level problem raises SourceReadError naming the
file; a row with the wrong number of fields is kept, with `parse_error`, for the cleaning stage to quarantine."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pandas as pd

from healthcare_assets.domain import schema
from healthcare_assets.domain.backup.files import Digest
from healthcare_assets.plumbing.settings import Limits, PipelineSettings

FIELD_BYTES = 1 << 20  # one absurd field must not abort a whole file
DEFAULT_LIMITS = Limits()


class SourceReadError(ValueError):
    """The file as a whole cannot be read; the message says which file and why."""


@dataclass(frozen=True)
class Location:
    """A local path, or an S3 bucket and key kept apart: a key is taken verbatim ('#', '?', '%', spaces are part of it),
    never parsed out of a URL."""

    path: Path | None = None
    bucket: str | None = None
    key: str | None = None

    @classmethod
    def s3_uri(cls, uri: str) -> Location:
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        return cls(bucket=bucket, key=key)

    @classmethod
    def recorded(cls, source: dict) -> Location:
        if source.get("bucket"):
            return cls(bucket=source["bucket"], key=source["key"])
        uri = source["uri"]
        return cls.s3_uri(uri) if uri.startswith("s3://") else cls(path=Path(uri))

    @property
    def uri(self) -> str:
        """For people and metadata; never parsed back (bucket and key are recorded apart)."""
        return f"s3://{self.bucket}/{self.key}" if self.bucket else str(self.path)

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1] if self.bucket else self.path.name


def locate(settings: PipelineSettings, source: str | None = None, s3_bucket: str | None = None,
           s3_key: str | None = None) -> Location:
    """The export a run names. A path in the run's config must resolve under an import root, an S3 object under the drop
    prefix: whoever can launch a run cannot read other files or objects."""
    if s3_bucket or s3_key:
        if not (s3_bucket and s3_key):
            raise SourceReadError("s3_bucket and s3_key go together: name both, or use `source`")
        return _in_drop_zone(settings, Location(bucket=s3_bucket, key=s3_key))
    default = settings.default_source()  # the operator's own choice: trusted like the roots
    if not source:
        return Location.s3_uri(default) if default.startswith("s3://") else Location(path=Path(default))
    if source.startswith("s3://"):
        return Location.s3_uri(source) if source == default else _in_drop_zone(settings, Location.s3_uri(source))
    path = Path(source).resolve()
    if path != Path(default).resolve() and not any(path.is_relative_to(r) for r in settings.import_roots()):
        raise SourceReadError(
            f"{source}: not under an import folder ({', '.join(map(str, settings.import_roots()))}); "
            "move the export there or add its folder to HEALTHCARE_IMPORT_DIR")
    return Location(path=path)


def _in_drop_zone(settings: PipelineSettings, location: Location) -> Location:
    if refusal := settings.outside_drop_zone(location.bucket, location.key):
        raise SourceReadError(f"{location.uri}: {refusal}")
    return location


def _too_large(name: str, size: int, cap: int) -> SourceReadError:
    return SourceReadError(f"{name}: {size:,} bytes, more than the limit of {cap:,} "
                           "(raise HEALTHCARE_MAX_FILE_BYTES to load it)")


def open_source(location: Location, limits: Limits = DEFAULT_LIMITS) -> tuple[BinaryIO, dict]:
    cap = limits.file_bytes
    if location.bucket:
        import boto3
        import botocore.exceptions

        try:
            response = boto3.client("s3").get_object(Bucket=location.bucket, Key=location.key)
        except botocore.exceptions.ClientError as exc:
            raise SourceReadError(f"{location.uri}: cannot read the object ({exc.response['Error'].get('Code')}); "
                                  "check that it still exists and that the credentials may read it") from None
        if response["ContentLength"] > cap:
            response["Body"].close()
            raise _too_large(location.uri, response["ContentLength"], cap)
        return response["Body"], {"etag": response["ETag"].strip('"'), "size": response["ContentLength"]}
    if not location.path.is_file():
        raise SourceReadError(f"{location.path}: no such file")
    if location.path.stat().st_size > cap:
        raise _too_large(str(location.path), location.path.stat().st_size, cap)
    return open(location.path, "rb"), {}


class RawCsvReader:
    """After iteration, `sha256`, `size`, `rows` and `blank_lines` describe the whole file."""

    def __init__(self, stream: BinaryIO, name: str, chunk_rows: int, limits: Limits = DEFAULT_LIMITS):
        self.name = name
        self.limits = limits
        self.chunk_rows = chunk_rows
        self._bytes = Digest(stream)
        self.version: schema.SchemaVersion | None = None
        self.header: list[str] = []
        self.rows = 0
        self.blank_lines = 0

    @property
    def sha256(self) -> str:
        return self._bytes.sha256.hexdigest()

    @property
    def size(self) -> int:
        return self._bytes.bytes

    def _fail(self, line: int, what: str) -> SourceReadError:
        return SourceReadError(f"{self.name}, line {line}: {what}")

    def _lines(self, text) -> Iterator[str]:
        """Each line refused past the limit before it is read whole (a file without newlines is one line)."""
        cap = self.limits.line_bytes
        line_number = 0
        while True:
            line = text.readline(cap + 2)  # characters: at most cap + 2, never fewer than the bytes
            if not line:
                return
            line_number += 1
            if len(line) * 4 > cap and len(line.rstrip("\r\n").encode()) > cap:
                raise self._fail(line_number, f"longer than the limit of {cap:,} bytes for one line "
                                              "(raise HEALTHCARE_MAX_LINE_BYTES to load it)")
            yield line

    def _records(self, text) -> Iterator[tuple[int, list[str]]]:
        csv.field_size_limit(FIELD_BYTES)
        reader = csv.reader(self._lines(text), strict=True)
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
            raise SourceReadError(f"{self.name}: the file is empty ({self._bytes.bytes} bytes): expected a CSV header and rows")
        self.header = [h.strip() for h in first[1]]
        self._check_width(self.header)
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

    def _check_width(self, header: list[str]) -> None:
        columns, cap = len(header), self.limits.header_columns
        if columns > cap:
            raise self._fail(1, f"the header has {columns:,} columns, more than the limit of {cap:,} "
                                f"(an export has {len(schema.FIELDS)}; raise HEALTHCARE_MAX_HEADER_COLUMNS to load it)")
        size, cap = len(",".join(header).encode()), self.limits.header_bytes
        if size > cap:
            raise self._fail(1, f"the header is {size:,} bytes, more than the limit of {cap:,} "
                                "(raise HEALTHCARE_MAX_HEADER_BYTES to load it)")

    def _detect(self, header: list[str]) -> schema.SchemaVersion:
        if len(header) == 1:
            for delimiter in (";", "\t", "|"):
                if delimiter in header[0]:
                    raise SourceReadError(
                        f"{self.name}: the header is delimited by {delimiter!r}; expected comma-separated values")
            # one column is no export's header, and may be any file's first line: never quoted
            raise SourceReadError(f"{self.name}: the first line is not an export's header (one column; "
                                  f"expected the comma-separated columns {list(schema.CSV_COLUMNS.values())})")
        try:
            return schema.detect_schema_version(header, self.name)
        except schema.UnknownSchemaError as exc:
            raise SourceReadError(str(exc)) from None

    def _frame(self, batch: list[list], columns: list[str]) -> pd.DataFrame:
        frame = pd.DataFrame(batch, columns=["line_number", "parse_error", *columns])
        for field_name, default in self.version.defaults.items():
            frame[field_name] = default
        self.rows += len(frame)
        return frame[["line_number", "parse_error", *schema.FIELDS]].astype({"line_number": "int64"})
