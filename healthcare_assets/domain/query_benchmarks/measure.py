"""Timing each question of the suite: with its index, forced to a collection scan, and answered by pandas from the CSV.

The indexed runs carry no hint: on the embedded server `hint(<index>)` walks the whole index and filters in Python,
as slow as a COLLSCAN, while the planner's own choice uses the index bounds (the check proves it chose the intended
one). `hint({"$natural": 1})` forces a COLLSCAN. Why and how no query holds more than `max_held_documents`, and how
sampled scans are scaled: docs/benchmarks.md."""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Protocol

import numpy as np
import pandas as pd
from pymongo.collection import Collection

from healthcare_assets.domain.collection_definitions import STAYS_KEY
from healthcare_assets.domain.query_benchmarks.plans import ensure_sample_index, explain
from healthcare_assets.domain.query_benchmarks.report import ratio, speedup_basis
from healthcare_assets.domain.query_benchmarks.suite import NATURAL, CsvQuestion, Query
from healthcare_assets.domain.schema import CSV_COLUMNS
from healthcare_assets.domain.sources import Location, SourceReadError, open_source
from healthcare_assets.plumbing import scans
from healthcare_assets.plumbing.staging import CHUNK_ROWS

SAMPLE_PREFIX = "index_benchmarks_sample_"  # scratch collections of the scan sample, dropped after each run


class Budget(Protocol):
    """How often each question is timed, and the most documents one query may make the server hold."""

    repeats: int
    scan_repeats: int
    max_held_documents: int


def latency(samples: list[float], scale: float = 1.0) -> dict:
    """Median and p95 of the timed runs, in ms; with a scale, for the whole collection as well as measured."""
    ms = [s * 1000 for s in samples]
    median, p95 = statistics.median(ms), float(np.percentile(ms, 95))
    latency = {"median_ms": round(median * scale, 3), "p95_ms": round(p95 * scale, 3), "runs": len(ms)}
    if scale != 1:
        latency |= {"measured_median_ms": round(median, 3), "measured_p95_ms": round(p95, 3)}
    return latency


def timed(repeats: int, run: Callable[..., int], *args, scale: float = 1.0, **kwargs) -> tuple[dict, int]:
    samples, rows = [], 0
    for _ in range(repeats):
        started = time.perf_counter()
        rows = run(*args, **kwargs)
        samples.append(time.perf_counter() - started)
    return latency(samples, scale), rows


def scan_csv(csv: Location, question: CsvQuestion) -> int:
    """Answer one question by reading the whole CSV with pandas, chunk by chunk (bounded memory)."""
    stream, _ = open_source(csv)
    headers = [CSV_COLUMNS[c] for c in question.columns]
    with stream:
        chunks = pd.read_csv(stream, usecols=headers, dtype=str, keep_default_na=False, chunksize=CHUNK_ROWS)
        matched = [chunk.rename(columns={v: k for k, v in CSV_COLUMNS.items()})
                   .pipe(lambda c: c[question.mask(c)]) for chunk in chunks]
    if not matched:  # a header-only file
        return 0
    return len(question.finish(pd.concat(matched)))


def example_document(collection: Collection, documents: int) -> dict | None:
    """The document with the lowest patient_id (same file, same parameters), looked up in the first patient_id
    slice: `find_one()` without a filter is a COLLSCAN that decodes every document."""
    return collection.find_one(scans.ranges(documents, *STAYS_KEY)[0], sort=[(STAYS_KEY[0], 1)])


def copy_scan_sample(collection: Collection, sample: Collection, documents: int, size: int) -> int:
    """Copy `size` documents into `sample`, slice by slice; patient_id is a keyed hash, so the lowest slices are an
    unbiased sample, the same one on every run."""
    copied = 0
    for match in scans.ranges(documents, *STAYS_KEY):
        if copied >= size:
            break
        if docs := list(collection.find(match, limit=size - copied)):
            sample.insert_many(docs, ordered=False)  # the documents keep their _id
            copied += len(docs)
    if not copied:
        raise RuntimeError(f"{collection.full_name}: no document copied into the scan sample (size {size})")
    return copied


@dataclass
class MeasuredOn:
    collection: Collection
    documents: int
    scale: float  # documents in the benchmarked collection / documents here
    label: str  # "collection" or "sample"

    def describe(self, measured: dict) -> dict:
        docs = measured.get("docs_examined") or 0
        per_doc = measured.get("measured_median_ms", measured["median_ms"]) * 1000 / docs if docs else None
        return {"measured_on": self.label, "measured_documents": self.documents, "scale": round(self.scale, 3),
                "docs_fetched": round(docs * self.scale),  # for the whole collection (estimated when scaled)
                "us_per_doc": round(per_doc, 1) if per_doc else None}


def _pandas_baseline(question: CsvQuestion, csv: Location, repeats: int, log) -> dict | None:
    try:
        figures, rows = timed(repeats, scan_csv, csv, question)
    except (SourceReadError, OSError) as exc:  # the file moved or is gone: report, don't fail
        log.warning(f"pandas baseline skipped: {exc}")
        return None
    return {**figures, "rows": rows}


def measure(query: Query, question: CsvQuestion, collection: MeasuredOn, sample: MeasuredOn | None,
            sample_indexes: set[str], budget: Budget, csv: Location, log) -> dict:
    scan_on = sample or collection
    scan_plan = explain(scan_on.collection, query, hint=NATURAL)  # also warms the path up
    matched = (scan_plan.returned or 0) * scan_on.scale  # the whole collection's, estimated when sampled
    index_on = collection
    if sample is not None and matched > budget.max_held_documents:
        ensure_sample_index(sample.collection, query.index, sample_indexes)
        index_on = sample
    indexed_plan = explain(index_on.collection, query)
    indexed, rows = timed(budget.repeats, query.run, index_on.collection, scale=index_on.scale)
    scan, _ = timed(budget.scan_repeats, query.run, scan_on.collection, hint=NATURAL, scale=scan_on.scale)
    # Rows found on the sample stand for the collection's: scaled when they are documents, as
    # counted when they are groups (their number does not grow with the collection).
    rows_estimated = index_on is sample
    if rows_estimated and not query.group:
        rows = round(rows * index_on.scale)
    pandas_result = _pandas_baseline(question, csv, budget.scan_repeats, log)
    indexed, scan = {**asdict(indexed_plan), **indexed}, {**asdict(scan_plan), **scan}
    result = {
        "name": query.name, "question": query.question, "index": query.index, "documents": collection.documents,
        "rows": rows, "rows_estimated": rows_estimated, "query": query.public(), "csv_columns": question.columns,
        "indexed": indexed | index_on.describe(indexed), "collscan": scan | scan_on.describe(scan),
        "pandas": pandas_result, "speedup": ratio(scan["median_ms"], indexed["median_ms"]),
        "speedup_vs_pandas": ratio(pandas_result and pandas_result["median_ms"], indexed["median_ms"])}
    result["speedup_basis"] = speedup_basis(result)
    log.info(f"{query.name}: {indexed['median_ms']:.1f} ms with {indexed_plan.stage} {indexed_plan.index} "
             f"on the {index_on.label}, {scan['median_ms']:.0f} ms forced COLLSCAN on the {scan_on.label}, "
             f"{rows:,} rows")
    return result


def measure_suite(collection: Collection, documents: int, suite: list[tuple[Query, CsvQuestion]],
                  budget: Budget, csv: Location, log) -> tuple[list[dict], int | None]:
    """Every question measured; returns the results and the scan sample's size (None without one)."""
    whole, sample, sample_indexes = MeasuredOn(collection, documents, 1.0, "collection"), None, set()
    scratch = (collection.database[f"{SAMPLE_PREFIX}{uuid.uuid4().hex[:8]}"]
               if documents > budget.max_held_documents else None)
    try:
        if scratch is not None:
            copied = copy_scan_sample(collection, scratch, documents, budget.max_held_documents)
            sample = MeasuredOn(scratch, copied, documents / copied, "sample")
            log.info(f"scan sample: {copied:,} of {documents:,} documents in {scratch.full_name}")
        results = [measure(query, question, whole, sample, sample_indexes, budget, csv, log)
                   for query, question in suite]
    finally:
        if scratch is not None:
            scratch.drop()  # also when the copy or a query failed half-way
    return results, sample and sample.documents
