"""The chain end to end, on the embedded server: counts, idempotence, gates that stop the load."""

import json
from pathlib import Path

import pandas as pd
import pytest

from healthcare_assets.defs.clean import cleaned_frame
from healthcare_assets.defs.ingest import raw_csv
from healthcare_assets.domain import generalization, privacy
from healthcare_assets.domain.release.publishing import Release
from healthcare_assets.plumbing import settings
from healthcare_assets_tests.fixtures.environment import COMMITTED_CSV
from healthcare_assets_tests.fixtures.published import fail_on, released_group_problems
from healthcare_assets_tests.fixtures.runs import (
    check_results,
    document_digests,
    materialize,
    materialized,
    table_rows,
)

CHAIN = {"raw_csv", "cleaned_frame", "quality_report", "mongo_hospitalizations"}


def expected_counts(path) -> tuple[int, int]:
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    return len(raw), int(raw.duplicated().sum())


@pytest.mark.slow
def test_committed_export_loads_54966_documents(mongo):
    rows, duplicates = expected_counts(COMMITTED_CSV)
    result = materialize(COMMITTED_CSV, mongo)
    assert result.success
    assert all(check_results(result).values()), check_results(result)
    meta = materialized(result)
    assert CHAIN <= set(meta)
    assert meta["raw_csv"]["dagster/row_count"] == rows == 55_500
    assert meta["cleaned_frame"]["duplicates_removed"] == duplicates == 534
    assert meta["cleaned_frame"]["negative_billing_corrected"] == 106
    assert mongo.hospitalizations().count_documents({}) == rows - duplicates == 54_966
    assert meta["mongo_hospitalizations"]["dagster/row_count"] == 54_966  # kept, not counted by the server
    report = Path(meta["cleaned_frame"]["cleaning_report"]).read_text()
    assert '"duplicates_removed": 534' in report
    assert (settings.reports_dir() / "quality" / "index.html").exists()
    assert_release_meets_the_policy(mongo, meta["anonymized_view"])


def assert_release_meets_the_policy(mongo, meta: dict):
    """What analysts can read: k, l and the largest share of a sensitive value on every
    quasi-identifier (measured by pycanon and pandas), at most 5% held back, and no stay in a group
    under k on any row of the uniqueness table."""
    copy = pd.DataFrame(list(Release(mongo.hospitalizations(), b"").copy.find({}, {"_id": 0})))
    assert list(copy.columns) == list(privacy.VIEW_FIELDS)
    k, l_div, share = generalization.independent_measures(copy)
    assert k >= privacy.K_ANONYMITY and l_div >= 2 and share <= privacy.MAX_SHARE
    assert meta["held_back_share"] + meta["withdrawn_share"] <= privacy.MAX_SUPPRESSED
    assert len(copy) == meta["stays_released"] == meta["stays_counted"] - meta["stays_held_back"]
    fail_on(released_group_problems(mongo.hospitalizations(), copy.to_dict("records")))  # 11 patients, not stays
    sizes = copy.groupby(list(privacy.QI_FIELDS)).size()
    after = generalization.uniqueness((dict(zip(privacy.QI_FIELDS, key, strict=True)), n) for key, n in sizes.items())
    assert [row["under_k"] for row in after] == [0.0] * len(generalization.UNIQUENESS_ROWS)
    # as the copy released the committed stays before: exact length of stay singled out most of them
    assert ["+ length_of_stay", "64.5%", "100.0%", "0.0%", "0.0%"] in table_rows(meta["uniqueness"])


def test_second_run_writes_nothing_new(mongo, small_csv):
    rows, duplicates = expected_counts(small_csv)
    first = materialize(small_csv, mongo)
    assert first.success
    before = document_digests(mongo.hospitalizations())
    second = materialize(small_csv, mongo)
    assert second.success
    load = materialized(second)["mongo_hospitalizations"]
    assert load["documents_inserted"] == 0
    assert load["documents_already_present"] == rows - duplicates
    assert len(before) == rows - duplicates
    assert document_digests(mongo.hospitalizations()) == before  # not one document rewritten


def test_documents_follow_the_model(mongo, small_csv):
    assert materialize(small_csv, mongo).success
    doc = mongo.hospitalizations().find_one()
    assert set(doc) == {"_id", "patient_id", "personal_info", "medical_info", "admission_info", "administrative_info", "metadata"}
    assert len(doc["patient_id"]) == 64
    assert isinstance(doc["personal_info"]["age"], int)
    assert isinstance(doc["administrative_info"]["billing_amount"], float)
    assert doc["admission_info"]["date_admission"].year >= 2019  # a BSON date, read back as datetime
    assert doc["admission_info"]["duration_days"] == (doc["admission_info"]["date_discharge"] - doc["admission_info"]["date_admission"]).days
    assert isinstance(doc["medical_info"]["test_results"], list)
    assert doc["metadata"]["source"]["name"] == small_csv.name


def test_value_set_violation_stops_the_chain_before_mongodb(mongo, small_csv, tmp_path):
    # Room numbers outside the client's room plan are valid numbers (cleaning keeps them) but
    # break the quality suite's value set: the load must not run.
    assert materialize(small_csv, mongo).success
    before = mongo.hospitalizations().count_documents({})
    raw = pd.read_csv(small_csv, dtype=str, keep_default_na=False)
    raw.loc[raw.index[:50], "Room Number"] = "777"
    broken = tmp_path / "new_wing.csv"
    raw.to_csv(broken, index=False)

    result = materialize(broken, mongo)
    assert not result.success
    checks = check_results(result)
    assert checks["all_expectations_pass"] is False
    assert "mongo_hospitalizations" not in materialized(result)
    assert mongo.hospitalizations().count_documents({}) == before
    assert mongo.hospitalizations().count_documents({"admission_info.room_number": 777}) == 0


def test_broken_rows_are_quarantined_and_the_rest_loads(mongo, small_csv, tmp_path):
    raw = pd.read_csv(small_csv, dtype=str, keep_default_na=False)
    raw.loc[5, "Age"] = "unknown"
    raw.loc[6, "Discharge Date"] = "2000-01-01"
    path = tmp_path / "two_bad_rows.csv"
    raw.to_csv(path, index=False)
    rows, duplicates = expected_counts(path)

    result = materialize(path, mongo)
    assert result.success, check_results(result)
    meta = materialized(result)["cleaned_frame"]
    assert meta["rows_quarantined"] == 2
    quarantine = pd.read_csv(meta["quarantine_file"], dtype=str)
    assert Path(meta["quarantine_file"]).name.endswith("-two_bad_rows.csv")
    assert quarantine["line_number"].tolist() == ["7", "8"]  # header is line 1
    assert quarantine["reason"].str.startswith(("Age:", "Discharge Date:")).all()
    assert mongo.hospitalizations().count_documents({}) == rows - duplicates - 2


def test_sources_of_one_name_keep_their_own_quarantine_and_report(mongo, small_csv, tmp_path):
    """incoming/a/x.csv and incoming/b/x.csv: the second, clean, must not delete the first's quarantine."""
    raw = pd.read_csv(small_csv, dtype=str, keep_default_na=False)
    raw.loc[5, "Age"] = "unknown"
    first, second = tmp_path / "a" / "x.csv", tmp_path / "b" / "x.csv"
    for path, rows in ((first, raw), (second, raw.iloc[1000:])):
        path.parent.mkdir()
        rows.to_csv(path, index=False)
    for path in (first, second):
        assert materialize(path, mongo, selection=[raw_csv, cleaned_frame]).success
    quarantined = [pd.read_csv(q, dtype=str) for q in settings.quarantine_dir().glob("*.csv")]
    assert [q["line_number"].tolist() for q in quarantined] == [["7"]]
    reports = [json.loads(r.read_text()) for r in settings.reports_dir().rglob("*.json")]
    assert sorted(r["rows_in"] for r in reports) == [len(raw) - 1000, len(raw)]


def test_unknown_header_fails_naming_file_and_columns(mongo, small_csv, tmp_path):
    raw = pd.read_csv(small_csv, dtype=str, keep_default_na=False).rename(columns={"Name": "Patient"})
    path = tmp_path / "renamed.csv"
    raw.to_csv(path, index=False)
    result = materialize(path, mongo)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    message = failure.step_failure_data.error.message + (failure.step_failure_data.user_failure_data.description or "")
    assert "renamed.csv" in message and "missing columns ['Name']" in message
    assert mongo.hospitalizations().count_documents({}) == 0


@pytest.mark.parametrize("share, ceiling, passes", [(0.5, None, False), (0.0, None, True), (0.5, "0.6", True)])
def test_quarantine_ceiling(mongo, small_csv, tmp_path, monkeypatch, share, ceiling, passes):
    if ceiling:  # the deployment's own ceiling, read by the run
        monkeypatch.setenv("HEALTHCARE_QUARANTINE_CEILING", ceiling)
    raw = pd.read_csv(small_csv, dtype=str, keep_default_na=False)
    raw.loc[raw.index[: int(len(raw) * share)], "Gender"] = "X"
    path = tmp_path / "mostly_broken.csv"
    raw.to_csv(path, index=False)
    result = materialize(path, mongo)
    assert check_results(result)["quarantine_within_ceiling"] is passes
    assert ("mongo_hospitalizations" in materialized(result)) is passes
