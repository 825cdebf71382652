"""mongo_backup: every database, daily, in the load's pool (no load writes while it reads)."""

import dagster as dg

from healthcare_assets.defs import verdicts
from healthcare_assets.defs.anonymize import anonymized_view
from healthcare_assets.defs.load import WRITES_POOL, mongo_hospitalizations
from healthcare_assets.defs.previews import markdown_table
from healthcare_assets.domain.backup import catalog, files, reading, restore, writing
from healthcare_assets.domain.backup.keys import forget_unneeded_master_keys
from healthcare_assets.domain.master_keys import MasterKeys
from healthcare_assets.plumbing import settings
from healthcare_assets.plumbing.backup_store import BackupStoreResource, open_store
from healthcare_assets.plumbing.keys import KeysResource
from healthcare_assets.plumbing.mongo import MongoResource

GROUP = "backups"
DRILL_SUFFIX = "__restore_drill"


class BackupConfig(dg.Config):
    to: str = ""  # a folder or s3://bucket/prefix; empty: HEALTHCARE_BACKUP_URI, or $HEALTHCARE_DATA_DIR/backups


@dg.asset(group_name=GROUP, kinds={"mongodb", "s3"}, deps=[mongo_hospitalizations, anonymized_view], pool=WRITES_POOL)
def mongo_backup(context: dg.AssetExecutionContext, config: BackupConfig, mongo: MongoResource,
                 backups: BackupStoreResource, keys: KeysResource) -> dg.MaterializeResult:
    """Every database of the deployment (the hospitalizations, the analysts' copy, the doctor
    app's copy, the audit log) in mongodump's --gzip layout, with a manifest of counts and SHA-256."""
    written = writing.write_backup(mongo.client(), mongo.database, mongo.server_label(), backups.store(config.to),
                                   MasterKeys.of(keys), log=context.log.info)
    table = markdown_table([(k, f"{v:,}") for k, v in written.collections.items()], ["collection", "documents"],
                           ("left", "right"))
    return dg.MaterializeResult(metadata={
        "backup": written.location, "name": written.name, "documents": sum(written.collections.values()),
        "collections": table, "files": len(written.manifest["files"]), "bytes": written.bytes,
        "seconds": round(written.seconds, 2), "consistency": writing.CONSISTENCY,
    })


def _newest(context: dg.AssetCheckExecutionContext, keys: MasterKeys) -> reading.Opened:
    """The backup this run wrote (its materialization names it)."""
    event = context.instance.get_latest_materialization_event(mongo_backup.key)
    return reading.open_backup(event.asset_materialization.metadata["backup"].value, keys)


@dg.asset_check(asset=mongo_backup, blocking=True, description=(
    "the backup reads back: every file's size and SHA-256 equal the manifest's, every document is "
    "whole, counts equal what was written and what the source held; then older backups are pruned"))
def backup_reads_back_intact(context: dg.AssetCheckExecutionContext, mongo: MongoResource,
                             backups: BackupStoreResource, keys: KeysResource) -> dg.AssetCheckResult:
    installation = MasterKeys.of(keys)
    try:
        written = _newest(context, installation)
        report = reading.verify(written)
    except files.BackupError as exc:
        location = context.instance.get_latest_materialization_event(mongo_backup.key)
        where = location.asset_materialization.metadata["backup"].value if location else "the backup store"
        return verdicts.verdict("backup_reads_back_intact", False, {"problem": str(exc)},
                                verdicts.Why(f"the backup does not read back ({exc})",
                                             "every file must equal the manifest's size and SHA-256",
                                             verdicts.FIXED, where))
    reading.mark_verified(written, report, installation)
    store = open_store(str(written.store))
    deleted = reading.prune(store, written.name, backups.kept(), installation)
    # a retired master key goes once no retained backup needs it (named only, in production)
    retired, kept_why = forget_unneeded_master_keys(mongo.client(), installation, store,
                                                    catalog.Catalog(mongo.database, mongo.collection))
    return dg.AssetCheckResult(passed=True, metadata={**report, "pruned": dg.MetadataValue.json(deleted),
                                                      "retired_master_keys_unneeded": dg.MetadataValue.json(retired),
                                                      "retired_master_keys_kept": kept_why or ""})


@dg.asset_check(asset=mongo_backup, blocking=False, pool=WRITES_POOL, description=(
    "the newest backup, restored into scratch databases, equals the source document by document "
    "(a SHA-256 of each document's BSON), and no stay of an erased patient was in it or came back"))
def backup_restores_identically(context: dg.AssetCheckExecutionContext, mongo: MongoResource,
                                keys: KeysResource) -> dg.AssetCheckResult:
    written = _newest(context, MasterKeys.of(keys))
    client = mongo.client()
    rename = {db: f"{db}{DRILL_SUFFIX}" for db in written.manifest["databases"]}
    for scratch in rename.values():  # what an interrupted drill left behind
        client.drop_database(scratch)
    try:
        restored = restore.restore(written, client, MasterKeys.of(keys), mongo.database, mongo.collection,
                                   rename=rename, log=context.log.info)
        report = restore.compare(client, client, written, mongo.collection, rename)
    finally:
        for scratch in rename.values():
            client.drop_database(scratch)
    expected = {f"{rename[db]}.{coll}": e["documents"] for db, coll, e in written.collections() if e["type"] != "view"}
    counts_match = restored.counts == expected
    # kept out: the backup held erased patients' stays; returned: the restore wrote some back (erasure not in force)
    kept_out = sum(restored.kept_out.values())
    came_back = sum(t["erased_returned"] for t in report.values())
    tallies = ("identical", "differing", "only_in_backup", "only_in_source", "erased_returned")
    table = markdown_table([(k, *(f"{t[n]:,}" for n in tallies)) for k, t in report.items()],
                           ["collection", *(n.replace("_", " ") for n in tallies)], ("left", *("right",) * 5))
    return dg.AssetCheckResult(
        passed=counts_match and not restore.differences(report) and not kept_out,
        metadata={"backup": written.location, "documents_restored": sum(restored.counts.values()),
                  "restored_counts_match_manifest": counts_match, "erased_patients_listed": restored.erased_patients,
                  "erased_stays_kept_out": kept_out, "erased_stays_returned": came_back, "comparison": table},
    )


BACKUP_SELECTION = dg.AssetSelection.assets(mongo_backup) - dg.AssetSelection.checks(backup_restores_identically)

mongo_backup_job = dg.define_asset_job("mongo_backup_job", selection=BACKUP_SELECTION,
                                       description="Back up every database of the deployment and read the backup back.")

restore_drill = dg.define_asset_job(
    "restore_drill", selection=dg.AssetSelection.assets(mongo_backup),
    description="Take a backup, restore it into scratch databases, compare every document with the source; "
                "no erased patient's stay may come back.")


@dg.definitions
def backups() -> dg.Definitions:
    # stopped on the embedded server, so a developer's `dagster dev` does not pile up daily copies
    status = dg.DefaultScheduleStatus.RUNNING if settings.environment().production else dg.DefaultScheduleStatus.STOPPED
    return dg.Definitions(
        assets=[mongo_backup], asset_checks=[backup_reads_back_intact, backup_restores_identically],
        jobs=[mongo_backup_job, restore_drill],
        schedules=[dg.ScheduleDefinition(job=mongo_backup_job, cron_schedule="15 2 * * *", default_status=status),
                   dg.ScheduleDefinition(job=restore_drill, cron_schedule="45 4 * * 0", default_status=status)],
    )
