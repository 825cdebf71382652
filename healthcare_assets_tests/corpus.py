"""The bad-input corpus: each case is made by code from a clean export, with its expected outcome.

A case either loads (`quarantined` rows with reasons starting `reason`, the rest in MongoDB), or
fails at `stage` with a message containing `message` (always with the file's name).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass, field

from healthcare_assets.schema import CSV_COLUMNS

HEADER = list(CSV_COLUMNS.values())


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[list[list[str]]], bytes]  # clean rows (header first) -> file bytes
    loads: bool
    quarantined: int = 0
    reasons: tuple[str, ...] = ()  # each quarantined row's reason starts with one of these
    message: str = ""  # for failures
    stage: str = "raw_csv"  # where a failure is reported (a step or a check)
    extra: dict = field(default_factory=dict)


def to_csv(rows: list[list[str]], line_end: str = "\n", delimiter: str = ",") -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator=line_end, delimiter=delimiter).writerows(rows)
    return out.getvalue()


def utf8(rows, **kw) -> bytes:
    return to_csv(rows, **kw).encode()


def set_value(row_index: int, column: str, value: str):
    def make(rows):
        rows = [list(r) for r in rows]
        rows[row_index][HEADER.index(column)] = value
        return utf8(rows)
    return make


def drop_column(column: str):
    def make(rows):
        i = HEADER.index(column)
        return utf8([r[:i] + r[i + 1:] for r in rows])
    return make


def rename_column(old: str, new: str):
    def make(rows):
        return utf8([[new if c == old else c for c in rows[0]], *rows[1:]])
    return make


def reorder(rows):
    order = list(reversed(range(len(HEADER))))
    return utf8([[r[i] for i in order] for r in rows])


def add_column(rows):
    return utf8([rows[0] + ["Ward"], *[r + ["W1"] for r in rows[1:]]])


def duplicate_header_column(rows):
    return utf8([rows[0][:-1] + ["Name"], *rows[1:]])


def extra_field(rows):
    rows = [list(r) for r in rows]
    rows[3] = rows[3] + ["surprise"]
    return utf8(rows)


def missing_field(rows):
    rows = [list(r) for r in rows]
    rows[4] = rows[4][:-2]
    return utf8(rows)


def truncated_last_line(rows):
    text = to_csv(rows)
    return text[: len(text) - 40].encode()  # cut inside the last row, no final newline


def unterminated_quote(rows):
    text = to_csv(rows[:-1])
    last = rows[-1]
    return (text + ",".join(last[:7]) + ',"Sons and Mil').encode()  # the export stopped mid-field


def embedded_newline(rows):
    rows = [list(r) for r in rows]
    rows[2][HEADER.index("Hospital")] = "Burke, Griffin\nand Cooper"
    rows[5][HEADER.index("Age")] = "abc"  # its physical line is one further down
    return utf8(rows)


def blank_lines(rows):
    text = to_csv(rows[:10]) + "\n\n" + to_csv(rows[10:]) + "\n"
    return text.encode()


def padded_and_cased(rows):
    rows = [list(r) for r in rows]
    for r in rows[1:6]:
        r[HEADER.index("Gender")] = "  " + r[HEADER.index("Gender")].upper() + " "
        r[HEADER.index("Medication")] = r[HEADER.index("Medication")].lower()
    return utf8(rows)


def padded_header(rows):
    return utf8([[f" {c} " for c in rows[0]], *rows[1:]])


def exact_duplicates(rows):
    return utf8([*rows, rows[1], rows[2], rows[2]])


def mostly_broken(rows):
    rows = [list(r) for r in rows]
    for r in rows[1: len(rows) // 5]:
        r[HEADER.index("Medical Condition")] = "Flu"
    return utf8(rows)


def latin1(rows):
    rows = [list(r) for r in rows]
    rows[7][0] = "José Núñez"
    return to_csv(rows).encode("latin-1")


def binary_png(rows):
    return b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4


CASES = [
    Case("clean", lambda rows: utf8(rows), loads=True),
    Case("utf8_bom", lambda rows: b"\xef\xbb\xbf" + utf8(rows), loads=True),
    Case("crlf_line_ends", lambda rows: utf8(rows, line_end="\r\n"), loads=True),
    Case("embedded_comma_and_newline", embedded_newline, loads=True, quarantined=1, reasons=("Age:",),
         extra={"quarantine_line": 7}),  # rows 1-4 on lines 2-6: row 2 spans two
    Case("truncated_last_line", truncated_last_line, loads=True, quarantined=1, reasons=("row: wrong number of fields",)),
    Case("blank_lines", blank_lines, loads=True),
    Case("columns_reordered", reorder, loads=True),
    Case("older_export_without_test_results", drop_column("Test Results"), loads=True),
    Case("padded_values_and_mixed_case_categories", padded_and_cased, loads=True),
    Case("padded_header", padded_header, loads=True),
    Case("exact_duplicate_rows", exact_duplicates, loads=True, extra={"duplicates": 3}),
    Case("non_numeric_age", set_value(3, "Age", "forty"), loads=True, quarantined=1, reasons=("Age: not a whole number",)),
    Case("unparseable_date", set_value(3, "Date of Admission", "2021-13-45"), loads=True, quarantined=1,
         reasons=("Date of Admission: not a date",)),
    Case("discharge_before_admission", set_value(3, "Discharge Date", "2010-01-01"), loads=True, quarantined=1,
         reasons=("Discharge Date: before Date of Admission",)),
    Case("unknown_category", set_value(3, "Blood Type", "C+"), loads=True, quarantined=1, reasons=("Blood Type: not one of",)),
    Case("missing_required_value", set_value(3, "Doctor", ""), loads=True, quarantined=1,
         reasons=("Doctor: required value is missing",)),
    Case("row_with_extra_field", extra_field, loads=True, quarantined=1, reasons=("row: wrong number of fields",)),
    Case("row_with_missing_fields", missing_field, loads=True, quarantined=1, reasons=("row: wrong number of fields",)),
    Case("negative_age", set_value(3, "Age", "-4"), loads=True, quarantined=1, reasons=("Age: outside",)),
    Case("mostly_broken", mostly_broken, loads=False, message="quarantine_within_ceiling",
         stage="quarantine_within_ceiling"),
    Case("zero_bytes", lambda rows: b"", loads=False, message="the file is empty"),
    Case("header_only", lambda rows: utf8(rows[:1]), loads=False, message="has a header but no data rows"),
    Case("missing_column", drop_column("Medication"), loads=False, message="missing columns ['Medication']"),
    Case("renamed_column", rename_column("Blood Type", "BloodType"), loads=False,
         message="missing columns ['Blood Type']; unexpected columns ['BloodType']"),
    Case("extra_column", add_column, loads=False, message="unexpected columns ['Ward']"),
    Case("repeated_column", duplicate_header_column, loads=False, message="repeated columns ['Name']"),
    Case("semicolon_delimiter", lambda rows: utf8(rows, delimiter=";"), loads=False, message="delimited by ';'"),
    Case("tab_delimiter", lambda rows: utf8(rows, delimiter="\t"), loads=False, message="delimited by '\\t'"),
    Case("latin1_bytes", latin1, loads=False, message="not UTF-8 text"),
    Case("binary_file_named_csv", binary_png, loads=False, message="binary file"),
    Case("unterminated_quote", unterminated_quote, loads=False, message="broken CSV quoting"),
]
