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
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import boto3
import dagster as dg
import pytest
import yaml
from dagster import DagsterEventType

from healthcare_assets.defs.s3_drops import SOURCE_KEY_TAG
from healthcare_assets.plumbing.embedded_mongo import HOST, free_port
from healthcare_assets.plumbing.mongo import MongoResource
from healthcare_assets.tooling.generate import generate_csv
from healthcare_assets_tests.fixtures.environment import REPO
from healthcare_assets_tests.fixtures.postgres import DEPLOY_INSTANCE, dagster_postgres_environment
from healthcare_assets_tests.fixtures.processes import (
    child_environment,
    require_tool,
    start,
    stop,
    tail,
)
from healthcare_assets_tests.fixtures.published import copy_view_problems, fail_on, file_sha256
from healthcare_assets_tests.fixtures.runs import failure_messages, load_metadata

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1800)]

COMPOSE = REPO / "docker-compose.yml"
DEPLOY_WORKSPACE = REPO / "deploy" / "workspace.yaml"
LOCATION = "healthcare_assets"
JOB = "s3_csv_drop_job"
# file -> (rows, seed): small exports; "second" is the one whose run is killed in its load
FILES = {"first": (500, 7101), "second": (6_000, 7202), "third": (500, 7303)}
# A run still STARTED this long after it started is failed by the monitor: with DefaultRunLauncher
# the only way a run whose process died ends. Long enough for a live run of these files.
RUN_LIMIT = 120
TIMINGS = {
    "run_monitoring": {"poll_interval_seconds": 3, "max_runtime_seconds": RUN_LIMIT,
                       "free_slots_after_run_end_seconds": 5},
    "run_coordinator": {"user_code_failure_retry_delay": 5},
}
READY_TIMEOUT = 180  # a service to answer
RUN_TIMEOUT = 240  # a dropped file's run to finish (the sensor ticks every 30 s)
FIRST_WRITE_TIMEOUT = 60  # after its load step starts, the file's first documents to be in
FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
MONITOR_MESSAGES = ("maximum runtime", "forcibly marked as failed")  # how the monitor fails a run
WORKSPACE_QUERY = """{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename ... on RepositoryLocation { repositories { jobs { name } } } } } } } }"""


# --- the deployment's files, as the test runs them ---------------------------------------------


def instance_config() -> dict:
    """deploy/dagster.yaml with the test's timings, and nothing else, changed: each is a setting
    the file makes (the test never adds a protection the deployment lacks)."""
    config = yaml.safe_load(DEPLOY_INSTANCE.read_text())
    for section, timings in TIMINGS.items():
        settings = config[section]["config"] if section == "run_coordinator" else config[section]
        missing = set(timings) - set(settings)
        assert not missing, f"deploy/dagster.yaml sets no {section} {sorted(missing)}"
        settings.update(timings)
    return config


def with_values(command: list[str], values: dict[str, str]) -> list[str]:
    """A compose command with the values after some flags replaced (the loopback host, free ports,
    the workspace file) and its executable taken from this venv."""
    command = list(command)
    for flag, value in values.items():
        assert flag in command, f"{flag} is not in the compose command {command}"
        command[command.index(flag) + 1] = value
    return [require_tool(command[0]), *command[1:]]


class Topology:
    """The code server, webserver and daemon, each in a process group of its own, as compose runs
    them; each start logs to a file of its own."""

    def __init__(self, folder: Path, pipeline_env: dict[str, str], dagster_env: dict[str, str]):
        self.folder, self.pipeline_env, self.dagster_env = folder, pipeline_env, dagster_env
        self.services = yaml.safe_load(COMPOSE.read_text())["services"]
        self.code_port, self.web_port = free_port(), free_port()
        self.url = f"http://{HOST}:{self.web_port}"
        # deploy/workspace.yaml pointing at this code server instead of the `user-code` service
        workspace = yaml.safe_load(DEPLOY_WORKSPACE.read_text())
        server = workspace["load_from"][0]["grpc_server"]
        server.update(host=HOST, port=self.code_port)
        self.workspace = folder / "workspace.yaml"
        self.workspace.write_text(yaml.safe_dump(workspace))
        self.processes: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}
        self.starts: dict[str, int] = {}

    def command(self, service: str) -> list[str]:
        values = {
            "user-code": {"-h": HOST, "-p": str(self.code_port)},
            "webserver": {"-h": HOST, "-p": str(self.web_port), "-w": str(self.workspace)},
            "daemon": {"-w": str(self.workspace)},
        }[service]
        return with_values(self.services[service]["command"], values)

    def start(self, service: str) -> None:
        self.starts[service] = self.starts.get(service, 0) + 1
        self.logs[service] = self.folder / f"{service}-{self.starts[service]}.log"
        env = self.pipeline_env if service == "user-code" else self.dagster_env
        self.processes[service] = start(self.command(service), env, self.logs[service], cwd=self.folder)

    def alive(self, service: str) -> None:
        process = self.processes[service]
        if process.poll() is not None:
            pytest.fail(f"{service} exited ({process.returncode}):\n{tail(self.logs[service])}", pytrace=False)

    def healthcheck(self, service: str) -> subprocess.CompletedProcess:
        """The service's compose health check command, run here."""
        test = self.services[service]["healthcheck"]["test"]
        assert test[0] == "CMD", test
        values = {"user-code": {"-p": str(self.code_port)}, "daemon": {}}[service]
        return subprocess.run(with_values(test[1:], values), env=self.dagster_env, cwd=self.folder,
                              capture_output=True, text=True, timeout=60, check=False)

    def wait_code_server(self) -> None:
        wait_for(lambda: self.healthcheck("user-code").returncode == 0, READY_TIMEOUT,
                 "the code server's health check", self, "user-code")

    def graphql(self, query: str) -> dict:
        request = urllib.request.Request(f"{self.url}/graphql", data=json.dumps({"query": query}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=20) as response:
            return json.load(response)["data"]

    def loaded_jobs(self) -> set[str] | None:
        """The jobs of the code location as the webserver sees it, once it answers (/server_info,
        compose's health check, then GraphQL) and has the location loaded."""
        try:
            urllib.request.urlopen(f"{self.url}/server_info", timeout=5).read()
            entries = self.graphql(WORKSPACE_QUERY)["workspaceOrError"]["locationEntries"]
        except (urllib.error.URLError, OSError):
            return None
        entry = next((e for e in entries if e["name"] == LOCATION), None)
        if entry is None or entry["loadStatus"] != "LOADED":
            return None
        return {j["name"] for r in entry["locationOrLoadError"]["repositories"] for j in r["jobs"]}

    def recreate_code_server(self) -> None:
        """The code server's container replaced while a run is in it: every process of the
        container ends at once (SIGKILL: what the end of a container's main process, `docker kill`
        or the grace period running out does to the rest), then a new one starts."""
        kill_group(self.processes["user-code"])
        self.start("user-code")

    def kill_daemon(self) -> None:
        kill_group(self.processes["daemon"])

    def stop(self) -> None:
        for process in self.processes.values():
            stop(process)


def kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=30)


def wait_for(condition, timeout: float, what, topology: Topology, *services: str, poll_s: float = 1):
    """Polls `condition` every `poll_s` seconds until it returns something true; fails with the
    services' logs if one of them exits or the time runs out. `what` says what was awaited: text,
    or a function giving it (the state when the time ran out)."""
    deadline = time.monotonic() + timeout
    while True:
        found = condition()
        if found:
            return found
        for service in services:
            topology.alive(service)
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {s}:\n{tail(topology.logs[s], 2500)}" for s in services)
            pytest.fail(f"{what() if callable(what) else what}: not after {timeout} s\n{logs}", pytrace=False)
        time.sleep(poll_s)


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
def exports(tmp_path) -> dict[str, Path]:
    files = {}
    for name, (rows, seed) in FILES.items():
        files[name] = tmp_path / f"{name}.csv"
        generate_csv(rows=rows, seed=seed, out=files[name])
    return files


def test_restarting_code_server_and_daemon_loses_nothing_and_loads_nothing_twice(
    postgres, mongo: MongoResource, s3_bucket, exports, tmp_path, monkeypatch
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
                s3.put_object(Bucket=s3_bucket, Key=keys[name], Body=exports[name].read_bytes())

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
            killed, sha = load_started.run_id, file_sha256(exports["second"])
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
            for name, path in exports.items():
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
    problems += collection_problems(db, mongo.collection, exports, loaded)
    problems += copy_view_problems(db, mongo.collection)
    summary = (f"runs (id, status, seconds): {timeline}; {documents_at_kill:,} of the second file's "
               f"documents were in when its run was killed")
    print(summary)
    fail_on(problems + ([summary] if problems else []))
