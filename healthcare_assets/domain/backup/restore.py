"""Restoring a verified backup, and the drill's comparison with the source (erasures: in `erasures`)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient
from pymongo.collection import Collection
from pymongo.database import Database

from healthcare_assets.domain import privacy
from healthcare_assets.domain.backup.catalog import Catalog, Definition
from healthcare_assets.domain.backup.erasures import Erasures, main_database, returned
from healthcare_assets.domain.backup.files import INSERT_BATCH, raw_documents, read_ranges
from healthcare_assets.domain.backup.keys import judge_keys, prove_keys
from healthcare_assets.domain.backup.reading import Opened
from healthcare_assets.domain.master_keys import MasterKeys
from healthcare_assets.plumbing.idempotent_inserts import insert_keeping_existing


class RestoreRefusedError(RuntimeError):
    pass


def _insert(collection: Collection, batch: list[RawBSONDocument]) -> int:
    """Bypassing validation as mongorestore does: the checksums say these are the bytes the collection held."""
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
    left_out: list[str] = field(default_factory=list)  # what the backup's metadata asked for and the code does not define
    keys_proven: int = 0  # restored data keys that unwrapped with this installation's master keys


def restore(backup: Opened, client: MongoClient, keys: MasterKeys, database: str, collection: str, drop: bool = False,
            rename: dict[str, str] | None = None, log: Callable[[str], None] = lambda _: None) -> Restored:
    """Refuses before anything is written; `rename` maps a database to another (the drill's scratch ones)."""
    rename = rename or {}
    catalog = Catalog(database, collection)
    catalog.check_scope(backup.manifest["databases"], backup.location)
    backup.verify()
    if problems := judge_keys(backup, catalog, keys):
        raise RestoreRefusedError("refusing the backup's data keys; nothing was written:\n  " + "\n  ".join(problems))
    targets = {db: rename.get(db, db) for db in backup.manifest["databases"]}
    erasures = Erasures.of(backup, client, targets, database, collection)
    _clear_targets(backup, client, targets, drop, erasures, catalog)
    erasures.write_list(client)
    counts: dict[str, int] = {}
    left_out, views = [], []
    for db, coll, entry in backup.collections():
        meta, target = backup.metadata(db, coll), client[targets[db]]
        if entry["type"] == "view":
            views.append((db, coll))
            continue
        definition = catalog.definition(db, coll, meta)
        inserted = _restore_collection(backup, db, coll, definition, target, erasures.keeps(db, coll),
                                       merge=coll in erasures.append_only(db))
        counts[f"{targets[db]}.{coll}"] = inserted
        left_out += [f"{targets[db]}.{coll}: {what}" for what in definition.left_out]
        log(f"{targets[db]}.{coll}: {inserted:,} documents, {len(definition.indexes)} indexes")
    for db, coll in views:
        made = catalog.make_view(db, client[targets[db]]) if coll == privacy.VIEW_NAME else None
        log(f"{made}: view made again from the restored scheme" if made else f"{targets[db]}.{coll}: view left out")
        if not made:
            left_out.append(f"{targets[db]}.{coll}: a view the code does not make here")
    for what in left_out:
        log(f"left out, as the code does not define it: {what}")
    restored = Restored(counts, dict(erasures.kept_out), sorted(erasures.patients), len(erasures.ids), left_out=left_out)
    restored.keys_proven = prove_keys(client, keys, catalog, targets)
    if not rename:  # the drill's scratch databases are compared, never published
        restored.copy_withdrawn, restored.release_stale = erasures.erase_from_release(client, keys)
    return restored


def _clear_targets(backup: Opened, client: MongoClient, targets: dict[str, str], drop: bool,
                   erasures: Erasures, catalog: Catalog) -> None:
    """Refuse non-empty targets unless `drop`; append-only collections are kept: the restore merges into them."""
    shared = {(targets[db], coll): match for db, coll, _ in backup.collections()
              if (match := catalog.shared_filter(db, coll)) is not None}
    kept = {targets[db]: erasures.append_only(db) for db in targets}
    busy = {target: found for target in set(targets.values()) - {db for db, _ in shared}
            if (found := {n for n in client[target].list_collection_names() if not n.startswith("system.")}
                - kept[target])}
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


def _restore_collection(backup: Opened, db: str, coll: str, definition: Definition, target: Database,
                        keep: Callable[[bytes], bool] | None = None, merge: bool = False) -> int:
    if coll not in target.list_collection_names():
        target.create_collection(coll, **definition.options)
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
    if definition.indexes:
        collection.create_indexes(definition.indexes)
    return inserted


def _hashes(collection: Collection, match: dict) -> dict:
    return {doc["_id"]: hashlib.sha256(doc.raw).digest() for doc in raw_documents(collection, [match])}


def compare(source: MongoClient, restored: MongoClient, backup: Opened, collection: str,
            rename: dict[str, str]) -> dict[str, dict]:
    report = {}
    main = main_database(backup.manifest)
    came_back, catalog = returned(source, restored, main, collection, rename), Catalog(main, collection)
    for db, coll, entry in backup.collections():
        if entry["type"] == "view":
            continue
        ours, theirs = source[db][coll], restored[rename.get(db, db)][coll]
        tally = dict.fromkeys(("identical", "differing", "only_in_backup", "only_in_source"), 0)
        shared = catalog.shared_filter(db, coll)
        matches = ([shared] if shared is not None
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
    return {name: tally for name, tally in report.items()
            if any(count for kind, count in tally.items() if kind != "identical")}
