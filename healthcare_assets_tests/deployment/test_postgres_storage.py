"""Dagster's Postgres storage, for real: a throwaway PostgreSQL cluster (Debian's `postgresql`),
the instance configured by deploy/dagster.yaml exactly as the compose deployment ships it (only the
environment differs), the whole chain materialized into it, then read back by a fresh instance."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pytest
from dagster import DagsterEventType

from healthcare_assets.defs.resources import pipeline_settings
from healthcare_assets.plumbing.backup_store import BackupStoreResource
from healthcare_assets_tests.fixtures.environment import keys_resource
from healthcare_assets_tests.fixtures.postgres import (
    DEPLOY_INSTANCE,
    connect,
    dagster_postgres_environment,
)
from healthcare_assets_tests.fixtures.runs import DEFS


@pytest.fixture
def instance_dir(postgres, tmp_path, monkeypatch) -> Path:
    """A DAGSTER_HOME holding deploy/dagster.yaml byte for byte; the cluster comes in through the
    same DAGSTER_POSTGRES_* variables docker-compose.yml sets."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(DEPLOY_INSTANCE, home / "dagster.yaml")
    for name, value in dagster_postgres_environment(postgres).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


def test_deploy_instance_is_postgres_backed(instance_dir):
    from dagster_postgres import (
        PostgresEventLogStorage,
        PostgresRunStorage,
        PostgresScheduleStorage,
    )

    with dg.DagsterInstance.from_config(str(instance_dir)) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert type(instance.run_launcher).__name__ == "DefaultRunLauncher"
        assert instance.all_instigator_state() == []  # the schedule storage answers (its tables exist)
        # What the daemon reads of run monitoring, retries and the queue (test_compose_services says why)
        assert instance.run_monitoring_enabled and instance.run_monitoring_max_runtime_seconds > 0
        assert instance.run_monitoring_max_resume_run_attempts == 0
        assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] > 0
        assert instance.run_retries_enabled and not instance.run_retries_retry_on_asset_or_op_failure
        assert instance.get_concurrency_config().run_queue_config.max_user_code_failure_retries > 0


@pytest.mark.slow
def test_chain_runs_and_reads_back_from_postgres(instance_dir, postgres, mongo, small_csv):
    with dg.DagsterInstance.from_config(str(instance_dir)) as instance:
        result = dg.materialize(
            [*DEFS.assets, *DEFS.asset_checks],
            resources={"mongo": mongo, "keys": keys_resource(), "settings": pipeline_settings(), "backups": BackupStoreResource()},
            run_config={"ops": {"raw_csv": {"config": {"source": str(small_csv)}}}},
            instance=instance,
            raise_on_error=False,
        )
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    checks_in_process = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assets_in_process = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert checks_in_process and all(checks_in_process.values())
    assert {"raw_csv", "cleaned_frame", "quality_report", "mongo_hospitalizations"} <= assets_in_process

    # A fresh instance on the same configuration sees the run, its checks and materializations.
    with dg.DagsterInstance.from_config(str(instance_dir)) as fresh:
        run = fresh.get_run_by_id(result.run_id)
        assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS
        stored_checks = {
            e.dagster_event.event_specific_data.check_name: e.dagster_event.event_specific_data.passed
            for e in fresh.all_logs(result.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION)
        }
        assert stored_checks == checks_in_process
        stored_assets = {
            e.dagster_event.asset_key.to_user_string()
            for e in fresh.all_logs(result.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION)
        }
        assert stored_assets == assets_in_process
        latest = fresh.get_latest_materialization_event(dg.AssetKey("mongo_hospitalizations"))
        assert latest.run_id == result.run_id
        row_count = latest.asset_materialization.metadata["dagster/row_count"].value
        assert row_count == mongo.hospitalizations().count_documents({}) > 0
        check = fresh.event_log_storage.get_latest_asset_check_execution_by_key(
            [dg.AssetCheckKey(dg.AssetKey("mongo_hospitalizations"), "document_count_matches_cleaned_rows")]
        )
        record = next(iter(check.values()))
        assert record.run_id == result.run_id and record.status.value == "SUCCEEDED"

    # And it is PostgreSQL that holds them, not a local fallback.
    conn = connect(postgres, postgres["db"])
    with conn, conn.cursor() as cur:
        cur.execute("SELECT status FROM runs WHERE run_id = %s", (result.run_id,))
        assert cur.fetchone() == ("SUCCESS",)
        cur.execute("SELECT count(*) FROM event_logs WHERE run_id = %s AND dagster_event_type = %s",
                    (result.run_id, "ASSET_CHECK_EVALUATION"))
        assert cur.fetchone()[0] == len(checks_in_process)
    conn.close()
