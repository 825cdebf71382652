"""The production topology without containers: the three Dagster services of docker-compose.yml
(the gRPC code server, dagster-webserver, dagster-daemon), started with the commands compose gives
them, on one PostgreSQL storage configured by deploy/dagster.yaml and a workspace made from
deploy/workspace.yaml; the pipeline's servers are the moto S3 endpoint and the embedded MongoDB
server with authentication.

A file dropped in the bucket is loaded by the daemon's sensor through the run queue. Then the code
server is recreated while a second file's run is in its load (every process it started killed at
once, as when its container goes), the daemon is killed with SIGKILL, a third file lands while
both are down, and both come back. Nothing may be
lost or loaded twice, and the killed run must be failed by the daemon's run monitor (not left
STARTED) and launched again.

Only timings differ from deploy/dagster.yaml (the monitor's poll interval and run time limit, the
queue's pause while the code server is away); the test checks that nothing else does.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import boto3
import dagster as dg
import pytest
import yaml
from dagster import DagsterEventType

from healthcare_assets.defs.s3_drops import SOURCE_KEY_TAG
from healthcare_assets.plumbing.mongo import MongoResource
from healthcare_assets.tooling.generate import generate_csv
from healthcare_assets_tests.fixtures.postgres import dagster_postgres_environment
from healthcare_assets_tests.fixtures.processes import child_environment
from healthcare_assets_tests.fixtures.published import copy_view_problems, fail_on, file_sha256
from healthcare_assets_tests.fixtures.runs import failure_messages, load_metadata
from healthcare_assets_tests.fixtures.topology import (
    FINISHED,
    FIRST_WRITE_TIMEOUT,
    JOB,
    MONITOR_MESSAGES,
    READY_TIMEOUT,
    RUN_LIMIT,
    RUN_TIMEOUT,
    Topology,
    instance_config,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1800)]


# file -> (rows, seed): small exports; "second" is the one whose run is killed in its load
FILES = {"first": (500, 7101), "second": (6_000, 7202), "third": (500, 7303)}


# --- what is checked ---------------------------------------------------------------------------


def data_rows(path: Path) -> int:
    with open(path, newline="") as handle:
        return sum(1 for _ in csv.reader(handle)) - 1


def monitor_failed(instance: dg.DagsterInstance, run_id: str) -> bool:
    """The run's failure came from the daemon's run monitor."""
    return any(any(m in (entry.message or "") for m in MONITOR_MESSAGES)
               for entry in instance.all_logs(run_id, of_type={DagsterEventType.RUN_FAILURE,
                                                               DagsterEventType.ENGINE_EVENT}))


def file_problems(instance, db, collection: str, name: str, path: Path, runs: list[dg.DagsterRun],
                  killed: str | None) -> tuple[list[str], int]:
    """(problems, rows loaded): the file's runs are one run and its retries, exactly one of them
    succeeded, every other one was failed by the run monitor (the killed one, and any that waited
    past the time limit for a pool slot the killed one held); the successful run loaded this file,
    every cleaned row of it (rows in = loaded + quarantined + duplicates), each on one document
    carrying the file's hash."""
    problems = []
    states = {r.run_id[:8]: r.status.value for r in runs}
    succeeded = [r for r in runs if r.status == dg.DagsterRunStatus.SUCCESS]
    others = [r for r in runs if r.status != dg.DagsterRunStatus.SUCCESS]
    if len(succeeded) != 1:
        failed = {r.run_id[:8]: failure_messages(instance, r.run_id) for r in others}
        return [f"{name}: {len(succeeded)} successful runs, expected 1: {states}; failures: {failed}"], 0
    if len({r.root_run_id or r.run_id for r in runs}) != 1:
        problems.append(f"{name}: runs {states} are not one run and its retries")
    if killed and killed not in {r.run_id for r in others}:
        problems.append(f"{name}: the killed run {killed[:8]} is not among its failed runs: {states}")
    for run in others:
        if run.status != dg.DagsterRunStatus.FAILURE or not monitor_failed(instance, run.run_id):
            problems.append(f"{name}: run {run.run_id[:8]} is {run.status.value}, not failed by the run "
                            f"monitor: {failure_messages(instance, run.run_id)}")
    load = load_metadata(instance, succeeded[0].run_id)
    if load is None:
        return [*problems, f"{name}: its run recorded no mongo_hospitalizations materialization"], 0
    sha = file_sha256(path)
    carried = db[collection].count_documents({"metadata.sources": sha})
    accounted = (load["rows_loaded"] + load["rows_quarantined"] + load["duplicates_removed"]
                 + load["rows_erased_patients"])
    if load["source_sha256"] != sha:
        problems.append(f"{name}: the run loaded {load['source_name']}, not this file")
    if not load["rows_in"] == data_rows(path) == accounted:
        problems.append(f"{name}: {data_rows(path):,} rows in the file, the run read {load['rows_in']:,} and "
                        f"accounts for {accounted:,}")
    if not carried == load["rows_loaded"] > 0:
        problems.append(f"{name}: {carried:,} documents carry the file's hash, the run loaded "
                        f"{load['rows_loaded']:,} rows")
    return problems, load["rows_loaded"]


def collection_problems(db, collection: str, files: dict[str, Path], loaded: int) -> list[str]:
    """Every document comes from one of the files, names each file at most once, and there are as
    many as the files' loaded rows (the files share no row)."""
    problems = []
    hashes = {file_sha256(path) for path in files.values()}
    sources = [doc["metadata"]["sources"] for doc in db[collection].find({}, {"metadata.sources": 1})]
    if len(sources) != loaded:
        problems.append(f"{len(sources):,} documents, expected {loaded:,} (the files' loaded rows)")
    repeated = sum(1 for s in sources if len(s) != len(set(s)))
    foreign = sum(1 for s in sources if not set(s) <= hashes)
    if repeated or foreign:
        problems.append(f"{repeated:,} documents name a file twice, {foreign:,} name another file")
    return problems


# --- the test ----------------------------------------------------------------------------------


@pytest.fixture
def topology_exports(tmp_path) -> dict[str, Path]:
    files = {}
    for name, (rows, seed) in FILES.items():
        files[name] = tmp_path / f"{name}.csv"
        generate_csv(rows=rows, seed=seed, out=files[name])
    return files


def test_restarting_code_server_and_daemon_loses_nothing_and_loads_nothing_twice(
    postgres, mongo: MongoResource, s3_bucket, topology_exports, tmp_path, monkeypatch
):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(instance_config()))
    storage_env = dagster_postgres_environment(postgres)
    for key, value in storage_env.items():
        monkeypatch.setenv(key, value)
    # The storage is created once, as it exists before any service of a deployment starts:
    # three processes creating its tables at once would race.
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.get_runs(limit=1)
        assert instance.run_monitoring_enabled and instance.run_retries_enabled
    # The code server gets the pipeline's settings; webserver and daemon only the storage's,
    # exactly what compose gives each.
    pipeline_env = {**child_environment(mongo, home), **storage_env}
    dagster_env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "DAGSTER_HOME": str(home),
                   "PYTHONUNBUFFERED": "1", **storage_env}
    topology = Topology(tmp_path, pipeline_env, dagster_env)
    s3 = boto3.client("s3")
    keys = {name: f"incoming/{name}.csv" for name in FILES}
    killed: str | None = None
    documents_at_kill = 0
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:

            def runs_of(name: str) -> list[dg.DagsterRun]:
                return instance.get_runs(filters=dg.RunsFilter(tags={SOURCE_KEY_TAG: keys[name]}))

            def finished(*names: str) -> bool:
                return all(runs_of(n) and all(r.status in FINISHED for r in runs_of(n)) for n in names)

            def states(*names: str) -> str:
                return "; ".join(f"{n}: {[r.status.value for r in runs_of(n)]}" for n in names)

            def drop(name: str) -> None:
                s3.put_object(Bucket=s3_bucket, Key=keys[name], Body=topology_exports[name].read_bytes())

            topology.start("user-code")
            topology.wait_code_server()
            topology.start("webserver")
            topology.start("daemon")
            jobs = wait_for(topology.loaded_jobs, READY_TIMEOUT, "the webserver with the code location loaded",
                            topology, "webserver")
            assert JOB in jobs, jobs

            # 1. A drop is loaded: sensor, queue, run in the code server.
            drop("first")
            wait_for(lambda: finished("first"), RUN_TIMEOUT, lambda: f"the first file's run ({states('first')})",
                     topology, "user-code", "daemon")

            # 2. The second file's run is killed with the code server in the middle of its load.
            drop("second")
            load_started = wait_for(
                lambda: next((r for r in runs_of("second") if any(
                    e.step_key == "mongo_hospitalizations"
                    for e in instance.all_logs(r.run_id, of_type=DagsterEventType.STEP_START))), None),
                RUN_TIMEOUT, "the second file's load step", topology, "user-code", "daemon")
            killed, sha = load_started.run_id, file_sha256(topology_exports["second"])
            # the kill comes once the load has written: a run killed before would test nothing
            wait_for(lambda: mongo.hospitalizations().count_documents({"metadata.sources": sha}),
                     FIRST_WRITE_TIMEOUT, "the second file's first documents in the collection", topology,
                     "user-code", "daemon", poll_s=0.2)
            topology.recreate_code_server()
            topology.kill_daemon()
            documents_at_kill = mongo.hospitalizations().count_documents({"metadata.sources": sha})
            assert documents_at_kill > 0
            assert instance.get_run_by_id(killed).status not in FINISHED, (
                f"the second file's run finished before the kill ({documents_at_kill:,} documents): "
                "nothing was interrupted")

            # 3. A third file lands while both are down; both come back.
            drop("third")
            topology.wait_code_server()
            topology.start("daemon")

            wait_for(lambda: finished(*FILES) and any(
                r.status == dg.DagsterRunStatus.SUCCESS for r in runs_of("second")),
                RUN_LIMIT + 2 * RUN_TIMEOUT, lambda: f"every file's runs finished, one success each ({states(*FILES)})",
                topology, "user-code", "daemon")
            liveness = topology.healthcheck("daemon")
            assert liveness.returncode == 0, liveness.stdout + liveness.stderr
            jobs = wait_for(topology.loaded_jobs, READY_TIMEOUT, "the webserver after the restarts",
                            topology, "webserver")
            assert JOB in jobs, jobs

            db, loaded, problems = mongo.db(), 0, []
            for name, path in topology_exports.items():
                found, rows = file_problems(instance, db, mongo.collection, name, path, runs_of(name),
                                            killed if name == "second" else None)
                problems += found
                loaded += rows
            # What happened, for the report: each run's status and seconds from start to end.
            timeline = {name: [(r.dagster_run.run_id[:8], r.dagster_run.status.value,
                                round((r.end_time or 0) - (r.start_time or 0)))
                               for r in instance.get_run_records(
                                   filters=dg.RunsFilter(tags={SOURCE_KEY_TAG: keys[name]}), ascending=True)]
                        for name in FILES}
    finally:
        topology.stop()
    problems += collection_problems(db, mongo.collection, topology_exports, loaded)
    problems += copy_view_problems(db, mongo.collection)
    summary = (f"runs (id, status, seconds): {timeline}; {documents_at_kill:,} of the second file's "
               f"documents were in when its run was killed")
    print(summary)
    fail_on(problems + ([summary] if problems else []))
