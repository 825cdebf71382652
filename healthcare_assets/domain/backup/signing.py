"""Who wrote a backup: an HMAC-SHA256 under a key derived from the pseudonym key, never in the backup store:
whoever can write the store cannot sign (docs/backups.md)."""

from __future__ import annotations

import hashlib
import hmac
import json

from healthcare_assets.domain.backup.files import BackupError
from healthcare_assets.domain.master_keys import PSEUDONYM_KEY_VARIABLE, MasterKeys
from healthcare_assets.plumbing import secrets_file

LABEL = b"backup-manifest"
ALGORITHM = "HMAC-SHA256"
SIGNATURE = "signature"


def _derived(pseudonym_key: bytes) -> bytes:
    return hmac.new(pseudonym_key, LABEL, hashlib.sha256).digest()


def writing_key(keys: MasterKeys) -> bytes:
    return _derived(keys.pseudonym_key())


def key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:16]


def _canonical(document: dict) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def _mac(key: bytes, document: dict) -> str:
    unsigned = {k: v for k, v in document.items() if k != SIGNATURE}
    return hmac.new(key, _canonical(unsigned), hashlib.sha256).hexdigest()


def sign(document: dict, key: bytes) -> dict:
    return {**document, SIGNATURE: {"algorithm": ALGORITHM, "key_id": key_id(key), "mac": _mac(key, document)}}


def check_signature(document: dict, location: str, keys: MasterKeys) -> None:
    signature = document.get(SIGNATURE)
    if not isinstance(signature, dict) or signature.get("algorithm") != ALGORITHM:
        raise BackupError(f"{location}: not signed, so nothing proves who wrote it; a backup made by "
                          "MongoDB's mongodump (or by a version before signing) is restored only when asked: "
                          "`healthcare-assets restore --from DIR --mongodump`")
    given = keys.pseudonym and secrets_file.checked(PSEUDONYM_KEY_VARIABLE, keys.pseudonym, keys.production,
                                                    secrets_file.MIN_KEY_BYTES)
    secret = given or secrets_file.read(keys.data_dir).get(PSEUDONYM_KEY_VARIABLE)
    if not secret:  # never made here, as for writing: a key made on a new host would verify nothing
        raise BackupError(f"cannot verify a backup: this installation holds no {PSEUDONYM_KEY_VARIABLE} (neither in the "
                          "environment nor in secrets.env). Restoring onto a new host needs the keys of the "
                          f"deployment that wrote the backup: its {PSEUDONYM_KEY_VARIABLE} and its master key "
                          "(docs/deployment.md, \"Restoring onto a new host\")")
    key = _derived(secret.encode())
    if signature.get("key_id") != key_id(key):
        raise BackupError(f"{location}: signed with backup key {signature.get('key_id')!r}, this installation's "
                          f"is {key_id(key)!r}: it was written by another deployment, or this host holds another "
                          f"{PSEUDONYM_KEY_VARIABLE} (bring the one of the deployment that wrote it)")
    if not hmac.compare_digest(str(signature.get("mac", "")), _mac(key, document)):
        raise BackupError(f"{location}: the signature does not match: changed after it was written")


def digest(document: dict) -> str:
    return hashlib.sha256(_canonical(document)).hexdigest()
