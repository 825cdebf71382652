"""The scale benchmark's bookkeeping, without a server: step timings as Dagster records them, each
step counted under its asset, and the typed rows read back from the JSON a child prints."""

import json
import time

import dagster as dg

from healthcare_assets.defs.s3_drops import DROP_SELECTION
from healthcare_assets.tooling.bench.figures import (
    AssetTiming,
    LoadFigures,
    SizeRun,
    StepFailure,
    StepTiming,
    as_json,
)
from healthcare_assets.tooling.bench.steps import ended_steps, owners, per_asset
from healthcare_assets_tests.fixtures.runs import DEFS


@dg.asset
def slow() -> int:
    time.sleep(0.2)
    return 1


@dg.asset
def broken(slow: int) -> int:
    raise ValueError("fails on purpose")


@dg.asset(output_required=False)
def nothing():
    yield from ()  # no output: what depends on it is skipped


@dg.asset
def never(nothing: int) -> int:
    return nothing


@dg.asset_check(asset=slow)
def slow_is_one(slow: int) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=slow == 1)


def windows_from_the_event_log(instance: dg.DagsterInstance, run_id: str) -> dict[str, tuple[float, float]]:
    """STEP_START to STEP_SUCCESS / STEP_FAILURE of each step, read event by event."""
    starts, windows = {}, {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or not event.step_key:
            continue
        if event.event_type == dg.DagsterEventType.STEP_START:
            starts[event.step_key] = entry.timestamp
        elif event.event_type in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE):
            windows[event.step_key] = (starts[event.step_key], entry.timestamp)
    return windows


def test_step_timings_are_the_event_logs_windows_of_the_steps_that_ran():
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([slow, broken, nothing, never, slow_is_one], instance=instance, raise_on_error=False)
    assert not result.success
    windows = ended_steps(instance.get_run_step_stats(result.run_id))
    assert windows == windows_from_the_event_log(instance, result.run_id)
    # a failed step is timed, a skipped one (it never started) is not
    assert set(windows) == {"slow", "broken", "nothing", "slow_slow_is_one"}
    assert "never" in {step.step_key for step in instance.get_run_step_stats(result.run_id)}
    start, end = windows["slow"]
    assert end - start >= 0.2


def test_each_step_counts_under_its_asset_for_what_a_drop_runs():
    graph = DEFS.resolve_asset_graph()
    step_owners = owners([*DEFS.assets, *DEFS.asset_checks], DROP_SELECTION, graph)
    assert step_owners["mongo_hospitalizations"] == "mongo_hospitalizations"
    assert step_owners["cleaned_frame_rows_add_up"] == "cleaned_frame"
    # neither the benchmark, the backup nor the whole-collection audit: a drop runs none of them
    assert not {"index_benchmarks", "mongo_backup"} & set(step_owners.values())
    assert "analysts_release_audit" not in step_owners

    timings = {"cleaned_frame": StepTiming(2.0, 300.0, 50.0), "cleaned_frame_rows_add_up": StepTiming(0.5, 320.0, 40.0),
               "cleaned_frame_ages_in_range": StepTiming(0.25, 310.0, 60.0), "unknown_step": StepTiming(9.0, 999.0, 999.0)}
    counted = per_asset(timings, step_owners)
    assert counted["cleaned_frame"] == AssetTiming(asset_s=2.0, checks_s=0.75, peak_rss_mb=320.0, server_peak_rss_mb=60.0)
    assert counted["raw_csv"] == AssetTiming()  # selected, did not run: zeros, as a size that stopped early


def test_a_row_reads_back_from_its_json_and_leaves_out_what_was_not_measured():
    row = SizeRun(size=5_000, csv="a.csv", database="bench_5000", success=False, checks={"rows_add_up": False},
                  pipeline_run_s=3.5, failures=[StepFailure("cleaned_frame", "boom")],
                  load=LoadFigures(documents=10, rows_in=10, load_s=1.0, insert_s=0.5, index_build_s=0.1,
                                   docs_per_s=10, insert_docs_per_s=20),
                  steps={"cleaned_frame": StepTiming(1.0, 2.0, 3.0)}, per_asset={"cleaned_frame": AssetTiming(1.0)})
    printed = json.loads(json.dumps(as_json(row)))
    # not measured: no ceiling (so no load ratios), no release, no index benchmarks, no backup
    assert not {"ceiling", "release", "index_benchmarks", "backup", "process_s", "generate_s"} & set(printed)
    assert "ratio_to_bare_insert_many" not in printed["load"]
    assert printed["failures"] == [{"step": "cleaned_frame", "error": "boom"}]
    assert list(printed)[:7] == ["size", "csv", "database", "success", "checks", "pipeline_run_s", "failures"]
    assert SizeRun.from_json(printed) == row
