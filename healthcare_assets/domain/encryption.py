"""Client-side field-level encryption of the direct identifiers (explicit CSFLE, deterministic so
that an equality lookup is served by the field's index); data keys, master keys and who decrypts: docs/security.md."""

from __future__ import annotations

import re
from collections.abc import Iterable

from bson.binary import STANDARD, Binary
from bson.codec_options import CodecOptions
from pymongo import IndexModel, MongoClient
from pymongo.collection import Collection
from pymongo.encryption import Algorithm, ClientEncryption
from pymongo.errors import EncryptionError

from healthcare_assets.domain.collection_definitions import KEY_VAULT_INDEX
from healthcare_assets.domain.master_keys import (
    MASTER_KEY_VARIABLE,
    NEW_MASTER_KEY_VARIABLE,
    MasterKeyError,
    MasterKeys,
    decode_master_key,
    local_provider,
    new_master_key,
    wrapped_by,
)
from healthcare_assets.domain.schema import ENCRYPTED_FIELDS
from healthcare_assets.plumbing import secrets_file

KEY_VAULT_DB, KEY_VAULT_COLLECTION = "encryption", "__keyVault"
KEY_VAULT = f"{KEY_VAULT_DB}.{KEY_VAULT_COLLECTION}"
DETERMINISTIC = Algorithm.AEAD_AES_256_CBC_HMAC_SHA_512_Deterministic
ENCRYPTED_SUBTYPE = 6
_OPTIONS = CodecOptions(uuid_representation=STANDARD)


class NoDataKeyError(LookupError):
    pass


def ensure_key_vault(client: MongoClient, namespace: str = KEY_VAULT) -> None:
    """Two processes creating the same data key at once leave one (a unique index on keyAltNames)."""
    db, _, coll = namespace.partition(".")
    client[db][coll].create_indexes([IndexModel(**KEY_VAULT_INDEX)])


def client_encryption(client: MongoClient, providers: dict, namespace: str = KEY_VAULT) -> ClientEncryption:
    """`providers`: MasterKeys.kms_providers(), or those of a rotation."""
    return ClientEncryption(providers, namespace, client, _OPTIONS)


def is_encrypted(value) -> bool:
    return isinstance(value, Binary) and value.subtype == ENCRYPTED_SUBTYPE


class FieldCipher:
    """Encrypts one collection's direct identifiers, decrypts what any key of the vault encrypted. Deterministic: values
    are cached both ways, so a load encrypts each distinct name once."""

    def __init__(self, client: MongoClient, keys: MasterKeys, key_names: dict[str, str], namespace: str = KEY_VAULT,
                 create: bool = False):
        self.client, self.namespace, self.key_names, self.create = client, namespace, key_names, create
        self.keys = keys
        self.encryption = client_encryption(client, keys.kms_providers(), namespace)
        self._keys: dict[str, Binary] = {}
        self._encrypted: dict[tuple[str, str], Binary] = {}
        self._decrypted: dict[bytes, str] = {}

    def key_id(self, field: str) -> Binary:
        name = self.key_names[field]
        if name not in self._keys:
            self._keys[name] = self._find_or_create(name)
        return self._keys[name]

    def _find_or_create(self, name: str) -> Binary:
        found = self.encryption.get_key_by_alt_name(name)
        if found is None and self.create:
            ensure_key_vault(self.client, self.namespace)
            kind, options = self.keys.provider()
            try:
                return self.encryption.create_data_key(kind, options, key_alt_names=[name])
            except EncryptionError:  # made by another process meanwhile (the unique index), or a real error
                found = self.encryption.get_key_by_alt_name(name)
                if found is None:
                    raise
        if found is None:
            raise NoDataKeyError(f"no data key {name!r} in {self.namespace}")
        return found["_id"]

    def encrypt(self, field: str, value: str) -> Binary:
        cached = self._encrypted.get((field, value))
        if cached is None:
            cached = self.encryption.encrypt(value, DETERMINISTIC, key_id=self.key_id(field))
            self._encrypted[(field, value)] = cached
        return cached

    def decrypt(self, value):
        if not is_encrypted(value):
            return value
        clear = self._decrypted.get(bytes(value))
        if clear is None:
            clear = self._decrypted[bytes(value)] = self.encryption.decrypt(value)
        return clear

    def encrypt_document(self, doc: dict) -> dict:
        """In place; clear values only."""
        for part, name in ENCRYPTED_FIELDS:
            value = doc.get(part, {}).get(name)
            if isinstance(value, str):
                doc[part][name] = self.encrypt(f"{part}.{name}", value)
        return doc

    def decrypt_document(self, doc: dict) -> dict:
        doc = dict(doc)
        for part, name in ENCRYPTED_FIELDS:
            if name in doc.get(part, {}):
                doc[part] = {**doc[part], name: self.decrypt(doc[part][name])}
        return doc

    def close(self) -> None:
        self.encryption.close()


def field_paths() -> list[str]:
    return [f"{part}.{name}" for part, name in ENCRYPTED_FIELDS]


def key_names(collection: Collection) -> dict[str, str]:
    return {path: f"{collection.full_name}:{path}" for path in field_paths()}


def cipher(collection: Collection, keys: MasterKeys, create: bool = False) -> FieldCipher:
    return FieldCipher(collection.database.client, keys, key_names(collection), create=create)


def doctor_app_vault(copy: Collection) -> str:
    return f"{copy.database.name}.{KEY_VAULT_COLLECTION}"


def doctor_app_cipher(copy: Collection, keys: MasterKeys, hospital: str, create: bool = False) -> FieldCipher:
    name = f"{copy.full_name}:hospital:{hospital}"
    return FieldCipher(copy.database.client, keys, dict.fromkeys(field_paths(), name), doctor_app_vault(copy), create)


def drop_keys(client: MongoClient, database: str) -> int:
    """Delete the data keys of one database's collections (a test deployment's, when dropped)."""
    vault = client[KEY_VAULT_DB][KEY_VAULT_COLLECTION]
    return vault.delete_many({"keyAltNames": {"$regex": "^" + re.escape(database + ".")}}).deleted_count


def rotate_master_key(client: MongoClient, keys: MasterKeys, vaults: Iterable[str]) -> dict[str, int]:
    """Re-wrap every vault's data keys (so every ciphertext stays the same) under AWS KMS when it is configured, else
    HEALTHCARE_NEW_MASTER_KEY or, in development, a new key made current once all are re-wrapped, the old one retired
    (earlier backups' data keys are wrapped by it; docs/deployment.md). Returns the keys re-wrapped per vault."""
    aws = keys.aws_master_key()
    if aws:
        providers, target, options = keys.kms_providers(), "aws", aws
        which = {"$or": [{"masterKey.provider": {"$ne": "aws"}}, {"masterKey.key": {"$ne": aws["key"]}},
                         {"masterKey.region": {"$ne": aws["region"]}}]}
    else:
        keys.master_key()  # refused missing in production before anything is generated
        pending = keys.new_master
        development = not pending and not keys.master
        if not pending and not development:
            raise MasterKeyError(f"{MASTER_KEY_VARIABLE} comes from the environment: set {NEW_MASTER_KEY_VARIABLE} "
                                 "to the new key (96 bytes, base64) to re-wrap the data keys under it")
        if development:  # stored before any key is re-wrapped under it: an interruption loses nothing
            stored = secrets_file.ensure({NEW_MASTER_KEY_VARIABLE: new_master_key}, keys.data_dir)
            pending = stored[NEW_MASTER_KEY_VARIABLE]
        new = decode_master_key(pending, NEW_MASTER_KEY_VARIABLE, keys.production)
        held = keys.local_keys()
        providers = {name: {"key": key} for name, key in {**held, local_provider(new): new}.items()}
        target, options = local_provider(new), None
        which = {"masterKey.provider": {"$in": sorted(set(held) - {target})}}
    rewrapped = {}
    for vault in vaults:
        with client_encryption(client, providers, vault) as vault_keys:
            result = vault_keys.rewrap_many_data_key(which, provider=target, master_key=options)
        rewrapped[vault] = result.bulk_write_result.modified_count if result.bulk_write_result else 0
    if not aws and development:
        keys.retire_current_key(pending)
    return rewrapped


def providers_in_vaults(client: MongoClient, vaults: Iterable[str]) -> set[str]:
    """wrapped_by() of every data key in the vaults: the keys live data needs, beside the retained backups'."""
    found = set()
    for vault in vaults:
        db, _, coll = vault.partition(".")
        found |= {wrapped_by(d.get("masterKey")) for d in client[db][coll].find({}, {"masterKey": 1})}
    return found
