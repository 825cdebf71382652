"""Restoring a verified backup, and the restore drill's comparison of what was restored with the
source, document by document.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from bson.raw_bson import RawBSONDocument
from pymongo import IndexModel, MongoClient
from pymongo.collection import Collection
from pymongo.database import Database

from healthcare_assets.domain.backup.files import (
    INSERT_BATCH,
    raw_documents,
    read_ranges,
)
from healthcare_assets.domain.backup.reading import Opened, verify


class RestoreRefusedError(RuntimeError):
    pass


def _non_empty(client: MongoClient, db: str) -> list[str]:
    return [n for n in client[db].list_collection_names() if not n.startswith("system.")]


def _index_models(indexes: list[dict]) -> list[IndexModel]:
    return [IndexModel(list(ix["key"].items()), **{k: v for k, v in ix.items() if k not in ("v", "key", "ns")})
            for ix in indexes if ix["name"] != "_id_"]


def _insert(collection: Collection, batch: list[RawBSONDocument]) -> int:
    """Insert a batch as it was backed up. The server's validation is bypassed, as mongorestore
    --bypassDocumentValidation does: these documents were in the collection, and the backup's
    checksums say they are the same bytes; the validator is in force again for later writes.
    Raises on any document not inserted (insert_many reports no ids for raw documents)."""
    if batch:
        collection.insert_many(batch, ordered=False, bypass_document_validation=True)
    return len(batch)


def restore(backup: Opened, client: MongoClient, drop: bool = False, rename: dict[str, str] | None = None,
            log: Callable[[str], None] = lambda _: None) -> dict[str, int]:
    """Restore a verified backup: collections with their options (validators), their documents,
    then their indexes (built once, as mongorestore does), then the views. Refuses, before writing
    anything, a backup that does not verify and a target database that holds collections unless
    `drop`. `rename` maps a backed-up database to another (the restore drill's scratch databases).
    A collection backed up through a filter (the shared key vault) counts as busy when it holds
    documents the filter selects, and only those are replaced. Returns documents per
    "db.collection" of the target."""
    rename = rename or {}
    verify(backup)
    targets = {db: rename.get(db, db) for db in backup.manifest["databases"]}
    _clear_targets(backup, client, targets, drop)
    counts: dict[str, int] = {}
    views = []
    for db, coll, entry in backup.collections():
        meta, target = backup.metadata(db, coll), client[targets[db]]
        if entry["type"] == "view":
            views.append((target, coll, meta))
            continue
        inserted, indexes = _restore_collection(backup, db, coll, meta, target)
        counts[f"{targets[db]}.{coll}"] = inserted
        log(f"{targets[db]}.{coll}: {inserted:,} documents, {indexes} indexes")
    for target, coll, meta in views:
        target.create_collection(coll, **meta["options"])
        log(f"{target.name}.{coll}: view on {meta['options'].get('viewOn')}")
    return counts


def _clear_targets(backup: Opened, client: MongoClient, targets: dict[str, str], drop: bool) -> None:
    """Refuse target databases that hold collections, and shared collections that hold this
    deployment's documents, unless `drop`; with it, drop those databases and delete those documents."""
    shared = {(targets[db], coll): entry["filter"] for db, coll, entry in backup.collections() if "filter" in entry}
    busy = {target: found for target in set(targets.values()) - {db for db, _ in shared}
            if (found := _non_empty(client, target))}
    held = {(db, coll): n for (db, coll), match in shared.items() if (n := client[db][coll].count_documents(match))}
    if (busy or held) and not drop:
        raise RestoreRefusedError("refusing to restore into non-empty databases: " + "; ".join(
            [f"{db} holds {', '.join(sorted(names)[:5])}" for db, names in busy.items()]
            + [f"{db}.{coll} holds {n} of this deployment's documents" for (db, coll), n in held.items()])
            + ". Add --drop to replace them.")
    for target in busy:
        client.drop_database(target)
    for db, coll in held:
        client[db][coll].delete_many(shared[(db, coll)])


def _restore_collection(backup: Opened, db: str, coll: str, meta: dict, target: Database) -> tuple[int, int]:
    """One collection: created with its options, its documents inserted in batches, then its
    indexes. Returns the documents inserted and the indexes built."""
    if coll not in target.list_collection_names():
        target.create_collection(coll, **meta.get("options", {}))
    collection, batch, inserted = target[coll], [], 0
    for raw in backup.documents(db, coll):
        batch.append(RawBSONDocument(raw))
        if len(batch) == INSERT_BATCH:
            inserted += _insert(collection, batch)
            batch = []
    inserted += _insert(collection, batch)
    indexes = _index_models(meta.get("indexes", []))
    if indexes:
        collection.create_indexes(indexes)
    return inserted, len(indexes)


# ---- the restore drill's comparison ----------------------------------------------------------


def _hashes(collection: Collection, match: dict) -> dict:
    return {doc["_id"]: hashlib.sha256(doc.raw).digest() for doc in raw_documents(collection, [match])}


def compare(source: MongoClient, restored: MongoClient, backup: Opened, rename: dict[str, str]) -> dict[str, dict]:
    """Every collection of the backup, restored, against the source, document by document (a
    SHA-256 of each document's BSON), one range at a time. Per "db.collection": identical,
    differing, only_in_backup, only_in_source."""
    report = {}
    for db, coll, entry in backup.collections():
        if entry["type"] == "view":
            continue
        ours, theirs = source[db][coll], restored[rename.get(db, db)][coll]
        tally = dict.fromkeys(("identical", "differing", "only_in_backup", "only_in_source"), 0)
        matches = ([entry["filter"]] if "filter" in entry
                   else read_ranges(ours, max(entry["documents"], ours.estimated_document_count())))
        for match in matches:
            want, got = _hashes(ours, match), _hashes(theirs, match)
            both = want.keys() & got.keys()
            same = sum(want[k] == got[k] for k in both)
            tally["identical"] += same
            tally["differing"] += len(both) - same
            tally["only_in_backup"] += len(got.keys() - want.keys())
            tally["only_in_source"] += len(want.keys() - got.keys())
        report[f"{db}.{coll}"] = tally
    return report
