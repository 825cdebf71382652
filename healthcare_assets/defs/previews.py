"""Metadata helpers shared by the assets: column schemas and data profiles that show no patient."""

import dagster as dg
import pandas as pd
from tabulate import tabulate

from healthcare_assets.domain.privacy import K_ANONYMITY
from healthcare_assets.domain.schema import CATEGORIES, CSV_COLUMNS

# The closed value sets, under their cleaned and their CSV names.
_VALUE_SETS = {**CATEGORIES, **{CSV_COLUMNS[name]: values for name, values in CATEGORIES.items()}}


def column_schema(dtypes: dict[str, str]) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(name, str(dtype)) for name, dtype in dtypes.items()])


def profile(frame: pd.DataFrame) -> dg.MarkdownMetadataValue:
    """Non-empty counts and closed-set values seen at least k times; never a row, nor a value outside the set."""
    rows = []
    for column in frame.columns:
        values = frame[column]
        shown = ""
        if column in _VALUE_SETS:
            counts = values.value_counts()
            known = [f"{v} ({n:,})" for v, n in counts.items() if v in _VALUE_SETS[column] and n >= K_ANONYMITY]
            other = int(counts[[v not in _VALUE_SETS[column] for v in counts.index]].sum())
            shown = ", ".join(known + ([f"other ({other:,})"] if other else []))
        rows.append((column, f"{int(values.notna().sum()):,}", shown))
    return markdown_table(rows, ["column", "non-empty", "values (count)"], ("left", "right", "left"))


def counts_table(counts: dict[str, int]) -> dg.MarkdownMetadataValue:
    return markdown_table([(k, f"{v:,}") for k, v in counts.items()], ["what", "rows"], ("left", "right"))


def markdown_table(rows: list[tuple], headers: list[str], align: tuple[str, ...]) -> dg.MarkdownMetadataValue:
    """A GitHub-style markdown table; numbers come formatted by the caller (thousands separators)."""
    return dg.MetadataValue.md(tabulate(rows, headers=headers, tablefmt="github", colalign=align,
                                        disable_numparse=True))


def suites_table(suites: list[dict], failures: list[dict]) -> dg.MarkdownMetadataValue:
    text = markdown_table([(s["name"], len(s["expectations"]), s["failed"]) for s in suites],
                          ["suite", "expectations", "failed"], ("left", "right", "right")).value
    if failures:
        rows = [(f["chunk"], f["suite"], f["expectation"], f["column"] or "", f["unexpected_count"] or "")
                for f in failures[:50]]
        text += "\n\n" + markdown_table(rows, ["chunk", "suite", "expectation", "column", "unexpected"],
                                         ("left", "left", "left", "left", "right")).value
    return dg.MetadataValue.md(text)


def check_specs(asset, descriptions: dict[str, str], blocking: bool = True) -> list[dg.AssetCheckSpec]:
    return [dg.AssetCheckSpec(name, asset=asset, blocking=blocking, description=text)
            for name, text in descriptions.items()]
