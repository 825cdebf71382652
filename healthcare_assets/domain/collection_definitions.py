"""The options and secondary indexes of the deployment's collections, defined once: read by the code that creates the
collections and by a restore, which never takes them from a backup (only checks a backup's against these)."""

from __future__ import annotations

from pymongo.collection import Collection

from healthcare_assets.domain.schema import DOCUMENT_JSON_SCHEMA
from healthcare_assets.plumbing import document_counts, scans

# Passes over many documents slice a keyed hash by its hex digits (plumbing/scans.py): the stays by patient_id, the
# analysts' copy by its keyed _id through COPY_INDEX (for a range on the plain _id index the embedded server's planner
# scans the whole collection); a file's documents through the index on metadata.sources, at the file's cost.
STAYS_KEY = ("patient_id", 64)
COPY_KEY = ("_id", 32)
COPY_INDEX = [("_id", 1), ("medical_condition", 1)]

# the hospitalizations: every document fits the schema, checked by the server on every write
HOSPITALIZATION_OPTIONS = {"validator": {"$jsonSchema": DOCUMENT_JSON_SCHEMA}, "validationLevel": "strict",
                           "validationAction": "error"}
# a file's documents range by range (per-file checks, the release, erasure by file), and a
# patient's records (GDPR) and whole-collection passes (scans)
HOSPITALIZATION_INDEXES = ([("metadata.sources", 1), ("patient_id", 1)], [(STAYS_KEY[0], 1)])
# the release's stays: an erasure's increments, and its patients' stays
RELEASE_STAY_INDEXES = ([("inc", 1)], [("p", 1)])
# the analysts' copy: slices by its keyed _id (scans)
COPY_INDEXES = (COPY_INDEX,)
# a key vault: one data key per alt name, even when two processes create it at once
KEY_VAULT_INDEX = {"keys": [("keyAltNames", 1)], "unique": True,
                   "partialFilterExpression": {"keyAltNames": {"$exists": True}}}


def stays_ranges(collection: Collection) -> list[dict]:
    return scans.ranges(document_counts.known(collection), *STAYS_KEY)


def file_ranges(source_sha256: str, documents: int) -> list[dict]:
    return [{"metadata.sources": source_sha256, **match} for match in scans.ranges(documents, *STAYS_KEY)]


def copy_ranges(copy: Collection) -> list[dict]:
    return scans.ranges(copy.estimated_document_count(), *COPY_KEY)
