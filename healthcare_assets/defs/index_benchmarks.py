"""index_benchmarks: what the client's indexes buy on the loaded collection, measured.

The client's seven indexes are created once; then a fixed suite of their questions runs with the
index and forced to a collection scan, and once more by scanning the source CSV with pandas (their
"before"). Timings are reported, never asserted; the blocking check asserts the plans.

Why the indexed runs carry no hint: on the embedded server (secantusdb 0.7) `hint(<index>)` walks
the whole index and filters in Python, as slow as a COLLSCAN (1.6 s vs 1 ms for a name lookup on
55k documents), while the planner's own choice uses the index bounds. So the planner chooses, and
the check proves it chose the intended index. `hint({"$natural": 1})` does force a real COLLSCAN.

Why no query makes the server hold more than `max_held_documents` (100,000 by default): the
embedded server holds a query's whole input and result in memory until its cursor is spent, and a
forced COLLSCAN decodes every document before it looks at the clock, so `maxTimeMS` does not bound
it (300,000 documents, a 1 s budget: 20 s and 1.5 GB more before the timeout). Instead:

- On a larger collection the forced COLLSCANs run on a scan sample: that many documents copied, one
  patient_id slice at a time through its index, into a scratch collection dropped afterwards. A
  COLLSCAN's cost is a cost per document times the documents, so its time is scaled by documents /
  sample. On 297,114 documents the scaled times (10-20 s a query) came out below real full scans
  (16-27 s): a scan that holds every document is slower still, so a scaled speedup errs low.
- An indexed query whose result would pass that size (estimated on the sample) is timed on the
  sample as well, with its index, and scaled the same way: here its cost follows its result size.
- The document that sets the queries' parameters is looked up in the first patient_id slice:
  `find_one()` without a filter is a COLLSCAN here too.

The report says, for each query, what bounds it with the index (the documents it fetches, or the
lookup itself), forced to a COLLSCAN (every document) and in pandas (the CSV's columns it reads),
and marks what was scaled from the sample.
"""

import datetime as dt
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import dagster as dg
import numpy as np
import pandas as pd
from bson import json_util
from pymongo import IndexModel
from pymongo.collection import Collection

from healthcare_assets.defs.anonymize import anonymized_view
from healthcare_assets.defs.load import mongo_hospitalizations
from healthcare_assets.domain import encryption
from healthcare_assets.domain.cleaning import normalize_hospitals, normalize_names
from healthcare_assets.domain.schema import CSV_COLUMNS, DATE_FORMAT
from healthcare_assets.domain.sources import Location, SourceReadError, open_source
from healthcare_assets.plumbing import scans, settings
from healthcare_assets.plumbing.mongo import MongoResource
from healthcare_assets.plumbing.staging import CHUNK_ROWS

# The client's indexes, by name. Everything else (queries, check, report) refers to these names.
INDEXES: dict[str, list[tuple[str, int]]] = {
    "patient_name": [("personal_info.name", 1)],
    "patient_age": [("personal_info.age", 1)],
    "condition": [("medical_info.condition", 1)],
    "admission_date": [("admission_info.date_admission", 1)],
    "hospital": [("administrative_info.hospital", 1)],
    "billing_amount": [("administrative_info.billing_amount", 1)],
    "gender_age": [("personal_info.gender", 1), ("personal_info.age", 1)],
}

NATURAL = {"$natural": 1}  # forces a collection scan
SAMPLE_PREFIX = "index_benchmarks_sample_"  # scratch collections of the scan sample, dropped after each run
REDACTED = "[redacted]"


@dataclass(frozen=True)
class Query:
    """One of the client's questions, as MongoDB is asked it."""

    name: str
    question: str
    index: str  # the INDEXES entry that should serve it
    filter: dict
    group: dict | None = None  # set: an aggregation, $match on filter then $group
    projection: dict | None = None
    sort: list | None = None

    def run(self, collection: Collection, hint: dict | None = None) -> int:
        """Run to the last result (counted, not kept, so memory stays flat); return how many."""
        options = {"hint": hint} if hint else {}
        if self.group:
            cursor = collection.aggregate(self.pipeline(), **options)
        else:
            cursor = collection.find(self.filter, self.projection, sort=self.sort, **options)
        return sum(1 for _ in cursor)

    def pipeline(self) -> list[dict]:
        return [{"$match": self.filter}, {"$group": self.group}, {"$sort": {"_id": 1}}]

    def command(self, collection: Collection, hint: dict | None = None) -> dict:
        if self.group:
            command = {"aggregate": collection.name, "pipeline": self.pipeline(), "cursor": {}}
        else:
            command = {"find": collection.name, "filter": self.filter}
            if self.projection:
                command["projection"] = self.projection
            if self.sort:
                command["sort"] = dict(self.sort)
        return {**command, "hint": hint} if hint else command

    def public(self) -> dict:
        """The spec with the patient's name left out (reports and metadata are not for PII)."""
        spec = asdict(self)
        if "personal_info.name" in spec["filter"]:
            spec["filter"] = {**spec["filter"], "personal_info.name": REDACTED}
        return spec


@dataclass(frozen=True)
class CsvQuestion:
    """The same question answered from the raw CSV with pandas: a row mask, then a finish."""

    columns: list[str]  # canonical field names it reads
    mask: Callable[[pd.DataFrame], pd.Series]
    finish: Callable[[pd.DataFrame], pd.DataFrame] = field(default=lambda rows: rows)


def _number(column: pd.Series) -> pd.Series:
    return pd.to_numeric(column, errors="coerce")


def _same_text(column: pd.Series, value: str) -> pd.Series:
    return column.str.strip().str.casefold() == value.casefold()


def query_suite(sample: dict, clear_name: str | None = None) -> list[tuple[Query, CsvQuestion]]:
    """The fixed suite, its parameters taken from one loaded document so every value exists. The
    lookup by name asks MongoDB for the name as stored (encrypted, deterministically: the index on
    it serves the lookup) and the CSV for `clear_name`, the same name decrypted.

    Ranges are a fixed width around the sample's value: a 5-year age band, 31 days of admissions,
    a 500-unit billing band, and for the statistics the sample's decade of age."""
    person, admin, admission = sample["personal_info"], sample["administrative_info"], sample["admission_info"]
    name, hospital, condition, gender = person["name"], admin["hospital"], sample["medical_info"]["condition"], person["gender"]
    age_low, age_high = person["age"], person["age"] + 4
    decade = person["age"] // 10 * 10
    day = admission["date_admission"]
    billing_low = float(round(admin["billing_amount"], -2))
    billing_high = billing_low + 500
    export_fields = ["admission_info", "medical_info.condition", "administrative_info.billing_amount"]

    def admitted(c: pd.DataFrame) -> pd.Series:
        return pd.to_datetime(c["date_of_admission"], format=DATE_FORMAT, errors="coerce")

    def by_age(rows: pd.DataFrame) -> pd.DataFrame:
        rows = rows.assign(age=_number(rows["age"]), billing=_number(rows["billing_amount"]).abs())
        return rows.groupby("age").agg(stays=("age", "size"), mean_billing=("billing", "mean"))

    return [
        (Query("patient_by_name", "stays of one patient, by name", "patient_name",
               {"personal_info.name": name}),
         CsvQuestion(["name"], lambda c: normalize_names(c["name"]) == (clear_name or name))),
        (Query("age_range", f"patients aged {age_low}-{age_high}", "patient_age",
               {"personal_info.age": {"$gte": age_low, "$lte": age_high}}),
         CsvQuestion(["age"], lambda c: _number(c["age"]).between(age_low, age_high))),
        (Query("condition", f"stays for {condition}", "condition",
               {"medical_info.condition": condition}),
         CsvQuestion(["medical_condition"], lambda c: _same_text(c["medical_condition"], condition))),
        (Query("admission_date_range", f"admissions in the 31 days from {day:%Y-%m-%d}", "admission_date",
               {"admission_info.date_admission": {"$gte": day, "$lt": day + dt.timedelta(days=31)}}),
         CsvQuestion(["date_of_admission"],
                     lambda c: (admitted(c) >= day) & (admitted(c) < day + dt.timedelta(days=31)))),
        (Query("hospital", "stays at one hospital", "hospital",
               {"administrative_info.hospital": hospital}),
         CsvQuestion(["hospital"], lambda c: normalize_hospitals(c["hospital"]) == hospital)),
        (Query("billing_range", f"bills from {billing_low:,.0f} to {billing_high:,.0f}", "billing_amount",
               {"administrative_info.billing_amount": {"$gte": billing_low, "$lt": billing_high}}),
         CsvQuestion(["billing_amount"],
                     lambda c: _number(c["billing_amount"]).abs().between(billing_low, billing_high, inclusive="left"))),
        (Query("demographics", f"stays and mean bill by age, {gender}, aged {decade}-{decade + 9}", "gender_age",
               {"personal_info.gender": gender, "personal_info.age": {"$gte": decade, "$lte": decade + 9}},
               group={"_id": "$personal_info.age", "stays": {"$sum": 1},
                      "mean_billing": {"$avg": "$administrative_info.billing_amount"}}),
         CsvQuestion(["gender", "age", "billing_amount"],
                     lambda c: _same_text(c["gender"], gender) & _number(c["age"]).between(decade, decade + 9),
                     by_age)),
        (Query("hospital_report", "one hospital's stays for export, by admission date", "hospital",
               {"administrative_info.hospital": hospital},
               projection={f: 1 for f in export_fields} | {"_id": 0},
               sort=[("admission_info.date_admission", 1)]),
         CsvQuestion(["hospital", "date_of_admission", "discharge_date", "medical_condition", "admission_type",
                      "room_number", "billing_amount"],
                     lambda c: normalize_hospitals(c["hospital"]) == hospital,
                     lambda rows: rows.sort_values("date_of_admission"))),
    ]


# ---- asking the server ----------------------------------------------------------------------

def _first(node, key: str):
    """The first value stored under `key` anywhere in an explain reply (its shape varies by
    server and by find vs aggregate: top level, or under stages[0].$cursor)."""
    if isinstance(node, dict):
        if key in node:
            return node[key]
        node = list(node.values())
    if isinstance(node, list):
        for value in node:
            found = _first(value, key)
            if found is not None:
                return found
    return None


def _scans(node) -> list[dict]:
    """The IXSCAN / COLLSCAN nodes of a plan tree."""
    if isinstance(node, dict):
        own = [node] if node.get("stage") in ("IXSCAN", "COLLSCAN") else []
        return own + _scans(list(node.values()))
    if isinstance(node, list):
        return [scan for value in node for scan in _scans(value)]
    return []


def explain(collection: Collection, query: Query, hint: dict | None = None, execute: bool = True) -> dict:
    """The winning plan's scan stage and index, plus what executing it examined."""
    verbosity = "executionStats" if execute else "queryPlanner"
    reply = collection.database.command("explain", query.command(collection, hint), verbosity=verbosity)
    scans = _scans(_first(reply, "winningPlan"))
    plan = {
        "stage": "+".join(s["stage"] for s in scans) or "none",
        "index": scans[0].get("indexName") if len(scans) == 1 else None,
        "key_pattern": list(scans[0].get("keyPattern", {}).items()) if len(scans) == 1 else None,
    }
    stats = _first(reply, "executionStats") or {}
    if execute:
        plan |= {"keys_examined": stats.get("totalKeysExamined"), "docs_examined": stats.get("totalDocsExamined"),
                 "returned": stats.get("nReturned")}
    return plan


def uses_intended_index(plan: dict, query: Query) -> bool:
    intended = [(f, d) for f, d in INDEXES[query.index]]
    return plan["stage"] == "IXSCAN" and [(f, int(d)) for f, d in plan["key_pattern"]] == intended


def ensure_indexes(collection: Collection) -> tuple[list[dict], float]:
    """Create the client's indexes that are missing (one call: the server builds them in one
    pass, 9 s instead of 7 x 3.5 s on the embedded server); say which were built."""
    existing = {tuple((f, int(d)) for f, d in info["key"]) for info in collection.index_information().values()}
    missing = [name for name, keys in INDEXES.items() if tuple(keys) not in existing]
    started = time.perf_counter()
    if missing:
        collection.create_indexes([IndexModel(INDEXES[name], name=name) for name in missing])
    seconds = time.perf_counter() - started
    return [{"name": name, "keys": keys, "built_now": name in missing} for name, keys in INDEXES.items()], seconds


def _latency(samples: list[float], scale: float = 1.0) -> dict:
    """Median and p95 of the timed runs, in ms; with a scale, for the whole collection as well as
    measured (on the scan sample)."""
    ms = [s * 1000 for s in samples]
    median, p95 = statistics.median(ms), float(np.percentile(ms, 95))
    latency = {"median_ms": round(median * scale, 3), "p95_ms": round(p95 * scale, 3), "runs": len(ms)}
    if scale != 1:
        latency |= {"measured_median_ms": round(median, 3), "measured_p95_ms": round(p95, 3)}
    return latency


def _timed(repeats: int, run: Callable[..., int], *args, scale: float = 1.0, **kwargs) -> tuple[dict, int]:
    samples, rows = [], 0
    for _ in range(repeats):
        started = time.perf_counter()
        rows = run(*args, **kwargs)
        samples.append(time.perf_counter() - started)
    return _latency(samples, scale), rows


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


# ---- keeping the server's memory flat --------------------------------------------------------

def example_document(collection: Collection, documents: int) -> dict | None:
    """The document with the lowest patient_id: the same file (and pseudonym key) gives the same
    query parameters. Looked up in the first patient_id slice, through its index, so the server
    holds one slice; `find_one()` without a filter is a COLLSCAN that decodes every document."""
    return collection.find_one(scans.ranges(documents)[0], sort=[(scans.FIELD, 1)])


def copy_scan_sample(collection: Collection, sample: Collection, documents: int, size: int) -> int:
    """Copy `size` of the collection's documents into `sample` (a scratch collection the caller
    drops), one patient_id slice at a time through its index; return how many. patient_id is a
    keyed hash, so the lowest slices are an unbiased sample, the same one on every run."""
    copied = 0
    for match in scans.ranges(documents):
        if copied >= size:
            break
        docs = list(collection.find(match, limit=size - copied))
        if docs:
            sample.insert_many(docs, ordered=False)  # the documents keep their _id
            copied += len(docs)
    if not copied:
        raise dg.Failure(f"{collection.full_name}: no document copied into the scan sample (size {size})")
    return copied


@dataclass
class Target:
    """Where a measurement runs: the collection itself, or the scan sample standing in for it."""

    collection: Collection
    documents: int
    scale: float  # documents in the benchmarked collection / documents here
    label: str  # "collection" or "sample"

    def describe(self, measured: dict) -> dict:
        """What the timings were measured on, and the server's time per document examined there."""
        docs = measured.get("docs_examined") or 0
        per_doc = measured.get("measured_median_ms", measured["median_ms"]) * 1000 / docs if docs else None
        return {"measured_on": self.label, "measured_documents": self.documents, "scale": round(self.scale, 3),
                "docs_fetched": round(docs * self.scale),  # for the whole collection (estimated when scaled)
                "us_per_doc": round(per_doc, 1) if per_doc else None}


def ensure_sample_index(sample: Target, name: str, built: set[str]) -> None:
    if name not in built:
        sample.collection.create_indexes([IndexModel(INDEXES[name], name=name)])
        built.add(name)


# ---- what bounds each query --------------------------------------------------------------------

def server_costs(results: list[dict]) -> dict:
    """The server's cost model for indexed queries, from this run: a fixed cost per query (round trip,
    planning, index walk: about the cheapest query's time) plus a cost per document fetched (from the
    query that fetches the most). Past `crossover_docs`, fetching the result costs more than the rest."""
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
    """In words, what bounds the query's time with the index, forced to a COLLSCAN, and in pandas."""
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
    """How the speedup came about: both sides timed on the collection, or one or both scaled."""
    scaled = [name for name in ("indexed", "collscan") if result[name]["measured_on"] == "sample"]
    return {0: "measured", 1: "COLLSCAN scaled from the sample", 2: "both scaled from the sample"}[len(scaled)]


def report_notes(results: list[dict], costs: dict, documents: int, sample_documents: int | None) -> list[str]:
    """Sentences for a reader of the report: what was scaled, and why the index can lose to pandas."""
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
    beaten = [r for r in results if r["pandas"] and r["pandas"]["median_ms"] < r["indexed"]["median_ms"]]
    if beaten:
        by_result = [r["name"] for r in beaten if r["bound"]["kind"] == "result size"]
        notes.append(
            f"The pandas CSV scan is faster than the indexed query on {len(beaten)} of {len(results)} questions "
            f"({', '.join(r['name'] for r in beaten)}); "
            + (f"{len(by_result)} of them are bound by their result size: the index spares reading the other "
               f"documents, but each one it finds costs the server ~{costs['us_per_fetched_doc']:,.0f} µs to "
               f"fetch, more in all than pandas takes to parse the few CSV columns the question needs, row by row."
               if by_result else "none of them is bound by its result size."))
    return notes


# ---- reporting -------------------------------------------------------------------------------

def _ratio(slow: float | None, fast: float | None) -> float | None:
    return round(slow / fast, 1) if slow and fast else None


def markdown_table(results: list[dict]) -> str:
    lines = [("| query | index | plan | keys / docs examined | indexed median / p95 ms | COLLSCAN median / p95 ms "
              "| speedup | pandas CSV scan median ms | rows (pandas) | bounded by |"),
             "|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        ix, scan, csv = r["indexed"], r["collscan"], r["pandas"]
        ix_mark, scan_mark = ("~" if block["measured_on"] == "sample" else "" for block in (ix, scan))
        csv_ms, csv_rows = (f"{csv['median_ms']:,.1f}", f"{csv['rows']:,}") if csv else ("n/a", "n/a")
        speedup = "~" if r["speedup_basis"] != "measured" else ""
        lines.append(
            f"| {r['name']} | {r['index']} | {ix['stage']} {ix['index'] or ''} vs {scan['stage']} "
            f"| {ix_mark}{round(ix['keys_examined'] * ix['scale']):,} / {ix_mark}{ix['docs_fetched']:,} "
            f"vs {r['documents']:,} "
            f"| {ix_mark}{ix['median_ms']:,.1f} / {ix_mark}{ix['p95_ms']:,.1f} "
            f"| {scan_mark}{scan['median_ms']:,.0f} / {scan_mark}{scan['p95_ms']:,.0f} "
            f"| {speedup}{r['speedup']}x | {csv_ms} | {'~' if r['rows_estimated'] else ''}{r['rows']:,} ({csv_rows}) "
            f"| {r['bound']['indexed']} |")
    return "\n".join(lines)


def write_chart(results: list[dict], documents: int, notes: list[str], path) -> None:
    import textwrap

    import matplotlib

    matplotlib.use("Agg")  # no display on servers and in Dagster steps
    import matplotlib.pyplot as plt

    names = [f"{r['name']}\n{r['bound']['kind']}, {r['indexed']['docs_fetched']:,} docs" for r in results]
    series = [("with index", "indexed", [r["indexed"]["median_ms"] for r in results]),
              ("forced COLLSCAN", "collscan", [r["collscan"]["median_ms"] for r in results]),
              ("pandas CSV scan", None, [r["pandas"]["median_ms"] if r["pandas"] else 0 for r in results])]
    y = np.arange(len(names))
    footnote = "\n".join(textwrap.fill(note, 160) for note in notes)
    # Heights in inches, top to bottom: title, one band per query, axis label, legend, the notes.
    note_in = 0.13 * (footnote.count("\n") + 1) + 0.1
    bottom_in = note_in + 0.35 + 0.55
    height = 0.6 + 0.75 * len(names) + bottom_in
    fig, ax = plt.subplots(figsize=(10, height))
    for offset, (label, block, values) in zip((-0.27, 0, 0.27), series):
        bars = ax.barh(y + offset, values, height=0.26, label=label)
        for bar, r in zip(bars, results):  # hatched: scaled from the scan sample, not timed on the collection
            if block and r[block]["measured_on"] == "sample":
                bar.set_hatch("//")
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("median latency, ms (log scale); hatched: scaled from a sample")
    ax.set_title(f"Index benchmarks on {documents:,} documents (under each query: what bounds it with its index)")
    fig.legend(*ax.get_legend_handles_labels(), loc="lower center", bbox_to_anchor=(0.5, note_in / height), ncol=3)
    fig.text(0.01, 0.05 / height, footnote, fontsize=7, va="bottom", ha="left")
    fig.subplots_adjust(left=0.2, right=0.98, top=1 - 0.6 / height, bottom=bottom_in / height)
    fig.savefig(path, dpi=110)
    plt.close(fig)


class IndexBenchmarkConfig(dg.Config):
    repeats: int = 7  # timed runs of each query through its index
    scan_repeats: int = 5  # timed full scans per query (forced COLLSCAN, pandas): ~1.5 s each per 55k rows
    # The most documents one query may make the embedded server hold. A larger collection's forced
    # COLLSCANs run on a sample of this many documents, and so do indexed queries whose result
    # would be larger (measured: ~1.1 GB of server memory at 100,000, ~0.35 GB at 30,000).
    max_held_documents: int = 100_000


def measure(query: Query, question: CsvQuestion, collection: Target, sample: Target | None,
            sample_indexes: set[str], config: IndexBenchmarkConfig, csv: Location, log) -> dict:
    """One query: timed with its index and forced to a collection scan, each on the collection or
    on the scan sample (see the module's docstring), and answered by pandas from the CSV."""
    scan_on = sample or collection
    scan_plan = explain(scan_on.collection, query, hint=NATURAL)  # also warms the path up
    matched = (scan_plan["returned"] or 0) * scan_on.scale  # the whole collection's, estimated when sampled
    index_on = collection
    if sample is not None and matched > config.max_held_documents:
        ensure_sample_index(sample, query.index, sample_indexes)
        index_on = sample
    indexed_plan = explain(index_on.collection, query)
    indexed, rows = _timed(config.repeats, query.run, index_on.collection, scale=index_on.scale)
    scan, _ = _timed(config.scan_repeats, query.run, scan_on.collection, hint=NATURAL, scale=scan_on.scale)
    # Rows found on the sample stand for the collection's: scaled when they are documents, as
    # counted when they are groups (their number does not grow with the collection).
    rows_estimated = index_on is sample
    if rows_estimated and not query.group:
        rows = round(rows * index_on.scale)
    try:
        pandas_scan, pandas_rows = _timed(config.scan_repeats, scan_csv, csv, question)
        pandas_result = {**pandas_scan, "rows": pandas_rows}
    except (SourceReadError, OSError) as exc:  # the file moved or is gone: report, don't fail
        log.warning(f"pandas baseline skipped: {exc}")
        pandas_result = None
    indexed, scan = {**indexed_plan, **indexed}, {**scan_plan, **scan}
    result = {
        "name": query.name, "question": query.question, "index": query.index, "documents": collection.documents,
        "rows": rows, "rows_estimated": rows_estimated, "query": query.public(), "csv_columns": question.columns,
        "indexed": indexed | index_on.describe(indexed), "collscan": scan | scan_on.describe(scan),
        "pandas": pandas_result,
        "speedup": _ratio(scan["median_ms"], indexed["median_ms"]),
        "speedup_vs_pandas": _ratio(pandas_result and pandas_result["median_ms"], indexed["median_ms"]),
    }
    result["speedup_basis"] = speedup_basis(result)
    log.info(f"{query.name}: {indexed['median_ms']:.1f} ms with {indexed_plan['stage']} {indexed_plan['index']} "
             f"on the {index_on.label}, {scan['median_ms']:.0f} ms forced COLLSCAN on the {scan_on.label}, "
             f"{rows:,} rows")
    return result


# Last in the chain: gated by the privacy checks, and its timings never share the server with the
# analysts' copy being built.
@dg.asset(group_name="mongodb", kinds={"mongodb"}, deps=[mongo_hospitalizations, anonymized_view])
def index_benchmarks(context: dg.AssetExecutionContext, config: IndexBenchmarkConfig,
                     mongo: MongoResource) -> dg.Output[dict]:
    """The client's indexes on the collection, and what they buy: each query of their suite timed
    with its index and forced to a collection scan (median and p95), its plan and the keys and
    documents it examined, the same question answered by scanning the source CSV with pandas, and
    what bounds each of the three. No query makes the server hold more than `max_held_documents`."""
    collection = mongo.hospitalizations()
    indexes, build_seconds = ensure_indexes(collection)
    context.log.info(f"indexes ready in {build_seconds:.1f} s: {[i['name'] for i in indexes if i['built_now']]} built")
    documents = collection.estimated_document_count()
    example = example_document(collection, documents)
    if example is None:
        raise dg.Failure(f"{collection.full_name} is empty: nothing to benchmark")
    csv = Location.recorded(example["metadata"]["source"])  # the one place the source CSV's location is recorded
    suite = query_suite(example, encryption.cipher(collection).decrypt(example["personal_info"]["name"]))

    whole, sample, sample_indexes = Target(collection, documents, 1.0, "collection"), None, set()
    scratch = (collection.database[f"{SAMPLE_PREFIX}{uuid.uuid4().hex[:8]}"]
               if documents > config.max_held_documents else None)
    try:
        if scratch is not None:
            copied = copy_scan_sample(collection, scratch, documents, config.max_held_documents)
            sample = Target(scratch, copied, documents / copied, "sample")
            context.log.info(f"scan sample: {copied:,} of {documents:,} documents in {scratch.full_name}")
        results = [measure(query, question, whole, sample, sample_indexes, config, csv, context.log)
                   for query, question in suite]
    finally:
        if scratch is not None:
            scratch.drop()  # also when the copy or a query failed half-way
    costs = server_costs(results)
    for result in results:
        result["bound"] = bounds(result, costs)
    notes = report_notes(results, costs, documents, sample and sample.documents)

    speedups = [r["speedup"] for r in results if r["speedup"]]
    report = {
        "collection": collection.full_name, "server": mongo.server_label(), "documents": documents,
        "csv": csv.uri, "repeats": config.repeats, "scan_repeats": config.scan_repeats,
        "max_held_documents": config.max_held_documents,
        "scan_sample_documents": sample and sample.documents,
        "indexes": indexes, "index_build_seconds": round(build_seconds, 2),
        "min_speedup": min(speedups, default=None), "server_costs": costs, "notes": notes, "queries": results,
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    reports = settings.reports_dir()
    json_path, png_path = reports / "index_benchmarks.json", reports / "index_benchmarks.png"
    settings.write_owner_only(json_path, json_util.dumps(report, indent=2, json_options=json_util.RELAXED_JSON_OPTIONS))
    write_chart(results, documents, notes, png_path)
    settings.owner_only(png_path)

    # The output keeps the real queries (the check asks the server about them again).
    value = {**report, "suite": [asdict(q) for q, _ in suite]}
    return dg.Output(value, metadata={
        "dagster/row_count": documents,
        "queries": dg.MetadataValue.md(markdown_table(results)),
        "notes": dg.MetadataValue.md("\n".join(f"- {note}" for note in notes)),
        "min_speedup": report["min_speedup"],
        "median_speedup": statistics.median(speedups) if speedups else None,
        "index_build_seconds": report["index_build_seconds"],
        "indexes_built_now": dg.MetadataValue.json([i["name"] for i in indexes if i["built_now"]]),
        "scan_sample_documents": report["scan_sample_documents"],
        "repeats": config.repeats, "scan_repeats": config.scan_repeats,
        "report": dg.MetadataValue.path(str(json_path)),
        "chart": dg.MetadataValue.path(str(png_path)),
    })


def plan_report(collection: Collection, suite: list[Query]) -> list[dict]:
    """For each query, the plan the server picks now (planner only, nothing executed)."""
    rows = []
    for query in suite:
        plan = explain(collection, query, execute=False)
        rows.append({"query": query.name, "intended_index": query.index, "stage": plan["stage"],
                     "index": plan["index"], "ok": uses_intended_index(plan, query)})
    return rows


@dg.asset_check(asset=index_benchmarks, blocking=True)
def every_query_uses_its_index(index_benchmarks: dict, mongo: MongoResource) -> dg.AssetCheckResult:
    """Every query of the suite is served by an IXSCAN of the index meant for it, as the server
    plans it now. Speedups are timings and are reported by the asset, not asserted here."""
    suite = [Query(**q) for q in index_benchmarks["suite"]]
    plans = plan_report(mongo.hospitalizations(), suite)
    wrong = [p for p in plans if not p["ok"]]
    lines = ["| query | intended index | plan | index used |", "|---|---|---|---|"]
    lines += [f"| {p['query']} | {p['intended_index']} | {p['stage']} | {p['index'] or ''} |" for p in plans]
    return dg.AssetCheckResult(
        passed=bool(plans) and not wrong,
        metadata={"queries": len(plans), "not_on_their_index": dg.MetadataValue.json([p["query"] for p in wrong]),
                  "plans": dg.MetadataValue.md("\n".join(lines))},
        description=None if not wrong else f"{len(wrong)} of {len(plans)} queries do not use their index: "
                                           + ", ".join(f"{p['query']} ({p['stage']})" for p in wrong),
    )
