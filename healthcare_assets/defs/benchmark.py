"""index_benchmarks: what the client's indexes buy on the loaded collection, measured.

The client's seven indexes are created once; then a fixed suite of their questions runs with the
index and forced to a collection scan, and once more by scanning the source CSV with pandas (their
"before"). Timings are reported, never asserted; the blocking check asserts the plans.

Why the indexed runs carry no hint: on the embedded server (secantusdb 0.7) `hint(<index>)` walks
the whole index and filters in Python, as slow as a COLLSCAN (1.6 s vs 1 ms for a name lookup on
55k documents), while the planner's own choice uses the index bounds. So the planner chooses, and
the check proves it chose the intended index. `hint({"$natural": 1})` does force a real COLLSCAN.
"""

import datetime as dt
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import dagster as dg
import numpy as np
import pandas as pd
from bson import json_util
from pymongo import IndexModel
from pymongo.collection import Collection

from healthcare_assets.cleaning import normalize_hospitals, normalize_names
from healthcare_assets.defs.anonymize import anonymized_view
from healthcare_assets.defs.load import mongo_hospitalizations
from healthcare_assets.resources import settings
from healthcare_assets.resources.mongo import MongoResource
from healthcare_assets.schema import CSV_COLUMNS, DATE_FORMAT
from healthcare_assets.sources import SourceReadError, open_source
from healthcare_assets.staging import CHUNK_ROWS

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


def query_suite(sample: dict) -> list[tuple[Query, CsvQuestion]]:
    """The fixed suite, its parameters taken from one loaded document so every value exists.

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
         CsvQuestion(["name"], lambda c: normalize_names(c["name"]) == name)),
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


def _latency(samples: list[float]) -> dict:
    ms = [s * 1000 for s in samples]
    return {"median_ms": round(statistics.median(ms), 3), "p95_ms": round(float(np.percentile(ms, 95)), 3),
            "runs": len(ms)}


def _timed(repeats: int, run: Callable[..., int], *args, **kwargs) -> tuple[dict, int]:
    samples, rows = [], 0
    for _ in range(repeats):
        started = time.perf_counter()
        rows = run(*args, **kwargs)
        samples.append(time.perf_counter() - started)
    return _latency(samples), rows


def scan_csv(uri: str, question: CsvQuestion) -> int:
    """Answer one question by reading the whole CSV with pandas, chunk by chunk (bounded memory)."""
    stream, _ = open_source(uri)
    headers = [CSV_COLUMNS[c] for c in question.columns]
    with stream:
        chunks = pd.read_csv(stream, usecols=headers, dtype=str, keep_default_na=False, chunksize=CHUNK_ROWS)
        matched = [chunk.rename(columns={v: k for k, v in CSV_COLUMNS.items()})
                   .pipe(lambda c: c[question.mask(c)]) for chunk in chunks]
    if not matched:  # a header-only file
        return 0
    return len(question.finish(pd.concat(matched)))


# ---- reporting -------------------------------------------------------------------------------

def _ratio(slow: float | None, fast: float | None) -> float | None:
    return round(slow / fast, 1) if slow and fast else None


def markdown_table(results: list[dict]) -> str:
    lines = [("| query | index | plan | keys / docs examined | indexed median / p95 ms | COLLSCAN median / p95 ms "
              "| speedup | pandas CSV scan median ms | rows (pandas) |"),
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        ix, scan, csv = r["indexed"], r["collscan"], r["pandas"]
        csv_ms, csv_rows = (f"{csv['median_ms']:,.1f}", f"{csv['rows']:,}") if csv else ("n/a", "n/a")
        lines.append(
            f"| {r['name']} | {r['index']} | {ix['stage']} {ix['index'] or ''} vs {scan['stage']} "
            f"| {ix['keys_examined']:,} / {ix['docs_examined']:,} vs {scan['docs_examined']:,} "
            f"| {ix['median_ms']:,.1f} / {ix['p95_ms']:,.1f} | {scan['median_ms']:,.0f} / {scan['p95_ms']:,.0f} "
            f"| {r['speedup']}x | {csv_ms} | {r['rows']:,} ({csv_rows}) |")
    return "\n".join(lines)


def write_chart(results: list[dict], documents: int, path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and in Dagster steps
    import matplotlib.pyplot as plt

    names = [r["name"] for r in results]
    series = [("with index", [r["indexed"]["median_ms"] for r in results]),
              ("forced COLLSCAN", [r["collscan"]["median_ms"] for r in results]),
              ("pandas CSV scan", [r["pandas"]["median_ms"] if r["pandas"] else 0 for r in results])]
    y = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(9, 0.6 * len(names) + 1.5))
    for offset, (label, values) in zip((-0.27, 0, 0.27), series):
        ax.barh(y + offset, values, height=0.26, label=label)
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("median latency, ms (log scale)")
    ax.set_title(f"Index benchmarks on {documents:,} documents")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


class IndexBenchmarkConfig(dg.Config):
    repeats: int = 7  # timed runs of each query through its index
    scan_repeats: int = 5  # timed full scans per query (forced COLLSCAN, pandas): ~1.5 s each per 55k rows


# Last in the chain: gated by the privacy checks, and its timings never share the server with the
# analysts' copy being built.
@dg.asset(group_name="mongodb", kinds={"mongodb"}, deps=[mongo_hospitalizations, anonymized_view])
def index_benchmarks(context: dg.AssetExecutionContext, config: IndexBenchmarkConfig,
                     mongo: MongoResource) -> dg.Output[dict]:
    """The client's indexes on the collection, and what they buy: each query of their suite timed
    with its index and forced to a collection scan (median and p95), its plan and the keys and
    documents it examined, and the same question answered by scanning the source CSV with pandas."""
    collection = mongo.hospitalizations()
    indexes, build_seconds = ensure_indexes(collection)
    context.log.info(f"indexes ready in {build_seconds:.1f} s: {[i['name'] for i in indexes if i['built_now']]} built")
    # The first document in natural order is the first row loaded: the same file gives the same
    # parameters. It is also the one place the source CSV's location is recorded.
    sample = collection.find_one()
    if sample is None:
        raise dg.Failure(f"{collection.full_name} is empty: nothing to benchmark")
    csv_uri = sample["metadata"]["source"]["uri"]
    documents = collection.estimated_document_count()

    suite = query_suite(sample)
    results = []
    for query, question in suite:
        indexed_plan = explain(collection, query)  # also warms the path up
        scan_plan = explain(collection, query, hint=NATURAL)
        indexed, rows = _timed(config.repeats, query.run, collection)
        scan, _ = _timed(config.scan_repeats, query.run, collection, hint=NATURAL)
        try:
            pandas_scan, pandas_rows = _timed(config.scan_repeats, scan_csv, csv_uri, question)
            pandas_result = {**pandas_scan, "rows": pandas_rows}
        except (SourceReadError, OSError) as exc:  # the file moved or is gone: report, don't fail
            context.log.warning(f"pandas baseline skipped: {exc}")
            pandas_result = None
        results.append({
            "name": query.name, "question": query.question, "index": query.index, "rows": rows,
            "query": query.public(),
            "indexed": {**indexed_plan, **indexed}, "collscan": {**scan_plan, **scan},
            "pandas": pandas_result,
            "speedup": _ratio(scan["median_ms"], indexed["median_ms"]),
            "speedup_vs_pandas": _ratio(pandas_result and pandas_result["median_ms"], indexed["median_ms"]),
        })
        context.log.info(f"{query.name}: {indexed['median_ms']:.1f} ms with {indexed_plan['stage']} "
                         f"{indexed_plan['index']}, {scan['median_ms']:.0f} ms forced COLLSCAN, {rows:,} rows")

    speedups = [r["speedup"] for r in results if r["speedup"]]
    report = {
        "collection": collection.full_name, "server": mongo.server_label(), "documents": documents,
        "csv": csv_uri, "repeats": config.repeats, "scan_repeats": config.scan_repeats,
        "indexes": indexes, "index_build_seconds": round(build_seconds, 2),
        "min_speedup": min(speedups, default=None), "queries": results,
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    reports = settings.reports_dir()
    reports.mkdir(parents=True, exist_ok=True)
    json_path, png_path = reports / "index_benchmarks.json", reports / "index_benchmarks.png"
    json_path.write_text(json_util.dumps(report, indent=2, json_options=json_util.RELAXED_JSON_OPTIONS))
    write_chart(results, documents, png_path)

    # The output keeps the real queries (the check asks the server about them again).
    value = {**report, "suite": [asdict(q) for q, _ in suite]}
    return dg.Output(value, metadata={
        "dagster/row_count": documents,
        "queries": dg.MetadataValue.md(markdown_table(results)),
        "min_speedup": report["min_speedup"],
        "median_speedup": statistics.median(speedups) if speedups else None,
        "index_build_seconds": report["index_build_seconds"],
        "indexes_built_now": dg.MetadataValue.json([i["name"] for i in indexes if i["built_now"]]),
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
