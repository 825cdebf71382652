"""What bounds each question's time, the server's cost model behind it, and the report's notes and table."""

from __future__ import annotations

from pathlib import Path

from bson import json_util
from tabulate import tabulate

from healthcare_assets.domain.query_benchmarks.chart import write_chart
from healthcare_assets.plumbing import settings


def ratio(slow: float | None, fast: float | None) -> float | None:
    return round(slow / fast, 1) if slow and fast else None


def server_costs(results: list[dict]) -> dict:
    """The indexed queries' cost model from this run: a fixed cost (the cheapest query's time) plus a cost per document
    fetched (from the query that fetches the most); past `crossover_docs`, fetching costs more than the rest."""
    fixed = min(r["indexed"]["median_ms"] for r in results)
    most = max(results, key=lambda r: r["indexed"]["docs_fetched"])
    docs = most["indexed"]["docs_fetched"]
    per_doc = (most["indexed"]["median_ms"] - fixed) / docs if docs else 0.0
    if per_doc <= 0 and docs:  # every query fetches about as much: all of its time is per document
        per_doc = most["indexed"]["median_ms"] / docs
    return {"fixed_ms": round(fixed, 3), "us_per_fetched_doc": round(per_doc * 1000, 1),
            "crossover_docs": round(fixed / per_doc) if per_doc else None}


def _sample_note(block: dict) -> str:
    if block["measured_on"] == "collection":
        return ""
    return f"; timed on a {block['measured_documents']:,}-doc sample, scaled x{block['scale']:,.1f}"


def bounds(result: dict, costs: dict) -> dict:
    ix, scan, documents = result["indexed"], result["collscan"], result["documents"]
    fetched = ix["docs_fetched"]
    approx = "~" if ix["measured_on"] == "sample" else ""
    per_doc_ms = costs["us_per_fetched_doc"] / 1000
    if fetched * per_doc_ms >= costs["fixed_ms"]:
        kind = "result size"
        indexed = (f"result size: the index finds {approx}{fetched:,} docs and the server fetches each "
                   f"(~{ix['us_per_doc']:,.0f} µs/doc)")
    else:
        kind = "index lookup"
        indexed = (f"index lookup: {approx}{fetched:,} docs; the round trip and the index walk "
                   f"(~{costs['fixed_ms']:,.1f} ms) dominate")
    collscan = (f"every document: the server reads and decodes all {documents:,} docs "
                f"(~{scan['us_per_doc'] or 0:,.0f} µs/doc)")
    pandas_bound = None
    if result["pandas"]:
        columns = len(result["csv_columns"])
        pandas_bound = f"the whole CSV: pandas parses {columns} column{'s' if columns > 1 else ''} of every row"
    return {"kind": kind, "indexed": indexed + _sample_note(ix), "collscan": collscan + _sample_note(scan),
            "pandas": pandas_bound}


def speedup_basis(result: dict) -> str:
    scaled = [name for name in ("indexed", "collscan") if result[name]["measured_on"] == "sample"]
    return {0: "measured", 1: "COLLSCAN scaled from the sample", 2: "both scaled from the sample"}[len(scaled)]


def report_notes(results: list[dict], costs: dict, documents: int, sample_documents: int | None) -> list[str]:
    notes = []
    if sample_documents:
        scaled_ix = [r["name"] for r in results if r["indexed"]["measured_on"] == "sample"]
        notes.append(
            f"Forced COLLSCANs ran on a {sample_documents:,}-document sample (the lowest patient_id slices) and "
            f"are scaled x{documents / sample_documents:,.1f} to {documents:,} documents: the embedded server holds "
            f"every document a query reads until its cursor is spent. Scaled figures are marked ~ (hatched in the chart)."
            + (f" Indexed queries whose result would pass that size were timed on the sample too: "
               f"{', '.join(scaled_ix)}." if scaled_ix else ""))
    notes.append(
        f"On this server an indexed query costs about {costs['fixed_ms']:,.1f} ms plus "
        f"{costs['us_per_fetched_doc']:,.0f} µs per document it fetches (decoded, matched, encoded and sent one "
        f"by one): past ~{costs['crossover_docs'] or 0:,} documents its result size, not the index lookup, "
        f"bounds it.")
    if beaten := [r for r in results if r["pandas"] and r["pandas"]["median_ms"] < r["indexed"]["median_ms"]]:
        by_result = [r["name"] for r in beaten if r["bound"]["kind"] == "result size"]
        notes.append(
            f"The pandas CSV scan is faster than the indexed query on {len(beaten)} of {len(results)} questions "
            f"({', '.join(r['name'] for r in beaten)}); "
            + (f"{len(by_result)} of them are bound by their result size: the index spares reading the other "
               f"documents, but each one it finds costs the server ~{costs['us_per_fetched_doc']:,.0f} µs to "
               f"fetch, more in all than pandas takes to parse the few CSV columns the question needs, row by row."
               if by_result else "none of them is bound by its result size."))
    return notes


TABLE_HEADERS = ["query", "index", "plan", "keys / docs examined", "indexed median / p95 ms", "COLLSCAN median / p95 ms",
                 "speedup", "pandas CSV scan median ms", "rows (pandas)", "bounded by"]
TABLE_ALIGN = ["left", "left", "left", "right", "right", "right", "right", "right", "right", "left"]


def _table_row(r: dict) -> list[str]:
    ix, scan, csv = r["indexed"], r["collscan"], r["pandas"]
    ix_mark, scan_mark = ("~" if block["measured_on"] == "sample" else "" for block in (ix, scan))
    csv_ms, csv_rows = (f"{csv['median_ms']:,.1f}", f"{csv['rows']:,}") if csv else ("n/a", "n/a")
    speedup = "~" if r["speedup_basis"] != "measured" else ""
    return [r["name"], r["index"], f"{ix['stage']} {ix['index'] or ''} vs {scan['stage']}",
            f"{ix_mark}{round(ix['keys_examined'] * ix['scale']):,} / {ix_mark}{ix['docs_fetched']:,} vs {r['documents']:,}",
            f"{ix_mark}{ix['median_ms']:,.1f} / {ix_mark}{ix['p95_ms']:,.1f}",
            f"{scan_mark}{scan['median_ms']:,.0f} / {scan_mark}{scan['p95_ms']:,.0f}",
            f"{speedup}{r['speedup']}x", csv_ms, f"{'~' if r['rows_estimated'] else ''}{r['rows']:,} ({csv_rows})",
            r["bound"]["indexed"]]


def markdown_table(results: list[dict]) -> str:
    return tabulate([_table_row(r) for r in results], headers=TABLE_HEADERS, tablefmt="github",
                    colalign=TABLE_ALIGN, disable_numparse=True)


def report_files(directory: Path) -> tuple[Path, Path]:
    return directory / "index_benchmarks.json", directory / "index_benchmarks.png"


def write_files(report: dict, results: list[dict], directory: Path) -> tuple[Path, Path]:
    json_path, png_path = report_files(directory)
    settings.write_owner_only(json_path, json_util.dumps(report, indent=2, json_options=json_util.RELAXED_JSON_OPTIONS))
    write_chart(results, report["documents"], report["notes"], png_path)
    settings.owner_only(png_path)
    return json_path, png_path
