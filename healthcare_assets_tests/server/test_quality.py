"""The Great Expectations suites evaluate something and can fail: one defect per suite that only
that suite catches, the counts of evaluated expectations, and Data Docs that show each suite and
the failure. quality_report runs on a cleaned frame staged by the real chain, then altered."""

import dataclasses
import re
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from healthcare_assets.defs.clean import cleaned_frame
from healthcare_assets.defs.ingest import raw_csv
from healthcare_assets.defs.quality import all_expectations_pass, quality_report
from healthcare_assets.defs.resources import mongo_resource_from_env, pipeline_settings
from healthcare_assets.plumbing import settings
from healthcare_assets.tooling.generate import generate_csv
from healthcare_assets_tests.fixtures.runs import materialize

SUITES = ("counts", "types", "values")
# counts: rows, columns, unique record keys; types: the column order, then a type and a not-null
# per column (19); values: 7 value sets, the room plan, 3 ranges, discharge after admission, 2 id
# formats, a name
EVALUATED = {"counts": 3, "types": 1 + 2 * 19, "values": 15}


def duplicate_record_key(frame: pd.DataFrame) -> None:
    frame.loc[1, "record_key"] = frame.loc[0, "record_key"]  # still 32 hex digits, still a string


def age_as_float(frame: pd.DataFrame) -> None:
    frame["age"] = frame["age"].astype("float64")  # the same ages, within range


def room_outside_the_plan(frame: pd.DataFrame) -> None:
    frame.loc[0, "room_number"] = 777  # an int64 like every other room number


# suite -> (defect, the expectation it breaks, how Data Docs words that expectation)
DEFECTS = {
    "counts": (duplicate_record_key, "expect_column_values_to_be_unique", "values must be unique"),
    "types": (age_as_float, "expect_column_values_to_be_of_type", "values must be of type int64"),
    "values": (room_outside_the_plan, "expect_column_values_to_be_in_set", "values must belong to this set"),
}


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    """The cleaned frame of a small export, staged by raw_csv and cleaned_frame."""
    folder = tmp_path_factory.mktemp("quality")
    patch = pytest.MonkeyPatch()
    patch.setenv("HEALTHCARE_DATA_DIR", str(folder / "data"))
    try:
        source = generate_csv(rows=300, seed=8, out=folder / "export.csv")["path"]
        result = materialize(source, mongo_resource_from_env(), selection=[raw_csv, cleaned_frame])
        assert result.success
        yield result.output_for_node("cleaned_frame")
    finally:
        patch.undo()


def run_quality(staged, data_dir: Path, defect=None) -> tuple[dict, dict]:
    """quality_report on the staged rows after `defect`: its summary and its metadata."""
    frame = pd.concat(list(staged.chunks()), ignore_index=True)
    if defect:
        defect(frame)
    path = data_dir / "altered.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)
    altered = dataclasses.replace(staged, path=str(path), rows=len(frame), chunk_rows=(len(frame),))
    output = quality_report(dg.build_asset_context(), cleaned_frame=altered, settings=pipeline_settings())
    return output.value, {k: getattr(v, "value", v) for k, v in output.metadata.items()}


def text_of(page: Path) -> str:
    html = re.sub(r"<(script|style).*?</\1>", " ", page.read_text(), flags=re.DOTALL)
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def index_statuses(index: Path) -> dict[str, str]:
    """Suite -> status, from the rows of the index's validation results table (filled by its script)."""
    rows = re.findall(r"'_expectation_suite_name_sort': '([^']+)', '_table_row_link_path': 'validations/[^']+', "
                      r"'_validation_success_text': '(\w+)'", index.read_text())
    return dict(rows)


def test_a_clean_frame_evaluates_every_expectation_of_every_suite(staged, data_dir):
    summary, metadata = run_quality(staged, data_dir)
    assert summary["statistics"] == {**{f"{s}_evaluated": EVALUATED[s] for s in SUITES},
                                     **{f"{s}_failed": 0 for s in SUITES}}
    assert metadata["expectations_evaluated"] == sum(EVALUATED.values()) and metadata["expectations_failed"] == 0
    assert all_expectations_pass(summary).passed


@pytest.mark.parametrize("suite", SUITES)
def test_a_defect_only_one_suite_catches_fails_that_suite(staged, data_dir, suite):
    defect, broken, worded = DEFECTS[suite]
    summary, metadata = run_quality(staged, data_dir, defect)
    stats = summary["statistics"]
    assert {s: stats[f"{s}_failed"] for s in SUITES} == {s: int(s == suite) for s in SUITES}
    assert [(f["suite"], f["expectation"]) for f in summary["failures"]] == [(suite, broken)]
    assert {s: stats[f"{s}_evaluated"] for s in SUITES} == EVALUATED
    assert metadata["expectations_evaluated"] == sum(EVALUATED.values())
    assert metadata["expectations_failed"] == 1 and not all_expectations_pass(summary).passed

    # Data Docs: the index lists every suite with its status; each suite's page says whether it failed, and how
    docs = settings.reports_dir() / "quality"
    assert index_statuses(docs / "index.html") == {f"hospitalizations.{s}": "Failed" if s == suite else "Success"
                                                    for s in SUITES}
    for name in SUITES:
        [page] = (docs / "validations" / "hospitalizations" / name).rglob("*.html")
        shown = text_of(page)
        assert f"Expectation Suite: hospitalizations.{name}" in shown
        assert f"Unsuccessful Expectations {int(name == suite)}" in shown
        assert ("Status: Failed" in shown) is (name == suite)
    assert worded in text_of(next((docs / "validations" / "hospitalizations" / suite).rglob("*.html")))
