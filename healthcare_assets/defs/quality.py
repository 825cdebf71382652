"""quality_report: Great Expectations suites for counts, types and values, run on every chunk."""


import logging
import os
from collections import Counter

import dagster as dg
import pandas as pd

from healthcare_assets.resources import settings
from healthcare_assets.schema import (
    AGE_RANGE,
    BILLING_MAX,
    CATEGORIES,
    CLEANED_COLUMNS,
    CLEANED_DTYPES,
    ROOM_NUMBERS,
    STAY_DAYS_MAX,
)
from healthcare_assets.staging import StagedFrame

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
ROWS_PARAMETER = "expected_rows"


def expectations() -> dict[str, list]:
    """The three suites. Built from schema.py, so a new column or value lands here by itself."""
    import great_expectations.expectations as gxe

    counts = [
        gxe.ExpectTableRowCountToEqual(value={"$PARAMETER": ROWS_PARAMETER}),
        gxe.ExpectTableColumnCountToEqual(value=len(CLEANED_COLUMNS)),
        gxe.ExpectColumnValuesToBeUnique(column="record_key"),
    ]
    types = [gxe.ExpectTableColumnsToMatchOrderedList(column_list=list(CLEANED_COLUMNS))]
    for column, dtype in CLEANED_DTYPES.items():
        types.append(gxe.ExpectColumnValuesToBeOfType(column=column, type_=dtype.split("[")[0] if dtype.startswith("datetime") else dtype))
        types.append(gxe.ExpectColumnValuesToNotBeNull(column=column))
    values = [
        gxe.ExpectColumnValuesToBeInSet(column=column, value_set=list(allowed) + ([""] if column == "test_results" else []))
        for column, allowed in CATEGORIES.items()
    ]
    values += [
        gxe.ExpectColumnValuesToBeInSet(column="room_number", value_set=list(ROOM_NUMBERS)),
        gxe.ExpectColumnValuesToBeBetween(column="age", min_value=AGE_RANGE[0], max_value=AGE_RANGE[1]),
        gxe.ExpectColumnValuesToBeBetween(column="billing_amount", min_value=0, max_value=BILLING_MAX),
        gxe.ExpectColumnValuesToBeBetween(column="duration_days", min_value=0, max_value=STAY_DAYS_MAX),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="discharge_date", column_B="date_of_admission", or_equal=True),
        gxe.ExpectColumnValuesToMatchRegex(column="record_key", regex=r"^[0-9a-f]{32}$"),
        gxe.ExpectColumnValuesToMatchRegex(column="patient_id", regex=r"^[0-9a-f]{64}$"),
        gxe.ExpectColumnValueLengthsToBeBetween(column="name", min_value=1),
    ]
    return {"counts": counts, "types": types, "values": values}


def _checkpoint(docs_dir):
    """An ephemeral GX context whose checkpoint validates the three suites and writes Data Docs."""
    import great_expectations as gx

    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False, "metric_calculations": False}
    context.add_data_docs_site(
        site_name="local",
        site_config={"class_name": "SiteBuilder",
                     "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
                     "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"}},
    )
    batch = context.data_sources.add_pandas("staging").add_dataframe_asset("cleaned_frame") \
        .add_batch_definition_whole_dataframe("chunk")
    definitions = []
    for name, suite_expectations in expectations().items():
        suite = context.suites.add(gx.ExpectationSuite(name=f"hospitalizations.{name}", expectations=suite_expectations))
        definitions.append(context.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite)))
    return context.checkpoints.add(gx.Checkpoint(
        name="quality_report", validation_definitions=definitions,
        actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs")],
        result_format={"result_format": "SUMMARY"},
    ))


@dg.asset(group_name="quality", kinds={"great_expectations"})
def quality_report(context: dg.AssetExecutionContext, cleaned_frame: StagedFrame) -> dg.Output[dict]:
    """Great Expectations validation of the cleaned rows, chunk by chunk: counts (rows equal what
    cleaning staged, unique record keys), types (every column's dtype, no nulls) and values (value
    sets, ranges, discharge after admission). Data Docs land in reports/quality/."""
    docs_dir = settings.private_dir(settings.reports_dir() / "quality")
    checkpoint = _checkpoint(docs_dir)
    stats: Counter = Counter()
    failures: list[dict] = []
    empty = pd.DataFrame({c: pd.Series(dtype=t) for c, t in CLEANED_DTYPES.items()})
    chunks = zip(cleaned_frame.chunk_rows, cleaned_frame.chunks()) if cleaned_frame.rows else [(0, empty)]
    total = max(len(cleaned_frame.chunk_rows), 1)
    for number, (expected_rows, chunk) in enumerate(chunks, start=1):
        result = checkpoint.run(batch_parameters={"dataframe": chunk},
                                expectation_parameters={ROWS_PARAMETER: expected_rows})
        for run in result.run_results.values():
            suite = run.suite_name.removeprefix("hospitalizations.")
            stats[f"{suite}_evaluated"] += run.statistics["evaluated_expectations"]
            stats[f"{suite}_failed"] += run.statistics["unsuccessful_expectations"]
            for r in run.results:
                if not r.success:
                    failures.append({"chunk": number, "suite": suite,
                                     "expectation": r.expectation_config.type,
                                     "column": r.expectation_config.kwargs.get("column"),
                                     "unexpected_count": r.result.get("unexpected_count"),
                                     "observed": str(r.result.get("observed_value", ""))[:80]})
        context.log.info(f"validated chunk {number} of {total}")
    settings.owner_only(docs_dir)  # Great Expectations writes Data Docs under the umask

    rows = ["| suite | evaluated | failed |", "|---|---:|---:|"]
    rows += [f"| {s} | {stats[s + '_evaluated']} | {stats[s + '_failed']} |" for s in ("counts", "types", "values")]
    if failures:
        rows += ["", "| chunk | suite | expectation | column | unexpected |", "|---|---|---|---|---:|"]
        rows += [f"| {f['chunk']} | {f['suite']} | {f['expectation']} | {f['column'] or ''} | {f['unexpected_count'] or ''} |"
                 for f in failures[:50]]
    summary = {"chunks": total, "rows": cleaned_frame.rows, "statistics": dict(stats), "failures": failures,
               "data_docs": str(docs_dir / "index.html")}
    return dg.Output(summary, metadata={
        "dagster/row_count": cleaned_frame.rows,
        "expectations_evaluated": sum(v for k, v in stats.items() if k.endswith("_evaluated")),
        "expectations_failed": len(failures),
        "summary": dg.MetadataValue.md("\n".join(rows)),
        "data_docs": dg.MetadataValue.path(summary["data_docs"]),
    })


@dg.asset_check(asset=quality_report, blocking=True)
def all_expectations_pass(quality_report: dict) -> dg.AssetCheckResult:
    """Any failed expectation stops the run here, before anything is written to MongoDB."""
    failures = quality_report["failures"]
    return dg.AssetCheckResult(
        passed=not failures,
        metadata={"failed_expectations": len(failures),
                  "first_failures": dg.MetadataValue.json(failures[:10])},
    )
