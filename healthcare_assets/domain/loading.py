"""A cleaned file's documents written idempotently, in batches, and read back for the checks on that file."""

import datetime as dt
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from pymongo import UpdateOne
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError

from healthcare_assets.domain import audit, collection_definitions, encryption, migration, schema
from healthcare_assets.domain.master_keys import MasterKeys
from healthcare_assets.domain.release.bookkeeping import loading
from healthcare_assets.plumbing import document_counts, scans, staging
from healthcare_assets.plumbing.idempotent_inserts import DUPLICATE_KEY, insert_keeping_existing
from healthcare_assets.plumbing.staging import StagedFrame, sample_rows

LOAD_BATCH = 5_000
SAMPLE_SIZE = 100


class DocumentRejectedError(RuntimeError):
    pass


def prepare_collection(collection: Collection) -> bool:
    """Whether it existed: a new collection gets its indexes after its first load, in one pass, not insert by insert
    (the larger cost on the embedded server). Reads no document: there even finding one reads them all."""
    db = collection.database
    options = collection_definitions.HOSPITALIZATION_OPTIONS
    existed = collection.name in db.list_collection_names()
    if existed:
        db.command("collMod", collection.name, **options)
        create_indexes(collection)  # no-ops when they exist
    else:
        db.create_collection(collection.name, **options)
        document_counts.start(collection)
        migration.mark_keyed(collection)  # every _id it will hold is a keyed record key
    return existed


def create_indexes(collection: Collection) -> None:
    for keys in collection_definitions.HOSPITALIZATION_INDEXES:
        collection.create_index(keys)
    if "metadata.sources_1" in collection.index_information():
        collection.drop_index("metadata.sources_1")  # the compound index above starts with it


def insert_new(collection: Collection, docs: list[dict]) -> tuple[int, list[str]]:
    """(inserted, ids that already existed): a re-run is a no-op per row. Validation is bypassed, done by the blocking
    check on this file's documents: the server's per-document validation would cost a third of the load."""
    existing: list[str] = []
    try:
        insert_keeping_existing(collection, docs, bypass_document_validation=True, existing=existing)
    except BulkWriteError as exc:
        rejected = [e for e in exc.details["writeErrors"] if e["code"] != DUPLICATE_KEY]
        first = docs[rejected[0]["index"]]
        raise DocumentRejectedError(
            f"{len(rejected)} documents rejected by MongoDB; the first is source line "
            f"{first['metadata']['source_line']} ({first['metadata']['source']['name']}): {rejected[0]['errmsg']}"
        ) from None
    return len(docs) - len(existing), existing


def file_documents(collection: Collection, source_sha256: str, rows: int) -> int:
    return scans.count(collection, collection_definitions.file_ranges(source_sha256, rows))


def add_source(collection: Collection, ids: list[str], source_sha256: str) -> int:
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
    """Each document checked against the schema before it is written (the insert bypasses the server's validation)."""
    docs = [cipher.encrypt_document(schema.to_document(row, source, created_at))
            for row in rows if row["patient_id"] not in erased]
    for doc in docs:
        if problems := schema.schema_violations(doc):
            raise DocumentRejectedError(f"source line {doc['metadata']['source_line']} ({source['name']}) "
                                        f"does not fit the document model: {'; '.join(problems[:3])}")
    return docs


def load_file(collection: Collection, keys: MasterKeys, staged: StagedFrame, log: Callable[[str], None]) -> LoadTally:
    """Building a batch overlaps writing the previous one, so the load runs at the server's insert rate."""
    erased = audit.erased_patient_ids(collection.database)  # GDPR: never load them again
    source, sha = staged.source.as_metadata(), staged.source.sha256
    created_at = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
    tally, started = LoadTally(), time.perf_counter()
    cipher = encryption.cipher(collection, keys, create=True)

    def write(docs: list[dict]) -> None:
        new, existing = insert_new(collection, docs) if docs else (0, [])
        tally.inserted += new
        tally.already += len(existing)
        tally.sources_added += add_source(collection, existing, sha)

    def progress() -> None:  # rows written so far (the batch being written is not counted yet)
        log(f"wrote {tally.done:,} of {staged.rows:,} rows, {tally.inserted:,} new, "
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


def file_schema_problems(collection: Collection, sha: str, rows: int) -> tuple[int, int, list[str]]:
    """One pass over a file's documents: how many there are, how many break the schema, and the first problems."""
    found = invalid = 0
    first_problems: list[str] = []
    for doc in scans.aggregate(collection, [], collection_definitions.file_ranges(sha, rows)):
        found += 1
        problems = schema.schema_violations(doc)
        invalid += bool(problems)
        first_problems += [f"source line {doc.get('metadata', {}).get('source_line')}: {p}" for p in problems][:5]
    return found, invalid, first_problems[:5]


def sample_mismatches(collection: Collection, keys: MasterKeys, loaded: dict) -> tuple[list[dict], list[dict]]:
    erased = audit.erased_patient_ids(collection.database)
    rows = [r for r in sample_rows(loaded["cleaned_path"], SAMPLE_SIZE, loaded["source_sha256"])
            if r["patient_id"] not in erased]
    found = {d["_id"]: d for d in collection.find({"_id": {"$in": [r["record_key"] for r in rows]}})}
    cipher, mismatches = encryption.cipher(collection, keys), []
    for row in rows:
        doc = found.get(row["record_key"])
        if doc is None:
            mismatches.append({"line": row["line_number"], "parts": ["missing document"]})
            continue
        clear = cipher.decrypt_document(doc)
        differing = [part for part, value in schema.document_body(row).items() if clear.get(part) != value]
        if differing:
            mismatches.append({"line": row["line_number"], "parts": differing})
        elif loaded["source_sha256"] not in doc["metadata"]["sources"]:
            mismatches.append({"line": row["line_number"], "parts": ["metadata.sources"]})
    return list(found.values()), mismatches


def invalid_for_the_server(collection: Collection, documents: list[dict]) -> int:
    """How many of these documents the server's own $jsonSchema check rejects. Two $match stages: in one filter with the
    $nor, the embedded server's planner drops the _id index and validates the whole collection."""
    return len(list(collection.aggregate([{"$match": {"_id": {"$in": [d["_id"] for d in documents]}}},
                                          {"$match": {"$nor": [{"$jsonSchema": schema.DOCUMENT_JSON_SCHEMA}]}}])))
