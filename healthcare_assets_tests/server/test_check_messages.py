"""A blocked run explains itself: the failed check names the figure, the limit, the setting that
changes it and the file to look at, and the run's quality page is written, saying what blocked it,
with no patient's value on it."""

import csv
import html
import re
import stat
from pathlib import Path

import pandas as pd
import pytest

from healthcare_assets.domain import quality_pages
from healthcare_assets.plumbing import settings
from healthcare_assets_tests.fixtures.corpus import utf8
from healthcare_assets_tests.fixtures.runs import materialize, materialized

BAD_ROWS = 34  # of 200: 17%


@pytest.fixture(scope="module")
def rows(small_csv) -> list[list[str]]:
    """200 distinct rows of a generated export."""
    with open(small_csv, newline="") as f:
        header, *body = list(csv.reader(f))
    return [header, *map(list, list(dict.fromkeys(map(tuple, body)))[:200])]


def page_text(path) -> str:
    body = re.sub(r"<style.*?</style>", " ", path.read_text(), flags=re.DOTALL)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", body)).split())


def assert_a_private_offline_page(path) -> None:
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert "<script" not in text and "src=" not in text and "http://" not in text and "https://" not in text


def test_a_file_over_the_quarantine_ceiling_says_by_how_much_and_where_to_look(rows, mongo, tmp_path, monkeypatch):
    monkeypatch.setenv("HEALTHCARE_QUARANTINE_CEILING", "0.05")
    header, *body = rows
    gender = header.index("Gender")
    names = {body[i][header.index("Name")] for i in range(BAD_ROWS)}
    for row in body[:BAD_ROWS]:
        row[gender] = "X"  # not a gender of the export: each such row is quarantined
    path = tmp_path / "ward_export.csv"
    path.write_bytes(utf8([header, *body]))
    result = materialize(path, mongo)
    assert not result.success and "mongo_hospitalizations" not in materialized(result)

    [failed] = [e for e in result.get_asset_check_evaluations() if not e.passed]
    assert failed.check_name == "quarantine_within_ceiling"
    source = materialized(result)["cleaned_frame"]
    q_file = Path(source["quarantine_file"])
    assert q_file.exists() and q_file.parent == settings.quarantine_dir()
    for part in ("17% of rows (34 of 200) were quarantined", "the ceiling is 5%", "HEALTHCARE_QUARANTINE_CEILING",
                 str(q_file)):
        assert part in failed.description, failed.description
    metadata = {k: v.value for k, v in failed.metadata.items()}
    assert {"figure", "limit", "setting", "look_at"} <= metadata.keys()
    assert metadata["setting"] == "HEALTHCARE_QUARANTINE_CEILING" and metadata["look_at"] == q_file.as_uri()
    assert not any(name in failed.description for name in names)

    # the UI's links: the cleaning report is the materialization's URI; every report path is a link too
    assert source["dagster/uri"] == source["cleaning_report_url"] == Path(source["cleaning_report"]).as_uri()
    assert source["quarantine_file_url"] == q_file.as_uri()

    page = quality_pages.report_path(result.run_id)
    assert page.exists(), "a blocked run writes its quality report"
    shown = page_text(page)
    assert "blocked" in shown and "quarantine_within_ceiling" in shown and "17% of rows (34 of 200)" in shown
    assert "rows in 200" in shown and f"quarantined {BAD_ROWS}" in shown and "Gender" in shown
    assert not any(name in page.read_text() or name.title() in page.read_text() for name in names)
    assert_a_private_offline_page(page)
    index = page_text(quality_pages.index_path())
    assert "blocked by quarantine_within_ceiling" in index and "ward_export.csv" in index


def test_a_refused_file_writes_a_page_naming_the_error(rows, mongo, tmp_path):
    header, *body = rows
    frame = pd.DataFrame(body, columns=header).drop(columns="Medication")
    path = tmp_path / "no_medication.csv"
    frame.to_csv(path, index=False)
    result = materialize(path, mongo)
    assert not result.success
    page = quality_pages.report_path(result.run_id)
    assert page.exists(), "a refused file writes the run's quality report"
    shown = page_text(page)
    assert "blocked" in shown and "raw_csv" in shown and "missing columns ['Medication']" in shown
    assert "no_medication.csv" in shown and "not counted" in shown
    assert_a_private_offline_page(page)
    assert "blocked by raw_csv" in page_text(quality_pages.index_path())


def test_a_file_of_mostly_malformed_rows_is_refused_before_cleaning_with_its_page(rows, mongo, tmp_path):
    header, *body = rows
    for row in body[:BAD_ROWS]:
        row.append("an extra field")
    path = tmp_path / "extra_fields.csv"
    path.write_bytes(utf8([header, *body]))
    result = materialize(path, mongo)
    [failed] = [e for e in result.get_asset_check_evaluations() if not e.passed]
    assert failed.check_name == "malformed_rows_within_ceiling" and "cleaned_frame" not in materialized(result)
    page = quality_pages.report_path(result.run_id)
    assert failed.description == ("17% of rows (34 of 200) have the wrong number of fields: the ceiling is 5%; "
                                  f"setting: HEALTHCARE_QUARANTINE_CEILING; look at {page}")
    shown = page_text(page)
    assert "blocked malformed_rows_within_ceiling 17% of rows" in shown.replace("by why ", "")
    assert "rows in 200 cleaned not counted" in shown
