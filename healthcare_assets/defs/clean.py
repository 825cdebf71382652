"""cleaned_frame: typed, repaired, de-duplicated rows; rejected rows go to quarantine with a reason."""

import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow as pa

from healthcare_assets.defs import verdicts
from healthcare_assets.defs.ingest import raw_csv, share_within_ceiling
from healthcare_assets.defs.previews import column_schema, counts_table, profile
from healthcare_assets.domain import cleaning
from healthcare_assets.domain.master_keys import MasterKeys
from healthcare_assets.domain.schema import AGE_RANGE, CLEANED_DTYPES
from healthcare_assets.plumbing import csv_cells, settings, staging
from healthcare_assets.plumbing.keys import KeysResource
from healthcare_assets.plumbing.settings import PipelineSettings
from healthcare_assets.plumbing.staging import SourceFile, StagedFrame

_ARROW_TYPES = {"str": pa.string(), "int64": pa.int64(), "float64": pa.float64(), "datetime64[ms]": pa.timestamp("ms")}
CLEANED_SCHEMA = pa.schema([(name, _ARROW_TYPES[dtype]) for name, dtype in CLEANED_DTYPES.items()])


def quarantine_path(source: SourceFile) -> Path:
    return settings.quarantine_dir() / f"{source.file_stem}.csv"


def report_path(source: SourceFile) -> Path:
    return settings.reports_dir() / "cleaning" / f"{source.file_stem}.json"


def _publish(written: Path, path: Path) -> None:
    # renamed into place whole: two runs of one file at once each leave a whole file, a reader never sees half
    settings.private_dir(path.parent)
    os.replace(written, path)


@dataclass
class Cleaned:
    writer: staging.ParquetChunkWriter
    counts: Counter
    first: pd.DataFrame  # the first non-empty chunk of cleaned rows (for the profile)


def clean_file(context: dg.AssetExecutionContext, raw_csv: StagedFrame, key: bytes, path: Path, q_written: Path) -> Cleaned:
    """Clean chunk after chunk into `path` (Parquet), the rejected rows into `q_written` (CSV)."""
    cleaner = cleaning.ChunkCleaner(key)
    writer = staging.ParquetChunkWriter(path, CLEANED_SCHEMA)
    counts: Counter = Counter()
    first = None
    with open(q_written, "w", newline="", encoding="utf-8") as quarantine:
        os.fchmod(quarantine.fileno(), 0o600)
        csv_cells.to_csv(pd.DataFrame(columns=cleaning.QUARANTINE_COLUMNS), quarantine)
        for raw in raw_csv.chunks():
            result = cleaner.clean(raw)
            writer.write(result.cleaned)
            # raw text as read, so a cell a spreadsheet would run as a formula is neutralized
            csv_cells.to_csv(result.quarantined, quarantine, header=False)
            counts.update(result.counts)
            first = result.cleaned if first is None or first.empty else first
            context.log.info(f"cleaned {counts['rows_in']:,} of {raw_csv.rows:,} rows")
    writer.close()
    return Cleaned(writer, counts, first if first is not None else pd.DataFrame())


@dg.asset(group_name="ingestion", kinds={"pandas", "parquet"})
def cleaned_frame(context: dg.AssetExecutionContext, raw_csv: StagedFrame, keys: KeysResource) -> dg.Output[StagedFrame]:
    """The cleaned rows as Parquet in the run's staging folder (the output is a StagedFrame, never the
    frame): typed and repaired (names title-cased, negative billing made positive, categories canonical),
    exact duplicates removed; rows that break a hard rule go to quarantine/ with line number and reason."""
    run_dir = staging.run_dir(context.run_id)
    path, q_written, q_path = run_dir / "cleaned.parquet", run_dir / "quarantine.csv", quarantine_path(raw_csv.source)
    done = clean_file(context, raw_csv, MasterKeys.of(keys).pseudonym_key(), path, q_written)
    counts = done.counts
    quarantined = bool(counts["rows_quarantined"])
    if quarantined:  # no file means nothing was rejected; another source's is never touched
        _publish(q_written, q_path)
    by_reason = {k.removeprefix("quarantined: "): v for k, v in sorted(counts.items()) if k.startswith("quarantined: ")}
    repairs, totals = {k: counts[k] for k in cleaning.REPAIRS}, {k: counts[k] for k in cleaning.ROW_COUNTS}
    report = {"source": raw_csv.source.as_metadata(), **totals, "repairs": repairs,
              "quarantined_by_reason": by_reason, "quarantine_file": str(q_path) if quarantined else None}
    r_path = report_path(raw_csv.source)
    _publish(settings.write_owner_only(run_dir / "cleaning_report.json", json.dumps(report, indent=2)), r_path)

    staged = StagedFrame(str(path), done.writer.rows, raw_csv.source, tuple(done.writer.chunk_rows),
                         {**totals, **repairs, "quarantined_by_reason": by_reason})
    return dg.Output(staged, metadata={
        "dagster/row_count": done.writer.rows, "dagster/column_schema": column_schema(CLEANED_DTYPES),
        **totals, **repairs, "quarantined_by_reason": dg.MetadataValue.json(by_reason),
        "row_accounting": counts_table({**totals, **repairs}), "dagster/uri": verdicts.file_uri(r_path),
        **verdicts.links("cleaning_report", r_path),
        **(verdicts.links("quarantine_file", q_path) if quarantined else {}), "profile": profile(done.first),
    })


def judged(context: dg.AssetCheckExecutionContext, cleaned_frame: StagedFrame, settings: PipelineSettings,
           passed: bool, metadata: dict, figure: str, limit: str, setting: str = verdicts.FIXED) -> dg.AssetCheckResult:
    """A check of the cleaned rows, pointing at the file's cleaning report when it fails."""
    page = verdicts.run_page(context.run.run_id, cleaned_frame, settings.kept_reports())
    return verdicts.verdict(context.check_specs[0].name, passed, metadata,
                            verdicts.Why(figure, limit, setting, report_path(cleaned_frame.source)), page)


@dg.asset_check(asset=cleaned_frame, blocking=True)
def no_duplicate_rows(context: dg.AssetCheckExecutionContext, cleaned_frame: StagedFrame,
                      settings: PipelineSettings) -> dg.AssetCheckResult:
    seen = cleaning.SeenKeys()
    duplicates = sum(int(seen.add(chunk["record_key"]).sum()) for chunk in cleaned_frame.chunks(["record_key"]))
    return judged(context, cleaned_frame, settings, duplicates == 0, {"duplicate_rows": duplicates},
                  f"{duplicates:,} cleaned rows are duplicates", "there may be none")


@dg.asset_check(asset=cleaned_frame, blocking=True)
def billing_is_non_negative(context: dg.AssetCheckExecutionContext, cleaned_frame: StagedFrame,
                            settings: PipelineSettings) -> dg.AssetCheckResult:
    negative = sum(int((c["billing_amount"] < 0).sum()) for c in cleaned_frame.chunks(["billing_amount"]))
    return judged(context, cleaned_frame, settings, negative == 0, {"negative_amounts": negative},
                  f"{negative:,} cleaned rows have a negative billing amount", "there may be none")


@dg.asset_check(asset=cleaned_frame, blocking=True)
def discharge_on_or_after_admission(context: dg.AssetCheckExecutionContext, cleaned_frame: StagedFrame,
                                    settings: PipelineSettings) -> dg.AssetCheckResult:
    bad = sum(int((c["discharge_date"] < c["date_of_admission"]).sum())
              for c in cleaned_frame.chunks(["date_of_admission", "discharge_date"]))
    return judged(context, cleaned_frame, settings, bad == 0, {"discharge_before_admission": bad},
                  f"{bad:,} cleaned rows have a discharge before their admission", "there may be none")


@dg.asset_check(asset=cleaned_frame, blocking=True)
def ages_in_range(context: dg.AssetCheckExecutionContext, cleaned_frame: StagedFrame,
                  settings: PipelineSettings) -> dg.AssetCheckResult:
    low, high = AGE_RANGE
    bad = sum(int(((c["age"] < low) | (c["age"] > high)).sum()) for c in cleaned_frame.chunks(["age"]))
    return judged(context, cleaned_frame, settings, bad == 0, {"ages_out_of_range": bad, "range": f"{low}..{high}"},
                  f"{bad:,} cleaned rows have an age outside {low}..{high}", "there may be none",
                  "none: AGE_RANGE in healthcare_assets/domain/schema.py")


@dg.asset_check(asset=cleaned_frame, blocking=True, additional_deps=[raw_csv])
def rows_add_up(context: dg.AssetCheckExecutionContext, cleaned_frame: StagedFrame,
                settings: PipelineSettings) -> dg.AssetCheckResult:
    """rows in = rows cleaned + rows quarantined + duplicates removed, counted from the files."""
    cleaned = sum(len(c) for c in cleaned_frame.chunks(["record_key"]))
    q_path = quarantine_path(cleaned_frame.source)
    quarantined = len(pd.read_csv(q_path, usecols=["line_number"])) if q_path.exists() else 0
    counts = cleaned_frame.counts
    total = cleaned + quarantined + counts["duplicates_removed"]
    return judged(context, cleaned_frame, settings, total == counts["rows_in"],
                  {"rows_in": counts["rows_in"], "rows_cleaned": cleaned, "rows_quarantined": quarantined,
                   "duplicates_removed": counts["duplicates_removed"]},
                  f"{counts['rows_in']:,} rows in but {cleaned:,} cleaned + {quarantined:,} quarantined + "
                  f"{counts['duplicates_removed']:,} duplicates = {total:,}", "the two must be equal")


@dg.asset_check(asset=cleaned_frame, blocking=True)
def quarantine_within_ceiling(context: dg.AssetCheckExecutionContext, cleaned_frame: StagedFrame,
                              settings: PipelineSettings) -> dg.AssetCheckResult:
    """A mostly-broken file fails here instead of quietly loading what little was good."""
    counts = cleaned_frame.counts
    page = verdicts.run_page(context.run.run_id, cleaned_frame, settings.kept_reports())
    return share_within_ceiling("quarantine_within_ceiling", counts["rows_quarantined"], counts["rows_in"],
                                settings, "quarantined_share", {}, "were quarantined",
                                quarantine_path(cleaned_frame.source), page)
