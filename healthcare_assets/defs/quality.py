"""quality_report: Great Expectations suites for counts, types and values, run on every chunk."""

from pathlib import Path

import dagster as dg

from healthcare_assets.defs import verdicts
from healthcare_assets.defs.previews import suites_table
from healthcare_assets.domain import quality_pages
from healthcare_assets.domain.expectations import Validation, validate
from healthcare_assets.plumbing.settings import PipelineSettings, owner_only, private_dir
from healthcare_assets.plumbing.staging import StagedFrame


@dg.asset(group_name="quality", kinds={"great_expectations"})
def quality_report(context: dg.AssetExecutionContext, cleaned_frame: StagedFrame,
                   settings: PipelineSettings) -> dg.Output[dict]:
    """Great Expectations validation of the cleaned rows, chunk by chunk: counts, types and values
    (value sets, ranges, discharge after admission). Writes the run's report, one HTML page that opens
    offline (reports/quality/runs/), and Great Expectations Data Docs (reports/quality/)."""
    docs_dir = private_dir(quality_pages.quality_dir())
    validation = Validation(docs_dir, cleaned_frame.source.file_stem, context.run_id)
    tally = validate(cleaned_frame, validation, context.log.info)
    total = max(len(cleaned_frame.chunk_rows), 1)
    # counts and aggregates only, never a patient's value
    report = {**quality_pages.page_data(context.run_id, verdicts.source_fields(cleaned_frame.source),
                                        cleaned_frame.counts), "chunks": total, "suites": tally.suites(),
              "passed": not tally.failures}
    keep = settings.kept_reports()
    with quality_pages.exclusive():
        validation.build_data_docs(keep)
        page = quality_pages.publish(report, keep)
    owner_only(docs_dir)  # Great Expectations writes Data Docs under the umask

    suites, failures = report["suites"], tally.failures
    statistics = {f"{s['name']}_{what}": n for s in suites
                  for what, n in (("evaluated", len(s["expectations"]) * total), ("failed", s["failed"]))}
    summary = {"chunks": total, "rows": cleaned_frame.rows, "failures": failures, "statistics": statistics,
               "report": str(page), "data_docs": str(docs_dir / "index.html")}
    return dg.Output(summary, metadata={
        "dagster/row_count": cleaned_frame.rows, "dagster/uri": page.as_uri(),
        "expectations_evaluated": sum(len(s["expectations"]) for s in suites) * total,
        "expectations_failed": len(failures), "summary": suites_table(suites, failures),
        **verdicts.links("report", page), **verdicts.links("reports_index", quality_pages.index_path()),
        **verdicts.links("data_docs", summary["data_docs"]),
    })


@dg.asset_check(asset=quality_report, blocking=True)
def all_expectations_pass(quality_report: dict) -> dg.AssetCheckResult:
    """Any failed expectation stops the run here, before anything is written to MongoDB."""
    failures, page = quality_report["failures"], Path(quality_report["report"])
    return verdicts.verdict("all_expectations_pass", not failures,
                            {"failed_expectations": len(failures), "first_failures": dg.MetadataValue.json(failures[:10])},
                            verdicts.Why(f"{len(failures):,} expectation results failed", "none may fail",
                                         "none: the expectations follow healthcare_assets/domain/schema.py", page),
                            verdicts.RunPage(page.stem))
