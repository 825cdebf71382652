"""Outputs per run: Dagster's IO manager keeps one per asset, read by concurrent runs (docs/operations.md)."""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path

import dagster as dg
from dagster._core.execution.context.output import RUN_ID_PLACEHOLDER

from healthcare_assets.plumbing import settings


def _write(path: Path, obj) -> None:
    settings.private_dir(path.parent)
    with tempfile.NamedTemporaryFile("wb", dir=path.parent, delete=False) as tmp:  # created 0600
        pickle.dump(obj, tmp)
    os.replace(tmp.name, path)  # a reader never sees half a file


class RunScopedOutputs(dg.ConfigurableIOManager):
    """Pickled outputs in <data dir>/staging/<run_id>/outputs/, the newest of each in <data dir>/outputs/."""

    def _run_path(self, run_id: str, key: dg.AssetKey) -> Path:
        return settings.staging_dir() / run_id / "outputs" / f"{'/'.join(key.path)}.pickle"

    def _newest_path(self, key: dg.AssetKey) -> Path:
        return settings.data_dir() / "outputs" / f"{'/'.join(key.path)}.pickle"

    def handle_output(self, context: dg.OutputContext, obj) -> None:
        _write(self._run_path(context.run_id, context.asset_key), obj)
        _write(self._newest_path(context.asset_key), obj)

    def load_input(self, context: dg.InputContext):
        key = context.asset_key
        try:
            run_id = context.upstream_output.run_id
        except dg.DagsterInvariantViolationError:
            run_id = None
        # Dagster names an upstream asset that no run of this lineage produced with a placeholder
        produced = run_id and run_id != RUN_ID_PLACEHOLDER
        path = self._run_path(run_id, key) if produced else self._newest_path(key)
        if not path.exists():  # never another run's output in its place
            raise dg.Failure(f"the output of {key.to_user_string()} for this run is gone ({path}); "
                             "materialize it again", allow_retries=False)
        with open(path, "rb") as f:
            return pickle.load(f)
