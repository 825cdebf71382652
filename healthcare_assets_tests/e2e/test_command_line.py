"""The commands the README and docs/operations.md give, typed as a user types them: in a plain shell,
from the repo root, with nothing on the command line but what they show."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest

from healthcare_assets.plumbing.mongo import connect
from healthcare_assets_tests.fixtures.environment import REPO
from healthcare_assets_tests.fixtures.processes import DevServer, tail
from healthcare_assets_tests.fixtures.runs import DEFS
from healthcare_assets_tests.fixtures.servers import drop_deployment

pytestmark = pytest.mark.slow  # whole processes: the CLI, dagster, servers of their own

ACTIVATE = Path(sys.executable).parent / "activate"  # the venv `make install` made


def shell(command: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """`command` in a new bash, after sourcing the venv's activate script as docs/operations.md says."""
    return subprocess.run(["bash", "-c", f'. "{ACTIVATE}" && {command}'], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900, check=False)


def test_dagster_asset_materialize_needs_no_flag_in_the_activated_venv(mongo_uri, small_csv, tmp_path):
    """`dagster asset materialize --select '*'` from the repo root: the activated venv names the code
    location for this one command (Dagster 1.13 reads neither pyproject.toml nor workspace.yaml for
    it), and every asset of the code location is materialized from the given file."""
    database = f"test_{uuid.uuid4().hex[:10]}"
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_") and k != "VIRTUAL_ENV"}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p != str(ACTIVATE.parent))
    env.update(DAGSTER_HOME=str(home), HEALTHCARE_DATA_DIR=str(tmp_path / "data"),
               HEALTHCARE_SOURCE_CSV=str(small_csv), MONGODB_DATABASE=database)
    try:
        result = shell("dagster asset materialize --select '*'", env)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output[-4000:]
        with dg.DagsterInstance.from_config(str(home)) as instance:
            runs = instance.get_runs()
            assert [run.status for run in runs] == [dg.DagsterRunStatus.SUCCESS]
            every_asset = DEFS.resolve_asset_graph().get_all_asset_keys()
            missing = {key.to_user_string() for key in every_asset if not instance.get_latest_materialization_event(key)}
            assert not missing, output[-4000:]
            loaded = instance.get_latest_materialization_event(dg.AssetKey("mongo_hospitalizations"))
        documents = connect(mongo_uri)[database]["hospitalizations"].count_documents({})
        assert documents > 0
        assert loaded.asset_materialization.metadata["dagster/row_count"].value == documents
    finally:
        drop_deployment(connect(mongo_uri), database)


def test_without_the_activated_venv_the_command_says_what_is_missing(tmp_path):
    """The same command outside the venv's environment fails: the test above passes because of the
    activate script, not because of something left around."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_")}
    env["DAGSTER_HOME"] = str(tmp_path)
    result = subprocess.run([str(ACTIVATE.parent / "dagster"), "asset", "materialize", "--select", "raw_csv"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode != 0
    assert "Invalid set of CLI arguments" in result.stderr


def test_the_ui_starts_in_the_same_activated_venv(tmp_path):
    """What the activate script exports reaches `dagster asset materialize` only: `dg dev` in the
    same shell loads the code location (it refuses a variable that every command reads)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_")}
    env.update(DAGSTER_HOME=str(tmp_path), HEALTHCARE_DATA_DIR=str(tmp_path / "data"))
    ui = DevServer(["bash", "-c", f'. "{ACTIVATE}" && exec dg dev "$@"', "dg-dev"], env, tmp_path / "dg-dev.log")
    try:
        ui.wait_ready()
        entries = ui.graphql(LOCATIONS)["workspaceOrError"]["locationEntries"]
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        while entries[0]["loadStatus"] == "LOADING":
            assert time.monotonic() < deadline, \
                f"the code location still LOADING after {LOAD_TIMEOUT_S} s:\n{tail(ui.log)}"
            time.sleep(1)
            entries = ui.graphql(LOCATIONS)["workspaceOrError"]["locationEntries"]
        assert [(e["name"], e["loadStatus"], e["locationOrLoadError"]["__typename"]) for e in entries] == [
            ("healthcare_assets", "LOADED", "RepositoryLocation")], tail(ui.log)
    finally:
        ui.stop()


LOAD_TIMEOUT_S = 180  # the code location to load once the UI answers
LOCATIONS = ("{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus "
             "locationOrLoadError { __typename } } } } }")
