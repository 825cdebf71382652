"""What a restore does about erasures: a backup older than an erasure must not undo it (docs/backups.md)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient

from healthcare_assets.domain import audit, gdpr, privacy
from healthcare_assets.domain.backup.files import BackupError
from healthcare_assets.domain.backup.reading import Opened
from healthcare_assets.domain.deployment_databases import databases
from healthcare_assets.domain.master_keys import MasterKeys
from healthcare_assets.domain.release.bookkeeping import ID_BATCH, chunks, request_rebuild
from healthcare_assets.domain.release.lease import ReleaseLockError
from healthcare_assets.plumbing.idempotent_inserts import insert_keeping_existing

APPEND_ONLY = (audit.AUDIT_COLLECTION, audit.ERASURES_COLLECTION)


def main_database(manifest: dict) -> str:
    """The backed-up deployment's main database: the one whose companions are all in the backup."""
    backed_up = set(manifest["databases"])
    mains = [db for db in sorted(backed_up) if set(databases(db).values()) <= backed_up]
    if not mains:
        raise BackupError(f"the manifest names no deployment's databases: {sorted(backed_up)}")
    return mains[0]


@dataclass
class Erasures:
    """The erasure list a restore applies, and what it kept out; `targets` maps backed-up dbs to written ones."""

    ids: set[str]
    backed_up: set[str]  # the backup's own list
    main: str
    targets: dict[str, str]
    collection: str
    kept_out: Counter = field(default_factory=Counter)  # "db.collection" of the target -> stays
    patients: set[str] = field(default_factory=set)  # keyed ids whose stays were kept out

    @classmethod
    def of(cls, backup: Opened, client: MongoClient, targets: dict[str, str], main: str, collection: str) -> Erasures:
        audit_db, backed_up = databases(main)["audit"], set()
        if audit.ERASURES_COLLECTION in backup.manifest["databases"].get(audit_db, {}):
            backed_up = {RawBSONDocument(raw)["_id"] for raw in backup.documents(audit_db, audit.ERASURES_COLLECTION)}
        return cls(audit.erased_patient_ids(client[main]) | backed_up, backed_up, main, targets, collection)

    def append_only(self, db: str) -> set[str]:
        return set(APPEND_ONLY) if db == databases(self.main)["audit"] else set()

    def write_list(self, client: MongoClient) -> None:
        """The union into the restored list, acknowledged in the journal, before any data is written."""
        durable = audit.audit_db(client[self.main]).write_concern
        erasures = client.get_database(self.targets[databases(self.main)["audit"]], write_concern=durable)[
            audit.ERASURES_COLLECTION]
        present = {d["_id"] for d in erasures.find({}, {"_id": 1})}
        insert_keeping_existing(erasures, [{"_id": i} for i in sorted(self.ids - present)])

    def keeps(self, db: str, coll: str):
        """For a collection of stays, a test counting and refusing a listed patient's stay; else None."""
        if coll != self.collection or db not in (self.main, databases(self.main)["doctor_app"]):
            return None
        name = f"{self.targets[db]}.{coll}"
        self.kept_out.setdefault(name, 0)  # each collection of stays is reported, kept out or not
        if not self.ids:
            return None

        def keep(raw: bytes) -> bool:
            patient_id = RawBSONDocument(raw).get("patient_id")
            if patient_id in self.ids:
                self.kept_out[name] += 1
                self.patients.add(patient_id)
                return False
            return True

        return keep

    def erase_from_release(self, client: MongoClient, keys: MasterKeys) -> tuple[int, str | None]:
        """Erase again from the restored release: the copy's documents withdrawn, or why it was marked stale."""
        patients = sorted((self.ids - self.backed_up) | self.patients)
        if not patients:
            return 0, None
        collection = client[self.main][self.collection]
        try:
            removed = gdpr.erase_stays(collection, patients, "restore", keys.pseudonym_key())
        except ReleaseLockError as exc:
            request_rebuild(client[self.main], "restore", f"erased patients' stays may be in the restored release; {exc}")
            return 0, str(exc)
        return removed[f"{databases(self.main)['analytics']}.{privacy.COPY_COLLECTION}"], None


def returned(source: MongoClient, restored: MongoClient, main: str, collection: str,
             rename: dict[str, str]) -> dict[str, int]:
    """Per "db.collection" of stays as backed up: restored stays of patients on `source`'s erasure list."""
    ids = audit.erased_patient_ids(source[main])
    found = {}
    for db in (main, databases(main)["doctor_app"]):
        target = restored[rename.get(db, db)][collection]
        found[f"{db}.{collection}"] = sum(target.count_documents({"patient_id": {"$in": batch}})
                                          for batch in chunks(sorted(ids), ID_BATCH))
    return found
