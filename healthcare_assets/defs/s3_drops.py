"""s3_csv_drop_sensor: one run per new CSV object version (tags, not partitions: `--select '*'` stays plain)."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field

import dagster as dg
from dagster_aws.s3.sensor import get_objects

from healthcare_assets.defs.collection_audit import COLLECTION_AUDIT
from healthcare_assets.defs.ingest import SourceConfig
from healthcare_assets.plumbing.s3 import S3DropResource
from healthcare_assets.plumbing.settings import PipelineSettings, environment

SOURCE_KEY_TAG = "healthcare/source_key"
SOURCE_ETAG_TAG = "healthcare/source_etag"

# S3 stamps an object with the second its upload *started* (a long upload appears late, already
# old), so each tick re-lists this far behind the newest seen and skips what it handled by key@ETag.
LOOKBACK = dt.timedelta(hours=1)
MAX_RUNS_PER_TICK = 50  # a backlog drains over a few ticks instead of one huge tick
TEMPORARY_MARKERS = ("_tmp", ".part", ".tmp")

# Every stage and its checks, but those judging the whole collection (benchmark, audit) and the backups.
DROP_SELECTION = (dg.AssetSelection.all() - dg.AssetSelection.assets("index_benchmarks") - COLLECTION_AUDIT
                  - dg.AssetSelection.groups("backups"))

# A run that dies with its process is launched again, whole (staging is per run, the load writes each row once);
# one failed by its own steps would fail the same way. Inert unless the instance enables run retries.
RETRY_TAGS = {"dagster/max_retries": "2", "dagster/retry_strategy": "ALL_STEPS",
              "dagster/retry_on_asset_or_op_failure": "false"}

s3_csv_drop_job = dg.define_asset_job("s3_csv_drop_job", selection=DROP_SELECTION, tags=RETRY_TAGS, description=(
    "The whole chain, with its checks, for one file dropped in S3 (see s3_csv_drop_sensor)."))


@dataclass
class DropCursor:
    """The newest LastModified seen (epoch seconds) and every key@ETag stamped within LOOKBACK of it."""

    newest: float = 0.0
    seen: dict[str, float] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: str | None) -> DropCursor:
        return cls(float((data := json.loads(raw))["newest"]), dict(data["seen"])) if raw else cls()

    def list_after(self) -> dt.datetime | None:
        """The bound for get_objects (exclusive); None on the first tick: list everything."""
        return dt.datetime.fromtimestamp(self.newest, dt.UTC) - LOOKBACK if self.newest else None

    def mark(self, version: str, last_modified: float) -> None:
        self.seen[version] = last_modified
        self.newest = max(self.newest, last_modified)

    def dump(self) -> str:  # only versions the next listing can still return
        horizon = self.newest - LOOKBACK.total_seconds()
        seen = {v: t for v, t in self.seen.items() if t > horizon}
        return json.dumps({"newest": self.newest, "seen": seen}, sort_keys=True)


def why_not_a_finished_csv(key: str, size: int, cap: int) -> str | None:
    name = key.rsplit("/", 1)[-1].lower()
    if not name:
        return "a folder marker"
    if any(marker in name for marker in TEMPORARY_MARKERS):
        return "a temporary or partial upload (name contains _tmp, .part or .tmp)"
    if not name.endswith(".csv"):
        return "not a .csv file"
    if size == 0:
        return "empty (0 bytes): an upload in progress or a placeholder"
    if size > cap:
        return (f"too large ({size:,} bytes, more than the limit of {cap:,}); raise "
                "HEALTHCARE_MAX_FILE_BYTES and copy the object to a new key to load it")
    return None


def run_request_for(bucket: str, key: str, etag: str) -> dg.RunRequest:
    # Bucket and key apart, never an s3:// URL: a key may hold '#', '?', '%' or spaces.
    return dg.RunRequest(run_key=f"{key}@{etag}", tags={SOURCE_KEY_TAG: key, SOURCE_ETAG_TAG: etag},
                         run_config=dg.RunConfig(ops={"raw_csv": SourceConfig(s3_bucket=bucket, s3_key=key)}))


def s3_csv_drop_sensor(context: dg.SensorEvaluationContext, s3: S3DropResource,
                       settings: PipelineSettings) -> dg.SensorResult | dg.SkipReason:
    """One run of the chain per new CSV object under $HEALTHCARE_S3_BUCKET / $HEALTHCARE_S3_PREFIX."""
    bucket, prefix, cap = s3.bucket, s3.prefix, settings.limits().file_bytes
    if not bucket:
        return dg.SkipReason("HEALTHCARE_S3_BUCKET is not set: there is no bucket to watch")
    cursor = DropCursor.parse(context.cursor)
    objects = get_objects(bucket, prefix, since_last_modified=cursor.list_after(), client=s3.get_client())
    runs: list[dg.RunRequest] = []
    ignored = 0
    for obj in objects:  # oldest first
        key, etag = obj["Key"], obj["ETag"].strip('"')
        version = f"{key}@{etag}"
        if version in cursor.seen:
            continue
        if len(runs) >= MAX_RUNS_PER_TICK:
            context.log.info(f"{MAX_RUNS_PER_TICK} runs requested; the rest waits for the next tick")
            break
        cursor.mark(version, obj["LastModified"].timestamp())
        if reason := why_not_a_finished_csv(key, obj["Size"], cap):
            ignored += 1
            context.log.info(f"ignored s3://{bucket}/{key}: {reason}")
            continue
        context.log.info(f"new file s3://{bucket}/{key} (ETag {etag}, {obj['Size']:,} bytes): requesting a run")
        runs.append(run_request_for(bucket, key, etag))

    if runs:
        return dg.SensorResult(run_requests=runs, cursor=cursor.dump())
    note = f"; ignored {ignored} object(s) that are not finished CSV files (see the tick log)" if ignored else ""
    return dg.SensorResult(skip_reason=f"no new CSV file in s3://{bucket}/{prefix}{note}", cursor=cursor.dump())


@dg.definitions
def s3_drops() -> dg.Definitions:
    # running only where a bucket is configured (elsewhere it would only log skips); decided at load, not import
    running = bool(environment().get("HEALTHCARE_S3_BUCKET"))
    sensor = dg.sensor(job=s3_csv_drop_job, minimum_interval_seconds=30, default_status=(
        dg.DefaultSensorStatus.RUNNING if running else dg.DefaultSensorStatus.STOPPED))(s3_csv_drop_sensor)
    return dg.Definitions(jobs=[s3_csv_drop_job], sensors=[sensor])
