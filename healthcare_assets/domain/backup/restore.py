"""Restoring a verified backup, and the restore drill's comparison of what was restored with the
source, document by document. What a restore does about erasures is in `erasures`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from bson.raw_bson import RawBSONDocument
from pymongo import IndexModel, MongoClient
from pymongo.collection import Collection
from pymongo.database import Database

from healthcare_assets.domain.backup.erasures import Erasures, main_database, returned
from healthcare_assets.domain.backup.files import (
    INSERT_BATCH,
    raw_documents,
    read_ranges,
)
from healthcare_assets.domain.backup.reading import Opened, verify
from healthcare_assets.plumbing.idempotent_inserts import insert_keeping_existing


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


@dataclass
class Restored:
    counts: dict[str, int]  # documents written per "db.collection" of the target
    kept_out: dict[str, int]  # erased patients' stays not written back, per "db.collection" of the target
    patient_ids: list[str]  # the keyed ids of those patients
    erased_patients: int  # patient_ids on the erasure list after the restore
    copy_withdrawn: int = 0  # the analysts' copy's documents withdrawn by the erasure applied again
    release_stale: str | None = None  # why the release was marked stale instead (its lease was held)


def restore(backup: Opened, client: MongoClient, drop: bool = False, rename: dict[str, str] | None = None,
            log: Callable[[str], None] = lambda _: None) -> Restored:
    """Restore a verified backup: collections with their options (validators), their documents,
    then their indexes (built once, as mongorestore does), then the views. Refuses, before writing
    anything, a backup that does not verify and a target database that holds collections unless
    `drop`. `rename` maps a backed-up database to another (the restore drill's scratch databases).
    A collection backed up through a filter (the shared key vault) counts as busy when it holds
    documents the filter selects, and only those are replaced. The erasure list is merged, never
    replaced, and applied to what is written (erasures.py)."""
    rename = rename or {}
    verify(backup)
    targets = {db: rename.get(db, db) for db in backup.manifest["databases"]}
    erasures = Erasures.of(backup, client, targets)
    _clear_targets(backup, client, targets, drop, erasures)
    erasures.write_list(client)
    counts: dict[str, int] = {}
    views = []
    for db, coll, entry in backup.collections():
        meta, target = backup.metadata(db, coll), client[targets[db]]
        if entry["type"] == "view":
            views.append((target, coll, meta))
            continue
        inserted, indexes = _restore_collection(backup, db, coll, meta, target, erasures.keeps(db, coll),
                                                merge=coll in erasures.append_only(db))
        counts[f"{targets[db]}.{coll}"] = inserted
        log(f"{targets[db]}.{coll}: {inserted:,} documents, {indexes} indexes")
    for target, coll, meta in views:
        target.create_collection(coll, **meta["options"])
        log(f"{target.name}.{coll}: view on {meta['options'].get('viewOn')}")
    restored = Restored(counts, dict(erasures.kept_out), sorted(erasures.patients), len(erasures.ids))
    if not rename:  # the drill's scratch databases are compared, never published
        restored.copy_withdrawn, restored.release_stale = erasures.erase_from_release(client)
    return restored


def _clear_targets(backup: Opened, client: MongoClient, targets: dict[str, str], drop: bool,
                   erasures: Erasures) -> None:
    """Refuse target databases that hold collections, and shared collections that hold this
    deployment's documents, unless `drop`; with it, drop those databases and delete those documents.
    The append-only collections are neither counted nor dropped: the restore merges into them."""
    shared = {(targets[db], coll): entry["filter"] for db, coll, entry in backup.collections() if "filter" in entry}
    kept = {targets[db]: erasures.append_only(db) for db in targets}
    busy = {target: found for target in set(targets.values()) - {db for db, _ in shared}
            if (found := set(_non_empty(client, target)) - kept[target])}
    held = {(db, coll): n for (db, coll), match in shared.items() if (n := client[db][coll].count_documents(match))}
    if (busy or held) and not drop:
        raise RestoreRefusedError("refusing to restore into non-empty databases: " + "; ".join(
            [f"{db} holds {', '.join(sorted(names)[:5])}" for db, names in busy.items()]
            + [f"{db}.{coll} holds {n} of this deployment's documents" for (db, coll), n in held.items()])
            + ". Add --drop to replace them.")
    for target, names in busy.items():
        if kept[target]:
            for name in names:
                client[target].drop_collection(name)
        else:
            client.drop_database(target)
    for db, coll in held:
        client[db][coll].delete_many(shared[(db, coll)])


def _restore_collection(backup: Opened, db: str, coll: str, meta: dict, target: Database,
                        keep: Callable[[bytes], bool] | None = None, merge: bool = False) -> tuple[int, int]:
    """One collection: created with its options, its documents inserted in batches (those `keep`
    accepts; into a `merge` collection, only those it lacks), then its indexes. Returns the
    documents inserted and the indexes built."""
    if coll not in target.list_collection_names():
        target.create_collection(coll, **meta.get("options", {}))
    collection, batch, inserted = target[coll], [], 0
    write = (lambda docs: insert_keeping_existing(collection, docs, bypass_document_validation=True)) if merge \
        else (lambda docs: _insert(collection, docs))
    for raw in backup.documents(db, coll):
        if keep is not None and not keep(raw):
            continue
        batch.append(RawBSONDocument(raw))
        if len(batch) == INSERT_BATCH:
            inserted += write(batch)
            batch = []
    inserted += write(batch)
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
    differing, only_in_backup, only_in_source, and erased_returned: restored stays of patients on
    the source's erasure list."""
    report = {}
    came_back = returned(source, restored, main_database(backup.manifest), rename)
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
        report[f"{db}.{coll}"] = {**tally, "erased_returned": came_back.get(f"{db}.{coll}", 0)}
    return report


def differences(report: dict[str, dict]) -> dict[str, dict]:
    """The collections of a comparison that are not identical to the source, or hold an erased stay."""
    return {name: tally for name, tally in report.items()
            if any(count for kind, count in tally.items() if kind != "identical")}
