"""The audit log: who wrote what, when, how many. Lives in its own database, which only
ADMIN_MASTER can read (per-database grants hold on the embedded server and on MongoDB 7)."""

from __future__ import annotations

import datetime as dt
import getpass

from pymongo.database import Database
from pymongo.write_concern import WriteConcern

from healthcare_assets.domain.deployment_databases import databases

AUDIT_COLLECTION = "audit_log"
ERASURES_COLLECTION = "erased_patients"  # patient_ids (keyed hashes) never to be loaded again


def audit_db(db: Database) -> Database:
    """Writes acknowledged once in the journal (j: true): an erasure reported done survives a power loss (the embedded
    server syncs lazily; its --sync-on-commit would slow every load); the writes before it are synced too."""
    durable = WriteConcern(**{**db.write_concern.document, "j": True})
    return db.client.get_database(databases(db.name)["audit"], write_concern=durable)


def record(db: Database, action: str, target: str, count: int, **details) -> None:
    """One entry per write to `db` or its companions. Details never quote patient data."""
    status = db.client.admin.command("connectionStatus")["authInfo"]["authenticatedUsers"]
    audit_db(db)[AUDIT_COLLECTION].insert_one({
        "at": dt.datetime.now(dt.UTC).replace(tzinfo=None),
        "who": {"database_user": status[0]["user"] if status else None, "os_user": getpass.getuser()},
        "action": action,
        "target": target,
        "count": count,
        **details,
    })


def erased_patient_ids(db: Database) -> set[str]:
    return {d["_id"] for d in audit_db(db)[ERASURES_COLLECTION].find({}, {"_id": 1})}
