"""Metadata helpers shared by the assets: column schemas and previews without identifiers."""


import dagster as dg
import pandas as pd

# Direct identifiers never shown in the UI, even in a five-row preview.
_REDACTED = {"name", "doctor", "Name", "Doctor", "record_key", "patient_id"}


def column_schema(dtypes: dict[str, str]) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(name, str(dtype)) for name, dtype in dtypes.items()])


def preview(frame: pd.DataFrame, rows: int = 5) -> dg.MarkdownMetadataValue:
    sample = frame.head(rows).copy()
    for column in _REDACTED & set(sample.columns):
        sample[column] = "[redacted]"
    return dg.MetadataValue.md(sample.to_markdown(index=False))


def counts_table(counts: dict[str, int]) -> dg.MarkdownMetadataValue:
    lines = ["| what | rows |", "|---|---:|"] + [f"| {k} | {v:,} |" for k, v in counts.items()]
    return dg.MetadataValue.md("\n".join(lines))


def check_specs(asset, descriptions: dict[str, str], blocking: bool = True) -> list[dg.AssetCheckSpec]:
    """One check spec per name, described by what it asserts."""
    return [dg.AssetCheckSpec(name, asset=asset, blocking=blocking, description=text)
            for name, text in descriptions.items()]
