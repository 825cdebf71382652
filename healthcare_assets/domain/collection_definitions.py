"""The options and secondary indexes of the deployment's collections, defined once: the code that
creates the collections reads them here, and so does a restore, which never takes options, validators
or indexes from a backup (a backup's metadata is only checked against these, see backup/catalog)."""

from __future__ import annotations

from healthcare_assets.domain.schema import DOCUMENT_JSON_SCHEMA
from healthcare_assets.plumbing import scans

# the hospitalizations: every document fits the schema, checked by the server on every write
HOSPITALIZATION_OPTIONS = {"validator": {"$jsonSchema": DOCUMENT_JSON_SCHEMA}, "validationLevel": "strict",
                           "validationAction": "error"}
# a file's documents range by range (per-file checks, the release, erasure by file), and a
# patient's records (GDPR) and whole-collection passes (scans)
HOSPITALIZATION_INDEXES = ([("metadata.sources", 1), ("patient_id", 1)], [(scans.FIELD, 1)])
# the release's stays: an erasure's increments, and its patients' stays
RELEASE_STAY_INDEXES = ([("inc", 1)], [("p", 1)])
# the analysts' copy: slices by its keyed _id (scans)
COPY_INDEXES = (scans.COPY_INDEX,)
# a key vault: one data key per alt name, even when two processes create it at once
KEY_VAULT_INDEX = {"keys": [("keyAltNames", 1)], "unique": True,
                   "partialFilterExpression": {"keyAltNames": {"$exists": True}}}
