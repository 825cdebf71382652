"""raw_csv: the export as read, staged as Parquet of raw strings, with its provenance."""

from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq

from healthcare_assets.defs import verdicts
from healthcare_assets.defs.previews import column_schema, profile
from healthcare_assets.domain.schema import CSV_COLUMNS, FIELDS
from healthcare_assets.domain.sources import RawCsvReader, SourceReadError, locate, open_source
from healthcare_assets.plumbing import staging
from healthcare_assets.plumbing.settings import VARIABLES, PipelineSettings
from healthcare_assets.plumbing.staging import SourceFile, StagedFrame

# The runs list shows this tag: which file a run loaded, whatever started it (the sensor, the CLI, the UI).
SOURCE_TAG = "healthcare/source"
TAG_CHARS = 120


def source_tag(name: str) -> str:
    """Printable and capped: whoever names the file chooses it (an S3 key may be 1,024 bytes of anything)."""
    safe = "".join(c if c.isprintable() else "?" for c in name).strip()
    if len(safe) > TAG_CHARS:
        safe = safe[: TAG_CHARS - 21] + "..." + safe[-18:]
    return safe or "(no name)"


RAW_SCHEMA = pa.schema([("line_number", pa.int64()), ("parse_error", pa.string())] + [(f, pa.string()) for f in FIELDS])


class SourceConfig(dg.Config):
    # A path under data/ or $HEALTHCARE_IMPORT_DIR, or s3://bucket/key; default $HEALTHCARE_SOURCE_CSV.
    source: str | None = None
    # An S3 object, bucket and key apart (what the sensor sends): a key may hold '#', '?' or '%'.
    s3_bucket: str | None = None
    s3_key: str | None = None


@dg.asset(group_name="ingestion", kinds={"csv", "parquet"})
def raw_csv(context: dg.AssetExecutionContext, config: SourceConfig,
            settings: PipelineSettings) -> dg.Output[StagedFrame]:
    """The hospital export exactly as read: header matched against the known export versions,
    every row kept as text (malformed rows flagged, not dropped), with file size and SHA-256."""
    staging.remove_old_runs()
    path = staging.run_dir(context.run_id) / "raw.parquet"
    named = config.source or (f"s3://{config.s3_bucket}/{config.s3_key}" if config.s3_key else settings.source_csv)
    try:
        limits = settings.limits()
        location = locate(settings, config.source, config.s3_bucket, config.s3_key)
        named = location.name
        context.instance.add_run_tags(context.run_id, {SOURCE_TAG: source_tag(named)})
        stream, store_info = open_source(location, limits)
    except SourceReadError as exc:
        raise refuse(context, settings, named, exc) from None
    reader = RawCsvReader(stream, location.name, staging.CHUNK_ROWS, limits)
    writer = staging.ParquetChunkWriter(path, RAW_SCHEMA)
    first_chunk = None
    malformed = 0
    try:
        for chunk in reader.chunks():
            first_chunk = chunk if first_chunk is None else first_chunk
            malformed += int((chunk["parse_error"] != "").sum())
            writer.write(chunk)
            context.log.info(f"read {reader.rows:,} rows of {reader.name}")
    except SourceReadError as exc:
        raise refuse(context, settings, named, exc) from None
    finally:
        writer.close()
        stream.close()

    source = SourceFile(uri=location.uri, name=reader.name, size=reader.size, sha256=reader.sha256,
                        schema_version=reader.version.name, etag=store_info.get("etag"),
                        bucket=location.bucket, key=location.key)
    staged = StagedFrame(str(path), reader.rows, source, tuple(writer.chunk_rows),
                         {"malformed_rows": malformed, "blank_lines_skipped": reader.blank_lines})
    return dg.Output(staged, metadata={
        "dagster/row_count": reader.rows, "dagster/column_schema": column_schema({h: "string" for h in reader.header}),
        **source.as_metadata(), "malformed_rows": malformed, "blank_lines_skipped": reader.blank_lines,
        "profile": profile(first_chunk.drop(columns="parse_error").rename(columns=CSV_COLUMNS))})


def refuse(context: dg.AssetExecutionContext, settings: PipelineSettings, named: str,
           exc: SourceReadError) -> dg.Failure:
    """The failure that refuses the file, once the run's quality page says why."""
    verdicts.refused(context.run_id, settings.kept_reports(), named, str(exc))
    return dg.Failure(description=str(exc), allow_retries=False)


@dg.asset_check(asset=raw_csv, blocking=True)
def staged_rows_match_file(context: dg.AssetCheckExecutionContext, raw_csv: StagedFrame,
                           settings: PipelineSettings) -> dg.AssetCheckResult:
    """Every row read from the file is in the staged copy, once."""
    staged = pq.ParquetFile(raw_csv.path).metadata.num_rows
    lines = set()
    for chunk in raw_csv.chunks(columns=["line_number"]):
        lines.update(chunk["line_number"])
    page = verdicts.run_page(context.run.run_id, raw_csv, settings.kept_reports())
    return verdicts.verdict(
        "staged_rows_match_file", staged == raw_csv.rows == len(lines),
        {"rows_read": raw_csv.rows, "rows_staged": staged, "distinct_lines": len(lines)},
        verdicts.Why(f"{raw_csv.rows:,} rows were read but {staged:,} staged ({len(lines):,} distinct lines)",
                     "every row read must be staged exactly once", verdicts.FIXED, page.path), page)


def share_within_ceiling(name: str, rejected: int, rows: int, settings: PipelineSettings, share_name: str,
                         counted: dict, what: str, look_at: Path | str, page: verdicts.RunPage) -> dg.AssetCheckResult:
    """Passes while `rejected` of `rows` (all, when there are none) is within the quarantine ceiling."""
    share = rejected / rows if rows else 1.0
    ceiling = settings.ceiling()
    figure = f"{verdicts.percent(share)} of rows ({rejected:,} of {rows:,}) {what}" if rows else "the file has no rows"
    why = verdicts.Why(figure, f"the ceiling is {verdicts.percent(ceiling, 4)}" + ("" if rows else " and no rows count as all"),
                       VARIABLES["quarantine_ceiling"], look_at if rejected else page.path)
    return verdicts.verdict(name, share <= ceiling,
                            {**counted, share_name: round(share, 6), "ceiling": ceiling}, why, page)


@dg.asset_check(asset=raw_csv, blocking=True)
def malformed_rows_within_ceiling(context: dg.AssetCheckExecutionContext, raw_csv: StagedFrame,
                                  settings: PipelineSettings) -> dg.AssetCheckResult:
    """A file whose rows mostly have the wrong number of fields is refused, not half loaded."""
    malformed = sum(int((c["parse_error"] != "").sum()) for c in raw_csv.chunks(columns=["parse_error"]))
    page = verdicts.run_page(context.run.run_id, raw_csv, settings.kept_reports())
    return share_within_ceiling("malformed_rows_within_ceiling", malformed, raw_csv.rows, settings, "share",
                                {"malformed_rows": malformed}, "have the wrong number of fields", page.path, page)
