"""Writing a backup: the deployment's collections and data keys as raw BSON, then the signed manifest."""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata

from bson import json_util
from pymongo import MongoClient

from healthcare_assets.domain.backup import files
from healthcare_assets.domain.backup.files import Store, write_file
from healthcare_assets.domain.backup.signing import sign, writing_key
from healthcare_assets.domain.deployment_databases import databases
from healthcare_assets.domain.encryption import KEY_VAULT_COLLECTION, KEY_VAULT_DB
from healthcare_assets.domain.master_keys import MasterKeys

# What a backup is consistent with; the pool is named in defs/load.py (see docs/backups.md).
CONSISTENCY = ("taken while no load runs: Dagster pool `mongo_writes`, shared with mongo_hospitalizations; "
               "a publication to the analysts' copy caught halfway is finished from its ledger plan "
               "by the next release after a restore")


def project_version() -> str:
    try:
        return metadata.version("healthcare-assets")
    except metadata.PackageNotFoundError:
        return "unknown"


@dataclass
class Written:
    name: str
    location: str
    manifest: dict
    seconds: float = 0.0
    collections: dict[str, int] = field(default_factory=dict)  # "db.collection" -> documents

    @property
    def bytes(self) -> int:
        return sum(f["bytes"] for f in self.manifest["files"].values())


def _collection_infos(client: MongoClient, db: str) -> list[dict]:
    infos = [i for i in client[db].list_collections() if not i["name"].startswith("system.")]
    return sorted(infos, key=lambda i: (i.get("type", "collection") == "view", i["name"]))


def key_vault_filter(main_database: str) -> dict:
    names = "|".join(re.escape(db) for db in databases(main_database).values())
    return {"keyAltNames": {"$regex": f"^({names})\\."}}


def data_keys(client: MongoClient, main_database: str) -> list[dict]:
    vaults = [(KEY_VAULT_DB, key_vault_filter(main_database)), (databases(main_database)["doctor_app"], {})]
    return [{"vault": f"{db}.{KEY_VAULT_COLLECTION}", "id": doc["_id"].hex(), "alt_names": doc.get("keyAltNames", []),
             "master_key": doc.get("masterKey", {})}
            for db, match in vaults
            for doc in client[db][KEY_VAULT_COLLECTION].find(match, {"keyAltNames": 1, "masterKey": 1}).sort("_id")]


def _dump_collection(store: Store, name: str, client: MongoClient, db: str, info: dict, summaries: dict,
                     log: Callable[[str], None], match: dict | None = None) -> dict:
    """One collection's metadata and documents; `match`: a shared collection's (small: one query)."""
    coll_name, kind = info["name"], info.get("type", "collection")
    meta = {"options": info.get("options", {}), "collectionName": coll_name, "type": kind,
            "indexes": [] if kind == "view" else [dict(ix) for ix in client[db][coll_name].list_indexes()]}
    meta_path = f"{db}/{files.metadata_file(coll_name)}"
    summaries[meta_path] = write_file(store, name, meta_path,
                                      iter([json_util.dumps(meta, json_options=files.EXTENDED_JSON).encode()]))
    if kind == "view":
        return {"type": "view"}
    collection = client[db][coll_name]
    if match is None:
        source_documents = collection.estimated_document_count()  # an exact count once no write runs
        matches = files.read_ranges(collection, source_documents)
    else:
        source_documents, matches = collection.count_documents(match), [match]
    counted = [0]

    def chunks() -> Iterator[bytes]:
        for doc in files.raw_documents(collection, matches):
            counted[0] += 1
            yield doc.raw

    bson_path = f"{db}/{files.bson_file(coll_name)}"
    summaries[bson_path] = write_file(store, name, bson_path, chunks())
    log(f"{db}.{coll_name}: {counted[0]:,} documents")
    entry = {"type": "collection", "documents": counted[0], "source_documents": source_documents}
    return entry if match is None else {**entry, "filter": match}


def write_backup(client: MongoClient, main_database: str, server: str, store: Store, keys: MasterKeys,
                 log: Callable[[str], None] = lambda _: None) -> Written:
    started = time.perf_counter()
    key = writing_key(keys)  # before anything is written: a production deployment without it stops here
    name = files.new_name()
    summaries: dict[str, dict] = {}  # the manifest's files
    contents: dict[str, dict] = {}
    for db in databases(main_database).values():
        contents[db] = {info["name"]: _dump_collection(store, name, client, db, info, summaries, log)
                        for info in _collection_infos(client, db)}
    for info in _collection_infos(client, KEY_VAULT_DB):
        if info["name"] == KEY_VAULT_COLLECTION:
            contents[KEY_VAULT_DB] = {KEY_VAULT_COLLECTION: _dump_collection(
                store, name, client, KEY_VAULT_DB, info, summaries, log, key_vault_filter(main_database))}
    manifest = {"format": files.FORMAT, "name": name, "created_at": dt.datetime.now(dt.UTC).isoformat(),
                "source_server": server, "project_version": project_version(), "consistency": CONSISTENCY,
                "databases": contents, "files": summaries, "keys": data_keys(client, main_database)}
    manifest = sign(manifest, key)
    write_file(store, name, files.MANIFEST, iter([json.dumps(manifest, indent=2).encode()]), compress=False)
    counts = {f"{db}.{c}": v["documents"] for db, cs in contents.items() for c, v in cs.items() if "documents" in v}
    return Written(name, store.location(name), manifest, time.perf_counter() - started, counts)


