"""Great Expectations suites run on every chunk of a cleaned file, their results tallied for the report and check."""

import logging
import os
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from healthcare_assets.domain import schema
from healthcare_assets.domain.privacy import IDENTIFYING_COLUMNS
from healthcare_assets.plumbing.staging import StagedFrame

ROWS_PARAMETER = "expected_rows"
RESULTS = "validation_results"  # under the Data Docs site: Great Expectations' JSON results


def expectations() -> dict[str, list]:
    """The three suites. Built from schema.py, so a new column or value lands here by itself."""
    import great_expectations.expectations as gxe

    counts = [
        gxe.ExpectTableRowCountToEqual(value={"$PARAMETER": ROWS_PARAMETER}),
        gxe.ExpectTableColumnCountToEqual(value=len(schema.CLEANED_COLUMNS)),
        gxe.ExpectColumnValuesToBeUnique(column="record_key"),
    ]
    types = [gxe.ExpectTableColumnsToMatchOrderedList(column_list=list(schema.CLEANED_COLUMNS))]
    for column, dtype in schema.CLEANED_DTYPES.items():
        types.append(gxe.ExpectColumnValuesToBeOfType(column=column, type_=dtype.split("[")[0] if dtype.startswith("datetime") else dtype))
        types.append(gxe.ExpectColumnValuesToNotBeNull(column=column))
    values = [
        gxe.ExpectColumnValuesToBeInSet(column=column, value_set=list(allowed) + ([""] if column == "test_results" else []))
        for column, allowed in schema.CATEGORIES.items()
    ]
    values += [
        gxe.ExpectColumnValuesToBeInSet(column="room_number", value_set=list(schema.ROOM_NUMBERS)),
        gxe.ExpectColumnValuesToBeBetween(column="age", min_value=schema.AGE_RANGE[0], max_value=schema.AGE_RANGE[1]),
        gxe.ExpectColumnValuesToBeBetween(column="billing_amount", min_value=0, max_value=schema.BILLING_MAX),
        gxe.ExpectColumnValuesToBeBetween(column="duration_days", min_value=0, max_value=schema.STAY_DAYS_MAX),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="discharge_date", column_B="date_of_admission", or_equal=True),
        gxe.ExpectColumnValuesToMatchRegex(column="record_key", regex=r"^[0-9a-f]{32}$"),
        gxe.ExpectColumnValuesToMatchRegex(column="patient_id", regex=r"^[0-9a-f]{64}$"),
        gxe.ExpectColumnValueLengthsToBeBetween(column="name", min_value=1),
    ]
    return {"counts": counts, "types": types, "values": values}


# Great Expectations applies one result format to a whole checkpoint, and a sample of what failed is a value of a
# patient's row (a name, or exact dates and amounts, which single a person out too): counts and aggregates only.
RESULT_FORMAT = {"result_format": "SUMMARY", "partial_unexpected_count": 0,
                 "include_unexpected_rows": False, "return_unexpected_index_query": False}
REDACTED = "[redacted]"


class Validation:
    """An ephemeral context whose results are kept on disk with the Data Docs, so the site lists the last runs."""

    def __init__(self, docs_dir, asset_name: str, run_id: str):
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")  # read when great_expectations is imported
        import great_expectations as gx

        logging.getLogger("great_expectations").setLevel(logging.WARNING)
        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = {"globally": False, "metric_calculations": False}
        context.add_store(context.variables.validation_results_store_name, {
            "class_name": "ValidationResultsStore",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir / RESULTS)}})
        context.add_data_docs_site(
            site_name="local",
            site_config={"class_name": "SiteBuilder",
                         "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
                         "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"}},
        )
        batch = context.data_sources.add_pandas("staging").add_dataframe_asset(asset_name) \
            .add_batch_definition_whole_dataframe("chunk")
        definitions = []
        self.expected: dict[str, str] = {}  # expectation id -> what it asks for, as configured
        for name, suite_expectations in expectations().items():
            suite = context.suites.add(gx.ExpectationSuite(name=f"hospitalizations.{name}", expectations=suite_expectations))
            definitions.append(context.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite)))
            self.expected.update({e.id: _expected(e.configuration.kwargs) for e in suite.expectations})
        self.checkpoint = context.checkpoints.add(gx.Checkpoint(
            name="quality_report", validation_definitions=definitions, result_format=RESULT_FORMAT))
        self.context, self.asset_name, self.run_name = context, asset_name, run_id
        self.stored: list = []

    def run(self, chunk: pd.DataFrame, expected_rows: int) -> dict:
        from great_expectations.core.run_identifier import RunIdentifier

        # Filed under the run's name, at its own time: a chunk's results must not replace the last one's.
        result = self.checkpoint.run(batch_parameters={"dataframe": chunk},
                                     expectation_parameters={ROWS_PARAMETER: expected_rows},
                                     run_id=RunIdentifier(run_name=self.run_name))
        store = self.context.validation_results_store
        for key, suite_result in result.run_results.items():
            # a dataframe batch's spec has no data asset name ("Data asset: None" in Data Docs): filed again with it
            suite_result.meta["batch_spec"]["data_asset_name"] = self.asset_name
            store.set(key, suite_result)
            self.stored.append(key)
        return {r.suite_name.removeprefix("hospitalizations."): r for r in result.run_results.values()}

    def build_data_docs(self, keep: int) -> None:
        """After removing all but the newest `keep` runs' validations; the caller holds the reports' lock."""
        results = Path(self.context.validation_results_store.store_backend.full_base_directory)
        # <suite parts>/<run name>/<run time>/<batch>.json, mirrored by the site's validations/
        runs = {path.parent.parent for path in results.rglob("*.json")}
        newest: dict[str, float] = {}
        for run in runs:
            newest[run.name] = max(newest.get(run.name, 0.0), run.stat().st_mtime)
        kept = set(sorted(newest, key=newest.__getitem__, reverse=True)[:keep])
        for run in {run for run in runs if run.name not in kept}:
            shutil.rmtree(run, ignore_errors=True)
            shutil.rmtree(results.parent / "validations" / run.relative_to(results), ignore_errors=True)
        self.context.build_data_docs(resource_identifiers=self.stored)


# Expectations whose observed value describes a column (its type), never a row's value.
DESCRIBING_COLUMNS = ("expect_column_values_to_be_of_type", "expect_column_values_to_be_in_type_list")


def _shown(value, column: str | None, expectation: str):
    """An observed value as a report may show it: a count or the column's type, never a value of an
    identifying column (an aggregate such as the most common name is a name)."""
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    if column in IDENTIFYING_COLUMNS and not numeric and expectation not in DESCRIBING_COLUMNS:
        return REDACTED
    return value if isinstance(value, (int, float)) else str(value)[:200]


def _expected(kwargs: dict) -> str:
    """From its configuration, not the data; a parameter by its name, as its value changes from chunk to chunk."""
    shown = []
    for key, value in kwargs.items():
        if key in ("column", "column_A", "column_B", "batch_id", "result_format"):
            continue
        if isinstance(value, dict) and "$PARAMETER" in value:
            value = f"{value['$PARAMETER']} (per chunk)"
        elif isinstance(value, list) and len(value) > 12:
            value = f"{value[:12]} and {len(value) - 12} more"
        shown.append(f"{key}={value}")
    return ", ".join(shown)


class ExpectationTally:
    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], dict] = {}
        self.observed: dict[tuple[str, str], Counter] = {}
        self.failures: list[dict] = []

    def add(self, chunk: int, suite: str, result, expected: str) -> None:
        config = result.expectation_config
        column = config.kwargs.get("column") or " > ".join(
            config.kwargs[k] for k in ("column_A", "column_B") if k in config.kwargs) or None
        key = (suite, config.id)
        row = self.rows.setdefault(key, {"suite": suite, "type": config.type, "column": column,
                                         "expected": expected, "passed": True,
                                         "failed_chunks": 0, "unexpected_count": None, "elements": 0})
        details = result.result or {}
        if "unexpected_count" in details:  # a row-by-row expectation: count what failed
            row["unexpected_count"] = (row["unexpected_count"] or 0) + int(details["unexpected_count"] or 0)
            row["elements"] += int(details.get("element_count") or 0)
        observed = _shown(details.get("observed_value"), column, config.type) if "observed_value" in details else None
        self.observed.setdefault(key, Counter())[observed] += 1
        if not result.success:
            row["passed"] = False
            row["failed_chunks"] += 1
            self.failures.append({"chunk": chunk, "suite": suite, "expectation": config.type, "column": column,
                                  "unexpected_count": details.get("unexpected_count"),
                                  "observed": "" if observed is None else str(observed)[:80]})

    def suites(self) -> list[dict]:
        by_suite: dict[str, list] = {}
        for key, row in self.rows.items():
            shown = {k: v for k, v in row.items() if k not in ("suite", "elements")}
            by_suite.setdefault(row["suite"], []).append({**shown, "observed": self._observed(key, row)})
        return [{"name": name, "failed": sum(not e["passed"] for e in rows), "expectations": rows}
                for name, rows in by_suite.items()]

    def _observed(self, key, row: dict) -> str:
        if row["unexpected_count"] is not None:
            share = row["unexpected_count"] / row["elements"] if row["elements"] else 0.0
            return f"{share:.2%} of {row['elements']:,} values unexpected"
        counts = self.observed[key]
        if len(counts) == 1:
            return str(next(iter(counts)))
        # differs by chunk (a chunk's row count): each value with the number of chunks showing it
        return "; ".join(f"{value} ({n} chunk{'s' if n > 1 else ''})" for value, n in counts.most_common(5)) + \
            (f"; {len(counts) - 5} more values" if len(counts) > 5 else "")


def validate(cleaned_frame: StagedFrame, validation: Validation, log: Callable[[str], None]) -> ExpectationTally:
    tally = ExpectationTally()
    empty = pd.DataFrame({c: pd.Series(dtype=t) for c, t in schema.CLEANED_DTYPES.items()})
    chunks = zip(cleaned_frame.chunk_rows, cleaned_frame.chunks()) if cleaned_frame.rows else [(0, empty)]
    total = max(len(cleaned_frame.chunk_rows), 1)
    for number, (expected_rows, chunk) in enumerate(chunks, start=1):
        for suite, result in validation.run(chunk, expected_rows).items():
            for expectation in result.results:
                tally.add(number, suite, expectation, validation.expected[expectation.expectation_config.id])
        log(f"validated chunk {number} of {total}")
    return tally
