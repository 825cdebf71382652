"""Runs that overlap lose nothing: two files loaded at the same time, by two processes against one
MongoDB server or by dagster-daemon launching two sensor runs at once, leave every row in
`hospitalizations` and the analysts' copy equal to the anonymized view, document for document.

Everything is real: the embedded MongoDB daemon, separate `dagster` / `dagster-daemon` processes
on a temporary DAGSTER_HOME, moto's HTTP S3 endpoint. The tests only look at what a user can see
(run statuses and metadata in the Dagster instance, the collections), never at how the copy is
maintained.
"""

from __future__ import annotations

import json
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import dagster as dg
import pytest
from pymongo.database import Database

from healthcare_assets.defs.s3_drops import SOURCE_KEY_TAG
from healthcare_assets.plumbing.mongo import MongoResource
from healthcare_assets.tooling.generate import generate_csv
from healthcare_assets_tests.fixtures.processes import (
    child_environment,
    make_dagster_home,
    require_tool,
    start,
    stop,
    tail,
)
from healthcare_assets_tests.fixtures.published import (
    copy_view_problems,
    fail_on,
    file_sha256,
)
from healthcare_assets_tests.fixtures.runs import (
    failure_messages,
    load_metadata,
    materialize,
    materialized,
)

pytestmark = pytest.mark.slow

MODULE = "healthcare_assets.definitions"
JOB = "s3_csv_drop_job"
PRELOAD_ROWS = 8_000  # a database already holding data, so the copy is not trivial to rebuild
# file -> (rows, seed): two disjoint exports of one size, so that both runs reach the analysts'
# copy at about the same moment instead of one after the other
DROPS = {"north": (2_500, 4101), "south": (2_500, 4202)}
TEST_TAG = "healthcare_test/drop"
RUN_TIMEOUT = 240  # seconds a CLI run may take before the test gives up on it
DAEMON_TIMEOUT = 360  # seconds the daemon has to finish both sensor runs
FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
NO_TELEMETRY = "telemetry:\n  enabled: false\n"
# The deployment's queue: at most two runs at a time (dequeued every second here, every five by
# default), and every pool a step names limited to one step at a time. In Dagster 1.13 the run
# limit goes under `concurrency: runs:` once `concurrency:` is used: `max_concurrent_runs` in the
# run coordinator's own config next to a `concurrency:` section is refused as a config error.
QUEUED_INSTANCE = NO_TELEMETRY + """\
run_coordinator:
  module: dagster
  class: QueuedRunCoordinator
  config:
    dequeue_interval_seconds: 1
concurrency:
  runs:
    max_concurrent_runs: 2
  pools:
    default_limit: 1
"""


# --- what is compared --------------------------------------------------------------------------


# --- runs as the instance records them ---------------------------------------------------------


def run_problems(instance: dg.DagsterInstance, runs: dict[str, list[dg.DagsterRun]]) -> tuple[list[str], dict]:
    """(problems, loads): each file has exactly one run and it succeeded; loads holds the
    mongo_hospitalizations metadata of every run that got that far, succeeded or not."""
    problems, loads = [], {}
    for name, found in runs.items():
        if len(found) != 1:
            problems.append(f"{name}: {len(found)} runs recorded, expected 1")
            continue
        run = found[0]
        if run.status != dg.DagsterRunStatus.SUCCESS:
            problems.append(f"{name}: run {run.run_id} {run.status.value}: {failure_messages(instance, run.run_id)}")
        load = load_metadata(instance, run.run_id)
        if load is None:
            problems.append(f"{name}: run {run.run_id} recorded no mongo_hospitalizations materialization")
        else:
            loads[name] = load
    return problems, loads


def overlap_problems(instance: dg.DagsterInstance, filters: dict[str, dg.RunsFilter]) -> list[str]:
    """The runs were at the same time: each started before the other ended (by the instance's
    records). A file without exactly one run is run_problems' to report."""
    windows = {}
    for name, runs_filter in filters.items():
        records = instance.get_run_records(filters=runs_filter)
        if len(records) != 1:
            return []
        windows[name] = (records[0].start_time, records[0].end_time)
    if any(start is None or end is None for start, end in windows.values()):
        return [f"a run has no recorded start or end: {windows}"]
    if max(start for start, _ in windows.values()) >= min(end for _, end in windows.values()):
        shown = {name: (round(start, 1), round(end, 1)) for name, (start, end) in windows.items()}
        return [f"the runs did not overlap, one ran after the other: (start, end) epoch seconds {shown}"]
    return []


def row_problems(db: Database, collection: str, preloaded: dict, loads: dict[str, dict],
                 files: dict[str, Path]) -> list[str]:
    """The collection holds the preloaded rows and every cleaned row of each dropped file, each
    once: each run loaded its own file (the SHA-256 in its metadata is its file's, not the other
    run's); every file's hash is on exactly its run's rows_loaded documents; the total is the
    preload plus what the runs inserted; no document comes from anywhere else."""
    hospitalizations, problems = db[collection], []
    before = preloaded["documents_inserted"]
    preload_hash = file_sha256(files["preload"])
    with_preload = hospitalizations.count_documents({"metadata.sources": preload_hash})
    if (preloaded["source_sha256"], with_preload) != (preload_hash, before):
        problems.append(f"preload: {with_preload:,} documents carry its hash, {before:,} were loaded")
    for name in DROPS:
        own_hash = file_sha256(files[name])
        with_hash = hospitalizations.count_documents({"metadata.sources": own_hash})
        load = loads.get(name)
        if load is None:
            problems.append(f"{name}: no load recorded; {with_hash:,} documents carry the file's hash")
            continue
        if (load["source_name"], load["source_sha256"]) != (files[name].name, own_hash):
            problems.append(f"{name}: the run loaded {load['source_name']} ({load['source_sha256'][:12]}), "
                            f"not {files[name].name} ({own_hash[:12]}); {with_hash:,} documents carry its hash")
        elif not with_hash == load["rows_loaded"] > 0:
            problems.append(f"{name}: {with_hash:,} documents carry the file's hash, the run loaded "
                            f"{load['rows_loaded']:,} rows")
    total = hospitalizations.count_documents({})
    inserted = {name: load["documents_inserted"] for name, load in loads.items()}
    if total != before + sum(inserted.values()):
        problems.append(f"{total:,} documents, expected {before:,} preloaded + inserted {inserted}")
    hashes = [preload_hash, *(file_sha256(files[name]) for name in DROPS)]
    known = hospitalizations.count_documents({"metadata.sources": {"$in": hashes}})
    if known != total:
        problems.append(f"{total - known:,} documents come from none of the three files")
    return problems


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def concurrent_exports(tmp_path_factory) -> dict[str, Path]:
    """The preload and the two drops, generated once for the module."""
    folder = tmp_path_factory.mktemp("concurrent-exports")
    files = {"preload": folder / "preload.csv"}
    generate_csv(rows=PRELOAD_ROWS, seed=4000, out=files["preload"])
    for name, (rows, seed) in DROPS.items():
        files[name] = folder / f"{name}.csv"
        generate_csv(rows=rows, seed=seed, out=files[name])
    return files


@pytest.fixture
def preload_metadata(mongo: MongoResource, concurrent_exports) -> dict:
    """The test's database with the preload's whole chain materialized (view and copy included);
    yields the preload's load metadata."""
    result = materialize(concurrent_exports["preload"], mongo)
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    yield materialized(result)["mongo_hospitalizations"]


# --- the tests ---------------------------------------------------------------------------------


def test_two_cli_runs_at_once_lose_nothing_and_leave_copy_equal_to_view(preload_metadata, mongo, concurrent_exports, tmp_path):
    """Two `dagster job execute` processes started together on different files, one Dagster
    instance and one MongoDB server between them, as a UI launch and a sensor run would share."""
    dagster = require_tool("dagster")
    dagster_home = make_dagster_home(tmp_path, NO_TELEMETRY)
    env = child_environment(mongo, dagster_home)
    processes, logs = {}, {}
    for name in DROPS:
        # JSON is YAML: `-c` takes it as run config. The executor is the code location's own.
        config = tmp_path / f"{name}.json"
        config.write_text(json.dumps({"ops": {"raw_csv": {"config": {"source": str(concurrent_exports[name])}}}}))
        logs[name] = tmp_path / f"{name}.log"
    # Both commands are prepared first, then started back to back: two runs at the same moment.
    try:
        for name in DROPS:
            processes[name] = start(
                [dagster, "job", "execute", "-m", MODULE, "-j", JOB, "-c", str(tmp_path / f"{name}.json"),
                 "--tags", json.dumps({TEST_TAG: name})],
                env, logs[name], cwd=tmp_path,
            )
        for name, process in processes.items():
            try:
                process.wait(timeout=RUN_TIMEOUT)
            except subprocess.TimeoutExpired:
                pytest.fail(f"the {name} run did not finish in {RUN_TIMEOUT} s:\n{tail(logs[name])}")
    finally:
        for process in processes.values():
            stop(process)

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        filters = {name: dg.RunsFilter(tags={TEST_TAG: name}) for name in DROPS}
        problems, loads = run_problems(instance, {name: instance.get_runs(filters=f) for name, f in filters.items()})
        problems += overlap_problems(instance, filters)
    problems += [f"{name}: `dagster job execute` exited {p.returncode}" for name, p in processes.items()
                 if p.returncode != 0]
    db = mongo.db()
    problems += row_problems(db, mongo.collection, preload_metadata, loads, concurrent_exports)
    problems += copy_view_problems(db, mongo.collection)
    fail_on(problems)


def test_daemon_launches_two_dropped_files_at_once_and_copy_equals_view(
    preload_metadata, mongo, concurrent_exports, s3_bucket, tmp_path
):
    """The deployment's path: two objects dropped in S3 at once, dagster-daemon's sensor requests
    both runs and its queue (two slots) launches them together."""
    daemon = require_tool("dagster-daemon")
    home = make_dagster_home(tmp_path, QUEUED_INSTANCE)
    with dg.DagsterInstance.from_config(str(home)) as instance:  # the queue is the one meant
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == 2
    keys = {name: f"incoming/{name}.csv" for name in DROPS}

    # Both objects land together, before the daemon's first sensor tick: one tick requests both
    # runs and the queue (two at a time) launches them together.
    s3 = boto3.client("s3")
    with ThreadPoolExecutor(len(keys)) as pool:
        list(pool.map(lambda name: s3.put_object(Bucket=s3_bucket, Key=keys[name],
                                                 Body=concurrent_exports[name].read_bytes()), keys))

    env = child_environment(mongo, home)  # carries HEALTHCARE_S3_BUCKET: the sensor starts running
    log = tmp_path / "daemon.log"
    process = start([daemon, "run", "-m", MODULE], env, log, cwd=tmp_path)
    runs: dict[str, list[dg.DagsterRun]] = {}
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            deadline = time.monotonic() + DAEMON_TIMEOUT
            while True:
                runs = {name: instance.get_runs(filters=dg.RunsFilter(tags={SOURCE_KEY_TAG: key}))
                        for name, key in keys.items()}
                if all(found and all(r.status in FINISHED for r in found) for found in runs.values()):
                    break
                if process.poll() is not None:
                    pytest.fail(f"dagster-daemon exited ({process.returncode}):\n{tail(log)}")
                if time.monotonic() > deadline:
                    states = {n: [r.status.value for r in found] for n, found in runs.items()}
                    pytest.fail(f"runs not finished after {DAEMON_TIMEOUT} s: {states}\n{tail(log)}")
                time.sleep(3)
            problems, loads = run_problems(instance, runs)
            # the queue has two slots: it launches both runs at once, so they overlap
            problems += overlap_problems(instance, {name: dg.RunsFilter(tags={SOURCE_KEY_TAG: key})
                                                    for name, key in keys.items()})
    finally:
        stop(process)

    problems += row_problems(mongo.db(), mongo.collection, preload_metadata, loads, concurrent_exports)
    problems += copy_view_problems(mongo.db(), mongo.collection)
    fail_on(problems)
