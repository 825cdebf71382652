"""collection_audit_job: the whole-collection checks, scheduled apart since they cost the whole collection."""

import dagster as dg

from healthcare_assets.defs.anonymize import analysts_release_audit

COLLECTION_AUDIT = dg.AssetSelection.checks(analysts_release_audit)

collection_audit_job = dg.define_asset_job(
    "collection_audit_job", selection=COLLECTION_AUDIT,
    description="Whole-collection audit: the analysts' copy against its bookkeeping and the privacy checks.")

collection_audit_schedule = dg.ScheduleDefinition(
    job=collection_audit_job, cron_schedule="30 3 * * *", default_status=dg.DefaultScheduleStatus.RUNNING)
