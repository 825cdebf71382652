"""mongo_hospitalizations: the nested documents, written in batches, idempotently."""


import datetime as dt
import time

import dagster as dg
from pymongo import UpdateOne
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError

from healthcare_assets import audit, scans, staging
from healthcare_assets.defs.quality import quality_report
from healthcare_assets.resources.mongo import MongoResource
from healthcare_assets.schema import DOCUMENT_JSON_SCHEMA, document_body, to_document
from healthcare_assets.staging import StagedFrame, sample_rows

LOAD_BATCH = 5_000
SAMPLE_SIZE = 100
DUPLICATE_KEY = 11000


class DocumentRejectedError(RuntimeError):
    pass


def prepare_collection(collection: Collection) -> None:
    """Create the collection with its $jsonSchema validator (or refresh the validator)."""
    db = collection.database
    options = {"validator": {"$jsonSchema": DOCUMENT_JSON_SCHEMA}, "validationLevel": "strict",
               "validationAction": "error"}
    if collection.name in db.list_collection_names():
        db.command("collMod", collection.name, **options)
    else:
        db.create_collection(collection.name, **options)
    collection.create_index("metadata.sources")  # provenance, erasure
    collection.create_index("patient_id")  # a patient's records (GDPR), and whole-collection passes (scans)


def insert_new(collection: Collection, docs: list[dict]) -> tuple[int, list[str]]:
    """Insert what is not there yet; return (inserted, ids that already existed).

    The record key is the _id, so the server's unique index makes a re-run a no-op per row; a
    plain unordered insert_many is several times faster than upserts on the embedded server."""
    try:
        return len(collection.insert_many(docs, ordered=False).inserted_ids), []
    except BulkWriteError as exc:
        errors = exc.details["writeErrors"]
        rejected = [e for e in errors if e["code"] != DUPLICATE_KEY]
        if rejected:
            first = docs[rejected[0]["index"]]
            raise DocumentRejectedError(
                f"{len(rejected)} documents rejected by MongoDB; the first is source line "
                f"{first['metadata']['source_line']} ({first['metadata']['source']['name']}): "
                f"{rejected[0]['errmsg']}"
            ) from None
        return exc.details["nInserted"], [docs[e["index"]]["_id"] for e in errors]


def add_source(collection: Collection, ids: list[str], source_sha256: str) -> int:
    """Record one more source file on documents that already existed; returns how many changed."""
    requests = [UpdateOne({"_id": i, "metadata.sources": {"$ne": source_sha256}},
                          {"$addToSet": {"metadata.sources": source_sha256}}) for i in ids]
    return collection.bulk_write(requests, ordered=False).modified_count if requests else 0


@dg.asset(
    group_name="mongodb",
    kinds={"mongodb"},
    deps=[quality_report],
    retry_policy=dg.RetryPolicy(max_retries=3, delay=2, backoff=dg.Backoff.EXPONENTIAL),
)
def mongo_hospitalizations(context: dg.AssetExecutionContext, cleaned_frame: StagedFrame,
                           mongo: MongoResource) -> dg.Output[dict]:
    """One document per hospitalization in the client's nested model, keyed by the record key:
    loading a file again writes nothing new, and a file overlapping a loaded one adds only its
    new rows (the existing documents get the new file added to metadata.sources)."""
    collection = mongo.hospitalizations()
    prepare_collection(collection)
    erased = audit.erased_patient_ids(collection.database)  # GDPR: never load them again
    sha = cleaned_frame.source.sha256
    started = time.perf_counter()
    inserted = already = sources_added = skipped_erased = 0
    if scans.count(collection, {"metadata.sources": sha}) == cleaned_frame.rows:
        context.log.info(f"{cleaned_frame.source.name} ({sha[:12]}) is already loaded: nothing to write")
        already = cleaned_frame.rows
    else:
        source = cleaned_frame.source.as_metadata()
        created_at = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
        for rows in staging.row_batches(cleaned_frame.path, LOAD_BATCH):
            docs = [to_document(row, source, created_at) for row in rows if row["patient_id"] not in erased]
            skipped_erased += len(rows) - len(docs)
            new, existing = insert_new(collection, docs) if docs else (0, [])
            inserted += new
            already += len(existing)
            sources_added += add_source(collection, existing, sha)
            done = inserted + already + skipped_erased
            elapsed = time.perf_counter() - started
            context.log.info(f"wrote {done:,} of {cleaned_frame.rows:,} rows ({100 * done / cleaned_frame.rows:.0f}%), "
                             f"{inserted:,} new, {done / elapsed:,.0f} rows/s")
    elapsed = time.perf_counter() - started
    counts = cleaned_frame.counts
    summary = {
        "source_sha256": sha, "source_name": cleaned_frame.source.name, "cleaned_path": cleaned_frame.path,
        "rows_in": counts["rows_in"], "rows_quarantined": counts["rows_quarantined"],
        "duplicates_removed": counts["duplicates_removed"], "rows_erased_patients": skipped_erased,
        "rows_loaded": cleaned_frame.rows - skipped_erased,
        "documents_inserted": inserted, "documents_already_present": already,
        "documents_given_this_source": sources_added,
    }
    audit.record(collection.database, "load", f"{collection.database.name}.{collection.name}", inserted,
                 source_sha256=sha, source_name=cleaned_frame.source.name, already_present=already)
    return dg.Output(summary, metadata={
        **{k: v for k, v in summary.items() if k != "cleaned_path"},
        "dagster/row_count": collection.estimated_document_count(),
        "collection": f"{collection.database.name}.{collection.name}",
        "server": mongo.server_label(),
        "load_seconds": round(elapsed, 2),
        "rows_per_second": round(cleaned_frame.rows / elapsed) if elapsed else 0,
    })


@dg.asset_check(asset=mongo_hospitalizations, blocking=True)
def document_count_matches_cleaned_rows(mongo_hospitalizations: dict, mongo: MongoResource) -> dg.AssetCheckResult:
    """Every cleaned row of this file is one document, no more, no less."""
    found = scans.count(mongo.hospitalizations(), {"metadata.sources": mongo_hospitalizations["source_sha256"]})
    expected = mongo_hospitalizations["rows_loaded"]
    return dg.AssetCheckResult(passed=found == expected, metadata={"expected": expected, "documents": found})


@dg.asset_check(asset=mongo_hospitalizations, blocking=True)
def sampled_documents_match_source_rows(mongo_hospitalizations: dict, mongo: MongoResource) -> dg.AssetCheckResult:
    """100 random cleaned rows, read back from MongoDB, equal their source field by field."""
    erased = audit.erased_patient_ids(mongo.db())
    rows = [r for r in sample_rows(mongo_hospitalizations["cleaned_path"], SAMPLE_SIZE,
                                   mongo_hospitalizations["source_sha256"]) if r["patient_id"] not in erased]
    found = {d["_id"]: d for d in mongo.hospitalizations().find({"_id": {"$in": [r["record_key"] for r in rows]}})}
    mismatches = []
    for row in rows:
        doc = found.get(row["record_key"])
        if doc is None:
            mismatches.append({"line": row["line_number"], "parts": ["missing document"]})
            continue
        differing = [part for part, value in document_body(row).items() if doc.get(part) != value]
        if differing:
            mismatches.append({"line": row["line_number"], "parts": differing})
        elif mongo_hospitalizations["source_sha256"] not in doc["metadata"]["sources"]:
            mismatches.append({"line": row["line_number"], "parts": ["metadata.sources"]})
    return dg.AssetCheckResult(passed=not mismatches,
                               metadata={"sampled": len(rows), "mismatches": dg.MetadataValue.json(mismatches[:20])})


@dg.asset_check(asset=mongo_hospitalizations, blocking=True)
def documents_pass_validator(mongo: MongoResource) -> dg.AssetCheckResult:
    """No document in the collection breaks the $jsonSchema (including any written around it)."""
    invalid = scans.count(mongo.hospitalizations(), {"$nor": [{"$jsonSchema": DOCUMENT_JSON_SCHEMA}]})
    return dg.AssetCheckResult(passed=invalid == 0, metadata={"invalid_documents": invalid})
