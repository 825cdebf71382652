"""Every CSV the project writes: formula cells quoted (CSV injection), a row with a bare carriage return
quoted, since csv quotes only its own line terminator's characters (docs/pipeline.md)."""

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
    if isinstance(value, str) and value[:1] in _STARTS and _FORMULA.match(value) and not _NUMBER.fullmatch(value):
        return QUOTE + value
    return value


def as_written(value: str) -> str:
    """A cell read back from a CSV this module wrote, as it was before neutralized()."""
    if value.startswith(QUOTE) and neutralized(value[1:]) == value:
        return value[1:]
    return value


class Writer:
    """csv.writer whose rows are written neutralized, and quoted when a cell holds a bare carriage return."""

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
    if isinstance(target, (str, os.PathLike)):
        with open(target, "w", newline="", encoding="utf-8") as handle:
            to_csv(frame, handle, header)
        return
    writer = Writer(target, lineterminator="\n")
    if header:
        writer.writerow(frame.columns)
    writer.writerows(frame.astype(object).where(frame.notna(), "").itertuples(index=False, name=None))
