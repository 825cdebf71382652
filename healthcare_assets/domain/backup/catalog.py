"""What a restore may write, and how: from the code's definitions, never from the backup (docs/backups.md)."""

from __future__ import annotations

from dataclasses import dataclass, field

from pymongo import IndexModel
from pymongo.database import Database

from healthcare_assets.domain import collection_definitions, privacy
from healthcare_assets.domain.backup.files import BackupError
from healthcare_assets.domain.backup.writing import key_vault_filter
from healthcare_assets.domain.deployment_databases import databases
from healthcare_assets.domain.encryption import KEY_VAULT_COLLECTION, KEY_VAULT_DB
from healthcare_assets.domain.query_benchmarks.suite import INDEXES as BENCHMARK_INDEXES
from healthcare_assets.domain.release.bookkeeping import SCHEME, STAYS


@dataclass
class Definition:
    options: dict = field(default_factory=dict)
    indexes: list[IndexModel] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)  # what the backup's metadata asked for and was not done


def _keys(index: dict) -> list[tuple[str, object]]:
    return [(k, v) for k, v in index.get("key", {}).items()]


class Catalog:

    def __init__(self, main: str, collection: str):
        self.main, self.dbs, self.collection = main, databases(main), collection

    def allowed(self) -> set[str]:
        return {*self.dbs.values(), KEY_VAULT_DB}

    def check_scope(self, backed_up: dict, location: str) -> None:
        foreign = sorted(set(backed_up) - self.allowed())
        if foreign:
            raise BackupError(f"{location}: names databases outside this deployment ({', '.join(foreign)}); "
                              f"this deployment's are {', '.join(sorted(self.allowed()))}: refused whole")
        vault = set(backed_up.get(KEY_VAULT_DB, {}))
        if vault - {KEY_VAULT_COLLECTION}:
            raise BackupError(f"{location}: names {', '.join(sorted(vault - {KEY_VAULT_COLLECTION}))} in the "
                              f"{KEY_VAULT_DB} database; only its {KEY_VAULT_COLLECTION} is backed up")
        if self.main not in backed_up:
            raise BackupError(f"{location}: holds no {self.main}: a backup of another deployment "
                              f"({', '.join(sorted(backed_up))}); restore it where MONGODB_DATABASE names its own")

    def shared_filter(self, db: str, coll: str) -> dict | None:
        return key_vault_filter(self.main) if (db, coll) == (KEY_VAULT_DB, KEY_VAULT_COLLECTION) else None

    def definition(self, db: str, coll: str, metadata: dict) -> Definition:
        defined = Definition()
        backed_up = [_keys(ix) for ix in metadata.get("indexes", []) if ix.get("name") != "_id_"]
        if (db, coll) == (self.main, self.collection):
            defined.options = collection_definitions.HOSPITALIZATION_OPTIONS
            defined.indexes = [*(IndexModel(keys) for keys in collection_definitions.HOSPITALIZATION_INDEXES),
                               *(IndexModel(keys, name=name) for name, keys in BENCHMARK_INDEXES.items()
                                 if keys in backed_up)]
        elif (db, coll) == (self.main, STAYS):
            defined.indexes = [IndexModel(keys) for keys in collection_definitions.RELEASE_STAY_INDEXES]
        elif (db, coll) == (self.dbs["analytics"], privacy.COPY_COLLECTION):
            defined.indexes = [IndexModel(keys) for keys in collection_definitions.COPY_INDEXES]
        elif coll == KEY_VAULT_COLLECTION and db in (KEY_VAULT_DB, self.dbs["doctor_app"]):
            defined.indexes = [IndexModel(**collection_definitions.KEY_VAULT_INDEX)]
        made = [list(ix.document["key"].items()) for ix in defined.indexes]
        defined.left_out = [f"index {keys}" for keys in backed_up if keys not in made]
        if metadata.get("options", {}) and metadata["options"] != defined.options:
            defined.left_out.append(f"options {sorted(metadata['options'])} (the code's are "
                                    f"{sorted(defined.options) or 'none'})")
        return defined

    def make_view(self, db: str, target: Database) -> str | None:
        """The analysts' view, from the restored scheme; what was made, or None (no release yet, another db)."""
        if db != self.main:
            return None
        state = target[SCHEME].find_one({"_id": "current"})
        if not state or "scheme" not in state:
            return None
        target.drop_collection(privacy.VIEW_NAME)
        target.create_collection(privacy.VIEW_NAME, viewOn=self.collection,
                                 pipeline=privacy.view_pipeline(state["scheme"], STAYS))
        return f"{target.name}.{privacy.VIEW_NAME}"
