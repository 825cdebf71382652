"""Every corpus case gets its expected outcome; every load adds up, checked against the database."""

import csv

import pandas as pd
import pytest

from healthcare_assets.resources import settings
from healthcare_assets_tests.conftest import check_results, materialize, materialized
from healthcare_assets_tests.corpus import CASES, Case


@pytest.fixture(scope="module")
def clean_rows(small_csv) -> list[list[str]]:
    """200 distinct rows of a generated export: the base every case is made from."""
    with open(small_csv, newline="") as f:
        header, *rows = list(csv.reader(f))
    distinct = list(dict.fromkeys(map(tuple, rows)))
    return [header, *map(list, distinct[:200])]


def failure_messages(result) -> str:
    texts = []
    for event in result.all_events:
        if event.is_step_failure:
            data = event.step_failure_data
            texts.append(data.error.message if data.error else "")
            texts.append(data.user_failure_data.description if data.user_failure_data else "")
    return "\n".join(t for t in texts if t)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_corpus_case(case: Case, clean_rows, mongo, tmp_path):
    path = tmp_path / f"{case.name}.csv"
    path.write_bytes(case.make(clean_rows))
    result = materialize(path, mongo)
    collection = mongo.hospitalizations()

    if not case.loads:
        assert not result.success
        if case.stage == "raw_csv":
            message = failure_messages(result)
            assert path.name in message and case.message in message, message
            assert "Traceback" not in message
        else:
            assert check_results(result)[case.stage] is False
        assert "mongo_hospitalizations" not in materialized(result)
        assert collection.count_documents({}) == 0
        return

    assert result.success, (check_results(result), failure_messages(result))
    clean = materialized(result)["cleaned_frame"]
    load = materialized(result)["mongo_hospitalizations"]
    documents = collection.count_documents({"metadata.sources": load["source_sha256"]})
    assert clean["rows_in"] == documents + clean["rows_quarantined"] + clean["duplicates_removed"]
    assert clean["rows_quarantined"] == case.quarantined
    assert clean["duplicates_removed"] == case.extra.get("duplicates", 0)
    q_file = settings.quarantine_dir() / path.name
    if case.quarantined:
        quarantine = pd.read_csv(q_file, dtype=str, keep_default_na=False)
        assert len(quarantine) == case.quarantined
        assert quarantine["reason"].str.startswith(case.reasons).all(), quarantine["reason"].tolist()
        if "quarantine_line" in case.extra:
            assert quarantine["line_number"].astype(int).tolist() == [case.extra["quarantine_line"]]
    else:
        assert not q_file.exists()
