"""`healthcare-assets load` and `summary` as an operator types them: from a folder of their own,
on a file named from there, reading only the terminal's text and the exit code."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import boto3
import dagster as dg
import pytest

from healthcare_assets.plumbing.mongo import MongoResource
from healthcare_assets.tooling.generate import generate_csv
from healthcare_assets_tests.fixtures.processes import child_environment

pytestmark = pytest.mark.slow  # whole processes: the CLI, dagster, servers of their own

CLI = str(Path(sys.executable).parent / "healthcare-assets")
SOURCE_TAG = "healthcare/source"  # the runs list's column: which file a run loaded
TAG_CHARS = 120
STAGES = ("raw_csv", "cleaned_frame", "quality_report", "mongo_hospitalizations", "anonymized_view")


@pytest.fixture
def operator(mongo: MongoResource, tmp_path):
    """The operator's folder (the working directory) and `healthcare-assets ARGS` run there, on the
    test's database, data directory and DAGSTER_HOME (not created beforehand: the command does)."""
    folder = tmp_path / "operator"
    folder.mkdir()
    env = child_environment(mongo, tmp_path / "dagster_home")

    def run(*args: str, **extra: str) -> subprocess.CompletedProcess:
        result = subprocess.run([CLI, *args], cwd=folder, env={**env, **extra}, capture_output=True, text=True,
                                timeout=300, check=False)
        result.output = result.stdout + result.stderr
        return result

    run.folder, run.home = folder, tmp_path / "dagster_home"
    return run


def runs_of(home: Path) -> list[dg.DagsterRun]:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        return instance.get_runs()


def quiet(output: str) -> None:
    assert "DEBUG" not in output, output
    assert "Not executing" not in output, output
    assert "SupersessionWarning" not in output and "BetaWarning" not in output, output


def test_load_runs_every_stage_of_a_drop_and_says_what_it_did(operator, mongo):
    """A file named with '#', spaces and an escape character, long enough to need capping as a tag:
    one progress line per stage, the counts, the stays in the collection, the run in the instance
    with the file's name as its tag (printable, capped)."""
    name = "stays #1 of\x1b[31m week " + "x" * 180 + ".csv"
    generate_csv(rows=300, seed=5, out=operator.folder / name)
    result = operator("load", name)
    assert result.returncode == 0, result.output
    quiet(result.output)
    assert "\x1b" not in result.output
    for stage in STAGES:
        assert [line for line in result.stdout.splitlines() if f" {stage} " in line and "done in" in line], result.stdout
    documents = mongo.hospitalizations().count_documents({})
    assert f"rows in       300 = {documents:,} loaded + 0 quarantined + {300 - documents} duplicates" in result.stdout
    assert "status        SUCCESS" in result.stdout and "index_benchmarks" in result.stdout
    [run] = runs_of(operator.home)
    assert run.status == dg.DagsterRunStatus.SUCCESS and run.job_name == "s3_csv_drop_job"
    tag = run.tags[SOURCE_TAG]
    assert tag.startswith("stays #1 of?[31m week xxx") and tag.endswith(".csv") and len(tag) <= TAG_CHARS
    assert tag.isprintable()


def broken_copy(source: Path, out: Path, broken: int) -> Path:
    """`source` with an impossible age in its first `broken` rows (each one goes to quarantine)."""
    with open(source, newline="") as f:
        rows = list(csv.reader(f))
    for row in rows[1 : broken + 1]:
        row[1] = "-5"
    with open(out, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return out


def test_a_refused_file_says_why_and_summary_shows_that_run(operator, mongo):
    """Over the quarantine ceiling: exit 1, the failed check's name, description and figures, the
    quarantine file; nothing loaded. `summary` then shows that run's status and not the report of
    the run before it."""
    generate_csv(rows=200, seed=8, out=operator.folder / "good.csv")
    good = operator("load", "good.csv")
    assert good.returncode == 0, good.output
    [good_run] = runs_of(operator.home)
    broken_copy(operator.folder / "good.csv", operator.folder / "bad.csv", broken=20)
    mongo.hospitalizations().delete_many({})  # so that anything the refused file loaded would show

    result = operator("load", "bad.csv", HEALTHCARE_QUARANTINE_CEILING="0.01")
    assert result.returncode == 1, result.output
    quiet(result.output)
    [line] = [line for line in result.stdout.splitlines() if line.startswith("failed check  quarantine_within_ceiling")]
    assert len(line.split(":", 1)[1].strip()) > 10, result.stdout  # its description
    assert "the ceiling is 1%" in line and "HEALTHCARE_QUARANTINE_CEILING" in line  # the limit and its setting
    assert "10% of rows (20 of 200)" in line  # the figure
    [quarantine] = [line.split(maxsplit=1)[1] for line in result.stdout.splitlines() if line.startswith("quarantine ")]
    assert Path(quarantine).is_file()
    assert mongo.hospitalizations().count_documents({}) == 0

    summary = operator("summary")
    assert summary.returncode == 0, summary.output
    bad_run = runs_of(operator.home)[0]
    assert f"last run      {bad_run.run_id} of s3_csv_drop_job: FAILURE" in summary.stdout
    assert "source        bad.csv" in summary.stdout
    assert good_run.run_id not in summary.stdout and "good" not in summary.stdout, summary.stdout


def test_a_file_that_cannot_be_read_says_so_once(operator):
    """A missing file: usage error before any run (exit 2). A file missing a column: the run fails
    on it (exit 1), its message said once, without the steps it stopped."""
    missing = operator("load", "no such export.csv")
    assert missing.returncode == 2, missing.output
    assert missing.output.count("no such file") == 1, missing.output
    assert not operator.home.exists() or not runs_of(operator.home)

    generate_csv(rows=50, seed=3, out=operator.folder / "full.csv")
    with open(operator.folder / "full.csv", newline="") as f:
        rows = list(csv.reader(f))
    with open(operator.folder / "no name.csv", "w", newline="") as f:
        csv.writer(f).writerows(row[1:] for row in rows)  # without the Name column
    result = operator("load", "no name.csv")
    assert result.returncode == 1, result.output
    quiet(result.output)
    assert result.output.count("missing columns ['Name']") == 1, result.output
    assert "failed step   raw_csv:" in result.stdout


@pytest.mark.parametrize(("argument", "said"), [("", "no file given"), ("   ", "no file given"),
                                                 ("..", "a folder"), ("s3://bucket-only", "expected s3://bucket/key")])
def test_paths_that_name_no_file_are_refused_before_a_run(operator, argument, said):
    result = operator("load", argument)
    assert result.returncode == 2, result.output
    assert result.stderr.count(said) == 1, result.output
    assert not operator.home.exists() or not runs_of(operator.home)


def test_load_reads_an_s3_object_by_its_key_verbatim(s3_bucket, operator, mongo, tmp_path):
    """s3://bucket/key: the key taken as it is ('#', '?', spaces), read as a dropped file is read."""
    key = "incoming/ward 3 #1?.csv"
    generate_csv(rows=100, seed=9, out=tmp_path / "upload.csv")
    boto3.client("s3").put_object(Bucket=s3_bucket, Key=key, Body=(tmp_path / "upload.csv").read_bytes())
    result = operator("load", f"s3://{s3_bucket}/{key}")
    assert result.returncode == 0, result.output
    quiet(result.output)
    assert mongo.hospitalizations().count_documents({}) > 0
    [run] = runs_of(operator.home)
    assert run.tags[SOURCE_TAG] == "ward 3 #1?.csv"


def test_run_is_the_chain_and_names_what_it_leaves_to_schedules(operator):
    """`make run`'s command: the configured source through the six assets of the chain, the
    benchmark kept short, and nothing else (no backup or audit); the terminal says where those run."""
    generate_csv(rows=200, seed=11, out=operator.folder / "configured.csv")
    result = operator("run", HEALTHCARE_SOURCE_CSV=str(operator.folder / "configured.csv"))
    assert result.returncode == 0, result.output
    quiet(result.output)
    chain = (*STAGES, "index_benchmarks")
    done = [line for line in result.stdout.splitlines() if "done in" in line]
    assert len(done) >= len(chain), result.stdout
    assert all(any(f" {step} " in line for step in (*chain, "loaded_file_checks")) for line in done), done
    [not_run] = [line for line in result.stdout.splitlines() if line.startswith("not run here")]
    assert "backups" in not_run and "audit" in not_run and "make bench" in not_run, not_run
    [benchmarks] = [line for line in result.stdout.splitlines() if line.startswith("benchmarks ")]
    assert Path(benchmarks.rsplit(" ", 1)[1]).is_file(), benchmarks
    [run] = runs_of(operator.home)
    assert run.job_name == "chain_job" and run.tags[SOURCE_TAG] == "configured.csv"
    with dg.DagsterInstance.from_config(str(operator.home)) as instance:
        records = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
        materialized = {r.event_log_entry.dagster_event.asset_key.to_user_string() for r in records}
        benchmark_config = instance.get_run_by_id(run.run_id).run_config["ops"]["index_benchmarks"]["config"]
    assert materialized == set(chain), materialized
    assert benchmark_config["scan_repeats"] == 1 and benchmark_config["max_held_documents"] < 55_500  # short
