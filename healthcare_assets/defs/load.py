"""mongo_hospitalizations: the nested documents, written in batches, idempotently (domain/loading.py)."""

import time

import dagster as dg
from pymongo.collection import Collection

from healthcare_assets.defs import verdicts
from healthcare_assets.defs.previews import check_specs
from healthcare_assets.defs.quality import quality_report
from healthcare_assets.domain import audit, loading, migration
from healthcare_assets.domain.master_keys import MasterKeys
from healthcare_assets.plumbing import document_counts
from healthcare_assets.plumbing.keys import KeysResource
from healthcare_assets.plumbing.mongo import MongoResource
from healthcare_assets.plumbing.staging import StagedFrame

# One load at a time, never during a backup (mongo_backup takes this pool too): a backup never holds half a file.
WRITES_POOL = "mongo_writes"


def require_keyed(collection: Collection) -> None:
    """Refuse a collection that may hold unkeyed _ids: every row would be added again under its keyed id."""
    if not migration.is_keyed(collection):
        raise dg.Failure(description=(
            f"{collection.full_name} holds documents whose _id is the unkeyed hash of their row (loaded by an "
            "earlier version, or restored from its backup); loading now would add every row again. Run the job "
            "rekey_existing_documents once (`dagster job execute -m healthcare_assets.definitions -j "
            "rekey_existing_documents`), then load again."), allow_retries=False)


@dg.asset(group_name="mongodb", kinds={"mongodb"}, deps=[quality_report], pool=WRITES_POOL,
          retry_policy=dg.RetryPolicy(max_retries=3, delay=2, backoff=dg.Backoff.EXPONENTIAL))
def mongo_hospitalizations(context: dg.AssetExecutionContext, cleaned_frame: StagedFrame,
                           mongo: MongoResource, keys: KeysResource) -> dg.Output[dict]:
    """One document per hospitalization in the client's nested model, keyed by the record key:
    loading a file again writes nothing new, and a file overlapping a loaded one adds only its
    new rows (the existing documents get the new file added to metadata.sources)."""
    collection = mongo.hospitalizations()
    indexed = loading.prepare_collection(collection)
    require_keyed(collection)
    sha = cleaned_frame.source.sha256
    started = time.perf_counter()
    if indexed and loading.file_documents(collection, sha, cleaned_frame.rows) == cleaned_frame.rows:
        context.log.info(f"{cleaned_frame.source.name} ({sha[:12]}) is already loaded: nothing to write")
        tally = loading.LoadTally(already=cleaned_frame.rows)
    else:
        tally = loading.load_file(collection, MasterKeys.of(keys), cleaned_frame, context.log.info)
    insert_s = time.perf_counter() - started
    if not indexed:
        loading.create_indexes(collection)
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
        **{k: v for k, v in summary.items() if k != "cleaned_path"}, "dagster/row_count": documents,
        "collection": f"{collection.database.name}.{collection.name}", "server": mongo.server_label(),
        "load_seconds": round(elapsed, 2), "insert_seconds": round(insert_s, 2),
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
def loaded_file_checks(context: dg.AssetCheckExecutionContext, mongo_hospitalizations: dict, mongo: MongoResource,
                       keys: KeysResource):
    """The three checks on this file's documents, in one pass: their cost follows the file, not the collection."""
    collection, sha = mongo.hospitalizations(), mongo_hospitalizations["source_sha256"]
    expected = mongo_hospitalizations["rows_loaded"]
    found, invalid, first_problems = loading.file_schema_problems(collection, sha, expected)
    page = verdicts.RunPage(context.run.run_id)  # the run's quality page, written by quality_report
    yield verdicts.verdict("document_count_matches_cleaned_rows", found == expected,
                           {"expected": expected, "documents": found},
                           verdicts.Why(f"{found:,} documents of this file are in the collection, {expected:,} expected",
                                        "exactly one per cleaned row", verdicts.FIXED, page.path), page)
    sample, mismatches = loading.sample_mismatches(collection, MasterKeys.of(keys), mongo_hospitalizations)
    server_invalid = loading.invalid_for_the_server(collection, sample)
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

