"""The scale benchmark's bookkeeping, without a server: step timings as Dagster records them, each
step counted under its asset, and a size's table leaving out what was not measured, and the scale targets."""

import time

import dagster as dg

from healthcare_assets.defs.s3_drops import DROP_SELECTION
from healthcare_assets.tooling.bench import targets
from healthcare_assets.tooling.bench.report import print_sizes
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

    def step(s, peak, server):
        return {"s": s, "peak_rss_mb": peak, "server_peak_rss_mb": server}

    timings = {"cleaned_frame": step(2.0, 300.0, 50.0), "cleaned_frame_rows_add_up": step(0.5, 320.0, 40.0),
               "cleaned_frame_ages_in_range": step(0.25, 310.0, 60.0), "unknown_step": step(9.0, 999.0, 999.0)}
    counted = per_asset(timings, step_owners)
    assert counted["cleaned_frame"] == {"asset_s": 2.0, "checks_s": 0.75, "peak_rss_mb": 320.0, "server_peak_rss_mb": 60.0}
    # selected, did not run: zeros, as a size that stopped early
    assert counted["raw_csv"] == dict.fromkeys(("asset_s", "checks_s", "peak_rss_mb", "server_peak_rss_mb"), 0.0)


def test_a_size_prints_every_figure_it_measured_and_a_dash_for_the_rest(capsys):
    measured = {"size": 5_000, "per_asset": {"cleaned_frame": {"asset_s": 1.0, "checks_s": 0.5, "peak_rss_mb": 200.0,
                                                               "server_peak_rss_mb": 300.0}},
                "pipeline_s": 3.5, "peak_rss_mb": 200.0, "server_peak_rss_mb": 300.0,
                "load": {"insert_s": 0.5, "index_build_s": 0.1, "docs_per_s": 10, "insert_docs_per_s": 20}}
    stopped = {"size": 300, "per_asset": {}}  # stopped before any figure
    print_sizes({5_000: measured, 300: stopped})
    lines = {line[:38].strip(): line[38:].split() for line in capsys.readouterr().out.splitlines() if len(line) > 38}
    assert lines[""] == ["5,000", "300"]
    assert lines["cleaned_frame"] == ["1.0+0.5s", "200/300", "-"]
    assert lines["load s: insert + index builds"] == ["0.5+0.1", "-"]
    assert lines["load docs/s"] == ["10", "-"]
    # not measured: no ceiling (so no load ratios), no backup, no release
    assert lines["bare insert_many docs/s"] == lines["load / bare insert_many"] == lines["backup's peak RSS MB"] == ["-", "-"]
    assert lines["held back (suppressed)"] == ["-", "-"]


def _size(peak_mb: float, **seconds: float) -> dict:
    return {"peak_rss_mb": peak_mb, "per_asset": {name: {"asset_s": s, "checks_s": 1.0} for name, s in seconds.items()}}


def test_scale_targets_judge_memory_first_release_and_each_stage_from_one_size_to_the_next():
    results = {50_000: _size(600, raw_csv=1.0, anonymized_view=9.0),
               200_000: _size(760, raw_csv=3.0, anonymized_view=45.0),
               1_000_000: _size(1_000, raw_csv=16.0, anonymized_view=300.0)}
    verdicts = {t["target"]: (t["measured"], t["met"]) for t in targets.size_targets(results)}
    assert verdicts == {
        "peak RSS of the pipeline process at 1,000,000 rows < 1024 MB": (1_000, True),
        "the first release (anonymized_view) at 1,000,000 rows <= 300 s": (300.0, True),
        "peak RSS of the pipeline process 200,000 / 50,000 rows <= 1.25": (1.27, False),
        "raw_csv: time 200,000 / 50,000 rows <= 4.40": (2.0, True),
        "anonymized_view: time 200,000 / 50,000 rows <= 4.40": (4.6, False),
        "raw_csv: time 1,000,000 / 200,000 rows <= 5.50": (4.25, True),
        "anonymized_view: time 1,000,000 / 200,000 rows <= 5.50": (6.54, False),
    }
