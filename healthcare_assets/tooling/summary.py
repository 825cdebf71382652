"""`healthcare-assets summary`: the last run and only its results, then what the database holds."""

import argparse
import datetime as dt
import os
import sys
from pathlib import Path

from dagster import DagsterEventType

from healthcare_assets.plumbing import settings


def last_run_lines(home: Path) -> tuple[list[str], str | None]:
    """What to print about the instance's last run, and its id (None: no run recorded)."""
    import dagster as dg

    from healthcare_assets.defs.ingest import SOURCE_TAG
    from healthcare_assets.domain import quality_pages

    if not (home / "dagster.yaml").exists() and not (home / "history").exists():
        return [f"last run      none recorded in {home} (DAGSTER_HOME)"], None
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs(limit=1)
        if not runs:
            return [f"last run      none recorded in {home} (DAGSTER_HOME)"], None
        run = runs[0]
        record = instance.get_run_record_by_id(run.run_id)
        started, ended = record.start_time, record.end_time
        when = dt.datetime.fromtimestamp(started).astimezone().isoformat(timespec="seconds") if started else "not started"
        took = f", {ended - started:.1f} s" if started and ended else ""
        lines = [f"last run      {run.run_id} of {run.job_name}: {run.status.value}, started {when}{took}",
                 f"source        {run.tags.get(SOURCE_TAG, '(not recorded)')}"]
        metadata = {}
        for entry in instance.all_logs(run.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION):
            if entry.dagster_event.asset_key == dg.AssetKey("cleaned_frame"):
                metadata = {k: v.value for k, v in entry.asset_materialization.metadata.items()}
    page = quality_pages.report_path(run.run_id)
    if page.exists():
        lines.append(f"quality       {page}  (opens offline; the last runs: {quality_pages.index_path()})")
    for key, label in (("cleaning_report", "cleaning"), ("quarantine_file", "quarantine")):
        if metadata.get(key) and Path(metadata[key]).exists():
            lines.append(f"{label:<13} {metadata[key]}")
    return lines, run.run_id


def database_lines() -> list[str]:
    from healthcare_assets.defs.resources import mongo_resource_from_env
    from healthcare_assets.domain.privacy import VIEW_NAME
    from healthcare_assets.domain.release.publishing import Release

    mongo = mongo_resource_from_env(start=False)
    collection = mongo.hospitalizations()
    release = Release(collection, b"")
    state = release.state() or {}
    return [
        f"MongoDB       {mongo.server_label()}  (URI: healthcare-assets mongo uri)",
        f"collection    {collection.database.name}.{collection.name}: {collection.estimated_document_count():,} documents",
        (f"analysts      {release.copy.full_name}: {release.copy.estimated_document_count():,} documents "
         f"({state.get('pending', 0):,} stays pending, {state.get('held_back', 0):,} held back, "
         f"{state.get('withdrawn', 0):,} withdrawn; view {collection.database.name}.{VIEW_NAME})")]


def run_summary(args: argparse.Namespace) -> int:
    lines, _ = last_run_lines(Path(os.environ.get("DAGSTER_HOME") or settings.data_dir() / "dagster_home"))
    for line in lines + database_lines():
        print(line)
    sys.stdout.flush()
    return 0
