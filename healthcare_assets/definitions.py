"""The code location's only entry point."""

import dagster as dg

from healthcare_assets.defs import (
    anonymize,
    backup,
    benchmark,
    clean,
    ingest,
    load,
    migration,
    quality,
)
from healthcare_assets.defs.collection_audit import collection_audit_job, collection_audit_schedule
from healthcare_assets.resources.mongo import mongo_resource_from_env
from healthcare_assets.resources.outputs import RunScopedOutputs
from healthcare_assets.resources.s3 import s3_resource_from_env
from healthcare_assets.sensors import s3_csv_drop_job, s3_csv_drop_sensor

_modules = [ingest, clean, quality, load, anonymize, benchmark, backup]

defs = dg.Definitions(
    assets=dg.load_assets_from_modules(_modules),
    asset_checks=dg.load_asset_checks_from_modules(_modules),
    jobs=[s3_csv_drop_job, collection_audit_job, backup.mongo_backup_job,
          backup.restore_drill, migration.encrypt_existing_documents],
    schedules=[collection_audit_schedule, backup.mongo_backup_schedule, backup.restore_drill_schedule],
    sensors=[s3_csv_drop_sensor],
    resources={"mongo": mongo_resource_from_env(), "s3": s3_resource_from_env(), "io_manager": RunScopedOutputs()},
    # One process per run, not per step: a drop's steps are short, and a process per step cost
    # more than the steps themselves (Dagster's and pandas' imports, each time).
    executor=dg.in_process_executor,
)
