"""Metadata helpers shared by the assets: column schemas and data profiles that show no patient."""


import dagster as dg
import pandas as pd

from healthcare_assets.domain.privacy import K_ANONYMITY
from healthcare_assets.domain.schema import CATEGORIES, CSV_COLUMNS

# The closed value sets, under their cleaned and their CSV names.
_VALUE_SETS = {**CATEGORIES, **{CSV_COLUMNS[name]: values for name, values in CATEGORIES.items()}}


def column_schema(dtypes: dict[str, str]) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(name, str(dtype)) for name, dtype in dtypes.items()])


def profile(frame: pd.DataFrame) -> dg.MarkdownMetadataValue:
    """What each column holds, never a row (a row shows exact dates, hospital, room and amount):
    its non-empty values and, for a closed value set, how often each of its values occurs, when at
    least k times; anything outside the set is counted, never shown."""
    lines = ["| column | non-empty | values (count) |", "|---|---:|---|"]
    for column in frame.columns:
        values = frame[column]
        shown = ""
        if column in _VALUE_SETS:
            counts = values.value_counts()
            known = [f"{v} ({n:,})" for v, n in counts.items() if v in _VALUE_SETS[column] and n >= K_ANONYMITY]
            other = int(counts[[v not in _VALUE_SETS[column] for v in counts.index]].sum())
            shown = ", ".join(known + ([f"other ({other:,})"] if other else []))
        lines.append(f"| {column} | {int(values.notna().sum()):,} | {shown} |")
    return dg.MetadataValue.md("\n".join(lines))


def counts_table(counts: dict[str, int]) -> dg.MarkdownMetadataValue:
    lines = ["| what | rows |", "|---|---:|"] + [f"| {k} | {v:,} |" for k, v in counts.items()]
    return dg.MetadataValue.md("\n".join(lines))


def check_specs(asset, descriptions: dict[str, str], blocking: bool = True) -> list[dg.AssetCheckSpec]:
    """One check spec per name, described by what it asserts."""
    return [dg.AssetCheckSpec(name, asset=asset, blocking=blocking, description=text)
            for name, text in descriptions.items()]
