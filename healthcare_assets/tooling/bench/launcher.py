"""Whole processes started as a user or the sensor starts them: `dagster` on a DAGSTER_HOME of the
scale benchmark's own, and the client's script, on the bench's embedded server."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
from pymongo.database import Database

from healthcare_assets.domain import local_server
from healthcare_assets.domain.access import databases
from healthcare_assets.plumbing.mongo import connect
from healthcare_assets.tooling.bench.exports import REPO
from healthcare_assets.tooling.bench.steps import ended_steps

CLIENT_APPROACH = REPO.parent / "shared" / "bench" / "client_approach.py"
DAGSTER = str(Path(sys.executable).parent / "dagster")  # the venv's CLI, next to this interpreter
DEFINITIONS = "healthcare_assets.definitions"
PROCESS_TIMEOUT_S = 3600
DROP_TAG = "healthcare_bench/drop"  # finds a drop's run in the bench's DAGSTER_HOME


@dataclass
class Processes:
    """Starts whole processes as a user does: `dagster` on a DAGSTER_HOME of the bench's own
    (SQLite, no telemetry) and the client's script, all on the bench's embedded server. They run
    in the temporary directory (no .env there for Dagster to pick up), output to a log each."""

    work: Path
    env: dict[str, str]
    home: Path

    @classmethod
    def prepare(cls, work: Path, env: dict[str, str]) -> Processes:
        home = work / "dagster_home"
        home.mkdir(exist_ok=True)
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        # The storage is created now: two runs that both find it missing race to create it.
        with dg.DagsterInstance.from_config(str(home)) as instance:
            instance.get_runs(limit=1)
            instance.event_log_storage.get_pool_limits()
        own = {k: v for k, v in env.items() if not k.startswith("DAGSTER_")}  # no other module, workspace
        return cls(work, {**own, "DAGSTER_HOME": str(home)}, home)

    def run(self, command: list[str], log: str, **env: str) -> tuple[float, bool]:
        """Wall seconds from start to exit, and whether it exited 0; its output is in `log`.log."""
        started = time.perf_counter()
        with open(self.work / f"{log}.log", "w") as out:
            try:
                code = subprocess.run(command, env={**self.env, **env}, cwd=self.work, stdout=out,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      timeout=PROCESS_TIMEOUT_S, check=False).returncode
            except subprocess.TimeoutExpired:
                code = None
        return round(time.perf_counter() - started, 2), code == 0

    def db(self, name: str) -> Database:
        return connect(local_server.client_uri(self.work))[name]

    def drop_databases(self, name: str) -> None:
        """A database and its companions (analytics, doctor app, audit)."""
        for database in databases(name).values():
            self.db(database).client.drop_database(database)

    def drop_record(self, drop: str) -> tuple[dict[str, float], dict]:
        """The seconds of each step of the drop's run and its load's materialization metadata, from
        Dagster's step statistics of the run."""
        with dg.DagsterInstance.from_config(str(self.home)) as instance:
            runs = instance.get_runs(filters=dg.RunsFilter(tags={DROP_TAG: drop}), limit=1)
            if not runs:
                return {}, {}
            stats = instance.get_run_step_stats(runs[0].run_id)
        load = next((e.asset_materialization.metadata for step in stats for e in step.materialization_events
                     if e.asset_materialization.asset_key == dg.AssetKey("mongo_hospitalizations")), {})
        return ({key: round(end - start, 2) for key, (start, end) in ended_steps(stats).items()},
                {k: v.value for k, v in load.items()})
