"""The runs list's `healthcare/source` column: raw_csv tags its own run with the file it reads,
whatever launched it (the sensor, the UI, `dagster asset materialize`), made printable and short."""

from __future__ import annotations

import dagster as dg

from healthcare_assets.defs.ingest import SOURCE_TAG, TAG_CHARS, raw_csv
from healthcare_assets.tooling.generate import generate_csv
from healthcare_assets_tests.fixtures.runs import materialize


def test_raw_csv_tags_its_run_with_the_file_name(data_dir, tmp_path):
    name = "drop\x07 #2\nof week " + "y" * 200 + ".csv"
    path = tmp_path / name
    generate_csv(rows=20, seed=2, out=path)
    with dg.DagsterInstance.ephemeral() as instance:
        result = materialize(path, None, [raw_csv], instance=instance)
        assert result.success
        tag = instance.get_run_by_id(result.run_id).tags[SOURCE_TAG]
    assert tag.isprintable() and len(tag) <= TAG_CHARS
    assert tag.startswith("drop? #2?of week yyy") and tag.endswith("yyy.csv")
