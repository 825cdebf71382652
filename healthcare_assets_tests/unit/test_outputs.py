"""Each run reads its own steps' outputs, however many runs overlap."""

import dagster as dg
import pytest

from healthcare_assets.plumbing.outputs import RunScopedOutputs

KEY = dg.AssetKey("cleaned_frame")


def write(manager, run_id: str, value) -> None:
    manager.handle_output(dg.build_output_context(asset_key=KEY, run_id=run_id), value)


def read(manager, run_id: str | None):
    upstream = dg.build_output_context(asset_key=KEY, run_id=run_id)
    return manager.load_input(dg.build_input_context(asset_key=KEY, upstream_output=upstream))


def test_two_runs_at_once_read_their_own_outputs(data_dir):
    manager = RunScopedOutputs()
    write(manager, "run-a", {"file": "north.csv"})
    write(manager, "run-b", {"file": "south.csv"})  # written after: Dagster's default would now serve it to run-a
    assert read(manager, "run-a") == {"file": "north.csv"}
    assert read(manager, "run-b") == {"file": "south.csv"}
    assert read(manager, None) == {"file": "south.csv"}  # a run that did not produce it: the newest


def test_a_runs_missing_output_is_never_replaced_by_another_runs(data_dir):
    manager = RunScopedOutputs()
    write(manager, "run-b", {"file": "south.csv"})
    with pytest.raises(dg.Failure, match="gone"):
        read(manager, "run-a")
