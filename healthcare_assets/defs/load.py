"""mongo_hospitalizations: the nested documents, written in batches, idempotently."""


import datetime as dt
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import dagster as dg
from pymongo import UpdateOne
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError

from healthcare_assets.defs import verdicts
from healthcare_assets.defs.quality import quality_report
from healthcare_assets.domain import audit, encryption, migration
from healthcare_assets.domain.collection_definitions import (
    HOSPITALIZATION_INDEXES,
    HOSPITALIZATION_OPTIONS,
)
from healthcare_assets.domain.previews import check_specs
from healthcare_assets.domain.release.bookkeeping import loading
from healthcare_assets.domain.schema import (
    DOCUMENT_JSON_SCHEMA,
    document_body,
    schema_violations,
    to_document,
)
from healthcare_assets.plumbing import document_counts, scans, staging
from healthcare_assets.plumbing.idempotent_inserts import DUPLICATE_KEY
from healthcare_assets.plumbing.mongo import MongoResource
from healthcare_assets.plumbing.staging import StagedFrame, sample_rows

LOAD_BATCH = 5_000
SAMPLE_SIZE = 100
# One load at a time per deployment, and never during a backup (mongo_backup takes this pool too),
# so a backup never holds half a file.
WRITES_POOL = "mongo_writes"


class DocumentRejectedError(RuntimeError):
    pass


def prepare_collection(collection: Collection) -> bool:
    """Create the collection with its $jsonSchema validator (or refresh the validator). Returns
    whether it existed: a new collection gets its secondary indexes after its first load, in one
    pass, instead of maintaining them insert by insert (the larger cost on the embedded server).
    Nothing here reads documents: on the embedded server even finding one reads them all."""
    db = collection.database
    options = HOSPITALIZATION_OPTIONS
    existed = collection.name in db.list_collection_names()
    if existed:
        db.command("collMod", collection.name, **options)
        create_indexes(collection)  # no-ops when they exist
    else:
        db.create_collection(collection.name, **options)
        document_counts.start(collection)
        migration.mark_keyed(collection)  # every _id it will hold is a keyed record key
    return existed


def require_keyed(collection: Collection) -> None:
    """Refuse, before writing anything, a collection that may hold unkeyed _ids: every row of the
    file would be added again beside them, under its keyed id."""
    if not migration.is_keyed(collection):
        raise dg.Failure(description=(
            f"{collection.full_name} holds documents whose _id is the unkeyed hash of their row (loaded by an "
            "earlier version, or restored from its backup); loading now would add every row again. Run the job "
            "rekey_existing_documents once (`dagster job execute -m healthcare_assets.definitions -j "
            "rekey_existing_documents`), then load again."), allow_retries=False)


def create_indexes(collection: Collection) -> None:
    for keys in HOSPITALIZATION_INDEXES:
        collection.create_index(keys)
    if "metadata.sources_1" in collection.index_information():
        collection.drop_index("metadata.sources_1")  # the compound index above starts with it


def insert_new(collection: Collection, docs: list[dict]) -> tuple[int, list[str]]:
    """Insert what is not there yet; return (inserted, ids that already existed).

    The record key is the _id, so the server's unique index makes a re-run a no-op per row; a
    plain unordered insert_many is several times faster than upserts on the embedded server.
    Validation is bypassed here and done by the blocking check on exactly this file's documents:
    the documents come from rows that passed the quality gate, and the server's per-document
    validation would cost a third of the load."""
    try:
        return len(collection.insert_many(docs, ordered=False, bypass_document_validation=True).inserted_ids), []
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


def file_documents(collection: Collection, source_sha256: str, rows: int) -> int:
    """The documents that came in one file, counted range by range over the file's index slice."""
    return scans.count(collection, matches=scans.file_ranges(source_sha256, rows))


def add_source(collection: Collection, ids: list[str], source_sha256: str) -> int:
    """Record one more source file on documents that already existed; returns how many changed."""
    requests = [UpdateOne({"_id": i, "metadata.sources": {"$ne": source_sha256}},
                          {"$addToSet": {"metadata.sources": source_sha256}}) for i in ids]
    return collection.bulk_write(requests, ordered=False).modified_count if requests else 0


@dataclass
class LoadTally:
    inserted: int = 0
    already: int = 0
    sources_added: int = 0
    skipped_erased: int = 0

    @property
    def done(self) -> int:
        return self.inserted + self.already + self.skipped_erased


def build_documents(rows: list[dict], source: dict, created_at: dt.datetime, erased: set[str],
                    cipher: encryption.FieldCipher) -> list[dict]:
    """The batch's documents, their direct identifiers encrypted, each checked against the
    collection's schema before it is written (the insert bypasses the server's validation)."""
    docs = [cipher.encrypt_document(to_document(row, source, created_at))
            for row in rows if row["patient_id"] not in erased]
    for doc in docs:
        problems = schema_violations(doc)
        if problems:
            raise DocumentRejectedError(f"source line {doc['metadata']['source_line']} ({source['name']}) "
                                        f"does not fit the document model: {'; '.join(problems[:3])}")
    return docs


def load_file(context: dg.AssetExecutionContext, collection: Collection, staged: StagedFrame) -> LoadTally:
    """Insert the file's documents batch by batch. Building a batch (Python, this process) overlaps
    writing the previous one (the server), so the load runs at the server's insert rate."""
    erased = audit.erased_patient_ids(collection.database)  # GDPR: never load them again
    source, sha = staged.source.as_metadata(), staged.source.sha256
    created_at = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
    tally, started = LoadTally(), time.perf_counter()
    cipher = encryption.cipher(collection, create=True)

    def write(docs: list[dict]) -> None:
        new, existing = insert_new(collection, docs) if docs else (0, [])
        tally.inserted += new
        tally.already += len(existing)
        tally.sources_added += add_source(collection, existing, sha)

    def progress() -> None:  # rows written so far (the batch being written is not counted yet)
        context.log.info(f"wrote {tally.done:,} of {staged.rows:,} rows, {tally.inserted:,} new, "
                         f"{tally.done / (time.perf_counter() - started):,.0f} rows/s")

    with loading(collection.database, sha), ThreadPoolExecutor(max_workers=1) as writer:
        pending = None
        for rows in staging.row_batches(staged.path, LOAD_BATCH):
            docs = build_documents(rows, source, created_at, erased, cipher)
            if pending:
                pending.result()
            tally.skipped_erased += len(rows) - len(docs)
            pending = writer.submit(write, docs)
            progress()
        if pending:
            pending.result()
    progress()
    cipher.close()
    return tally


@dg.asset(
    group_name="mongodb",
    kinds={"mongodb"},
    deps=[quality_report],
    pool=WRITES_POOL,
    retry_policy=dg.RetryPolicy(max_retries=3, delay=2, backoff=dg.Backoff.EXPONENTIAL),
)
def mongo_hospitalizations(context: dg.AssetExecutionContext, cleaned_frame: StagedFrame,
                           mongo: MongoResource) -> dg.Output[dict]:
    """One document per hospitalization in the client's nested model, keyed by the record key:
    loading a file again writes nothing new, and a file overlapping a loaded one adds only its
    new rows (the existing documents get the new file added to metadata.sources)."""
    collection = mongo.hospitalizations()
    indexed = prepare_collection(collection)
    require_keyed(collection)
    sha = cleaned_frame.source.sha256
    started = time.perf_counter()
    if indexed and file_documents(collection, sha, cleaned_frame.rows) == cleaned_frame.rows:
        context.log.info(f"{cleaned_frame.source.name} ({sha[:12]}) is already loaded: nothing to write")
        tally = LoadTally(already=cleaned_frame.rows)
    else:
        tally = load_file(context, collection, cleaned_frame)
    insert_s = time.perf_counter() - started
    if not indexed:
        create_indexes(collection)
    elapsed = time.perf_counter() - started
    documents = document_counts.adjust(collection, tally.inserted)
    counts = cleaned_frame.counts
    summary = {
        "source_sha256": sha, "source_name": cleaned_frame.source.name, "cleaned_path": cleaned_frame.path,
        "rows_in": counts["rows_in"], "rows_quarantined": counts["rows_quarantined"],
        "duplicates_removed": counts["duplicates_removed"], "rows_erased_patients": tally.skipped_erased,
        "rows_loaded": cleaned_frame.rows - tally.skipped_erased,
        "documents_inserted": tally.inserted, "documents_already_present": tally.already,
        "documents_given_this_source": tally.sources_added,
    }
    audit.record(collection.database, "load", f"{collection.database.name}.{collection.name}", tally.inserted,
                 source_sha256=sha, source_name=cleaned_frame.source.name, already_present=tally.already)
    return dg.Output(summary, metadata={
        **{k: v for k, v in summary.items() if k != "cleaned_path"},
        "dagster/row_count": documents,
        "collection": f"{collection.database.name}.{collection.name}",
        "server": mongo.server_label(),
        "load_seconds": round(elapsed, 2),
        "insert_seconds": round(insert_s, 2),
        "index_build_seconds": round(elapsed - insert_s, 2),
        "rows_per_second": round(cleaned_frame.rows / elapsed) if elapsed else 0,
    })


LOAD_CHECKS = {
    "document_count_matches_cleaned_rows": "every cleaned row of this file is one document, no more, no less",
    "documents_pass_validator": "every document of this file fits the collection's $jsonSchema, and the "
                                "server agrees on a sample",
    "sampled_documents_match_source_rows": "100 random cleaned rows, read back from MongoDB and decrypted, "
                                           "equal their source field by field",
}


@dg.multi_asset_check(specs=check_specs(mongo_hospitalizations, LOAD_CHECKS))
def loaded_file_checks(context: dg.AssetCheckExecutionContext, mongo_hospitalizations: dict, mongo: MongoResource):
    """The three checks on this file's documents, in one pass over them (range by range over the
    file's slice of the index): their cost follows the file, not the collection."""
    collection, sha = mongo.hospitalizations(), mongo_hospitalizations["source_sha256"]
    found = invalid = 0
    first_problems: list[str] = []
    for doc in scans.aggregate(collection, [], scans.file_ranges(sha, mongo_hospitalizations["rows_loaded"])):
        found += 1
        problems = schema_violations(doc)
        invalid += bool(problems)
        first_problems += [f"source line {doc.get('metadata', {}).get('source_line')}: {p}" for p in problems][:5]
    expected = mongo_hospitalizations["rows_loaded"]
    page = verdicts.RunPage(context.run.run_id)  # the run's quality page, written by quality_report
    yield verdicts.verdict("document_count_matches_cleaned_rows", found == expected,
                           {"expected": expected, "documents": found},
                           verdicts.Why(f"{found:,} documents of this file are in the collection, {expected:,} expected",
                                        "exactly one per cleaned row", verdicts.FIXED, page.path), page)
    sample, mismatches = sample_mismatches(collection, mongo_hospitalizations)
    # Two $match stages: in one filter with the $nor, the embedded server's planner drops the _id
    # index and validates the whole collection.
    server_invalid = len(list(collection.aggregate([{"$match": {"_id": {"$in": [d["_id"] for d in sample]}}},
                                                    {"$match": {"$nor": [{"$jsonSchema": DOCUMENT_JSON_SCHEMA}]}}])))
    yield verdicts.verdict(
        "documents_pass_validator", invalid == 0 and server_invalid == 0,
        {"invalid_documents": invalid, "first_problems": dg.MetadataValue.json(first_problems[:5]),
         "sample_invalid_for_the_server": server_invalid},
        verdicts.Why(f"{invalid:,} documents of this file break the collection's schema ({server_invalid:,} of "
                     f"{len(sample):,} sampled for the server)", "none may",
                     "none: DOCUMENT_JSON_SCHEMA in healthcare_assets/domain/schema.py", page.path), page)
    yield verdicts.verdict(
        "sampled_documents_match_source_rows", not mismatches,
        {"sampled": len(sample), "mismatches": dg.MetadataValue.json(mismatches[:20])},
        verdicts.Why(f"{len(mismatches):,} of {len(sample):,} sampled documents differ from their cleaned row",
                     "none may", verdicts.FIXED, page.path), page)


def sample_mismatches(collection: Collection, loaded: dict) -> tuple[list[dict], list[dict]]:
    """The sampled documents, and how each differs from its cleaned row (if it does)."""
    erased = audit.erased_patient_ids(collection.database)
    rows = [r for r in sample_rows(loaded["cleaned_path"], SAMPLE_SIZE, loaded["source_sha256"])
            if r["patient_id"] not in erased]
    found = {d["_id"]: d for d in collection.find({"_id": {"$in": [r["record_key"] for r in rows]}})}
    cipher, mismatches = encryption.cipher(collection), []
    for row in rows:
        doc = found.get(row["record_key"])
        if doc is None:
            mismatches.append({"line": row["line_number"], "parts": ["missing document"]})
            continue
        clear = cipher.decrypt_document(doc)
        differing = [part for part, value in document_body(row).items() if clear.get(part) != value]
        if differing:
            mismatches.append({"line": row["line_number"], "parts": differing})
        elif loaded["source_sha256"] not in doc["metadata"]["sources"]:
            mismatches.append({"line": row["line_number"], "parts": ["metadata.sources"]})
    return list(found.values()), mismatches
