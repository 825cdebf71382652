"""The data keys a restore writes: judged before anything is written, proven after (each unwraps). A retired
master key is kept until neither a retained backup nor a live data key needs it."""

from __future__ import annotations

import re
from collections.abc import Iterator

from bson import decode
from pymongo import MongoClient
from pymongo.errors import PyMongoError

from healthcare_assets.domain import encryption, master_keys
from healthcare_assets.domain.backup.catalog import Catalog
from healthcare_assets.domain.backup.files import BackupError, backups
from healthcare_assets.domain.backup.reading import good_manifest
from healthcare_assets.domain.backup.writing import key_vault_filter
from healthcare_assets.domain.encryption import KEY_VAULT_COLLECTION, KEY_VAULT_DB
from healthcare_assets.domain.master_keys import MasterKeys


def _vaults(catalog: Catalog) -> list[str]:
    return [KEY_VAULT_DB, catalog.dbs["doctor_app"]]


def backed_up_keys(backup, catalog: Catalog) -> Iterator[tuple[str, dict]]:
    for db in _vaults(catalog):
        if KEY_VAULT_COLLECTION in backup.manifest["databases"].get(db, {}):
            for raw in backup.documents(db, KEY_VAULT_COLLECTION):
                yield db, decode(raw)


def judge_keys(backup, catalog: Catalog, keys: MasterKeys) -> list[str]:
    ours = re.compile(key_vault_filter(catalog.main)["keyAltNames"]["$regex"])
    problems, documents = [], []
    for db, doc in backed_up_keys(backup, catalog):
        names = doc.get("keyAltNames") or []
        foreign = [n for n in names if not isinstance(n, str) or not ours.match(n)]
        if not names or foreign:
            problems.append(f"data key {doc.get('_id')!r} in {db}.{KEY_VAULT_COLLECTION} is named "
                            f"{foreign or 'nothing'}, not after this deployment's databases")
        documents.append(doc)
    return problems + keys.wrapping_problems(documents)


def prove_keys(client: MongoClient, keys: MasterKeys, catalog: Catalog, targets: dict[str, str]) -> int:
    proven = 0
    for db in _vaults(catalog):
        target = targets.get(db, db)
        vault = client[target][KEY_VAULT_COLLECTION]
        match = catalog.shared_filter(db, KEY_VAULT_COLLECTION) or {}
        ids = [doc["_id"] for doc in vault.find(match, {"_id": 1})]
        if not ids:
            continue
        with encryption.client_encryption(client, keys.kms_providers(), vault.full_name) as unwrapping:
            for key_id in ids:
                try:
                    unwrapping.encrypt("restore-probe", encryption.DETERMINISTIC, key_id=key_id)
                except PyMongoError as exc:  # EncryptionError among them
                    raise BackupError(f"restored data key {key_id!r} in {vault.full_name} does not unwrap with "
                                      f"this installation's master keys: {exc}") from None
                proven += 1
    return proven


def forget_unneeded_master_keys(client: MongoClient, keys: MasterKeys, store,
                                catalog: Catalog) -> tuple[list[str], str | None]:
    """Forget retired master keys no backup nor live key needs; none while a backup's keys cannot be read."""
    try:
        if not keys.retired_master_keys() and not keys.retired_kms_keys():
            return [], None  # nothing retired: nothing to judge (nor a current key to read)
    except master_keys.MasterKeyError as exc:  # the backup stands; the keys' housekeeping waits for a fix
        return [], f"kept every retired master key: {exc}"
    in_use, unknown = set(), 0
    for name in backups(store):
        try:
            manifest = good_manifest(store, name, keys)
        except BackupError:
            unknown += 1
            continue
        in_use |= {master_keys.wrapped_by(key["master_key"]) for key in manifest.get("keys", [])}
    if unknown:
        return [], f"kept every retired master key: {unknown} backup folder(s) without a signed key list"
    in_use |= encryption.providers_in_vaults(client, [f"{db}.{KEY_VAULT_COLLECTION}" for db in _vaults(catalog)])
    return keys.forget_retired_keys(in_use), None
