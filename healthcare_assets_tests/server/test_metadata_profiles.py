"""What the UI shows of a file: column profiles, never a row, never a value outside the value sets."""

import csv
import re

from healthcare_assets_tests.fixtures.runs import DEFS, materialize, materialized

IDENTIFYING = ("Name", "Doctor", "Hospital", "Date of Admission", "Discharge Date", "Billing Amount")


def test_profiles_show_no_patient_and_no_hostile_cell(mongo, small_csv, tmp_path):
    with open(small_csv, newline="") as f:
        header, *rows = list(csv.reader(f))
    hostile = "Bobby Jackson | <img src=x>"
    rows[0][header.index("Gender")] = hostile  # a name typed into a closed value set
    export = tmp_path / "export.csv"
    with open(export, "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows([header, *rows])
    result = materialize(export, mongo, selection=[a for a in DEFS.assets if a.key.path[0] in ("raw_csv", "cleaned_frame")])
    assert result.success
    meta = materialized(result)
    raw, cleaned = meta["raw_csv"]["profile"], meta["cleaned_frame"]["profile"]
    shown = raw + cleaned
    assert "Bobby Jackson" not in shown and "<img" not in shown
    assert re.search(r"\| Gender +\| +[\d,]+ \| .*other \(1\)", raw)  # counted, not shown
    assert [v for row in rows for c in IDENTIFYING if (v := row[header.index(c)]) in shown] == []
    assert re.search(r"\| medical_condition +\| +[\d,]+ \| (\w+ \([\d,]+\)(, )?){6} +\|", cleaned)  # counts do show
