"""Who wrote a backup: an HMAC-SHA256 under a key derived from the pseudonym key, never in the backup store:
whoever can write the store cannot sign (docs/backups.md)."""

from __future__ import annotations

import hashlib
import hmac
import json

from healthcare_assets.domain import privacy
from healthcare_assets.domain.backup.files import BackupError
from healthcare_assets.plumbing import secrets_file, settings

PSEUDONYM_KEY_VARIABLE = "HEALTHCARE_PSEUDONYM_KEY"
LABEL = b"backup-manifest"
ALGORITHM = "HMAC-SHA256"
SIGNATURE = "signature"


def _derived(pseudonym_key: bytes) -> bytes:
    return hmac.new(pseudonym_key, LABEL, hashlib.sha256).digest()


def writing_key() -> bytes:
    """A development installation's pseudonym key is made on first use, as for a load."""
    return _derived(privacy.pseudonym_key())


def installation_key() -> bytes | None:
    """The key backups are verified with, or None on a new host: a key made here would verify nothing."""
    env = settings.environment()
    secret = (secrets_file.environment([PSEUDONYM_KEY_VARIABLE], env.variables, env.production,
                                       secrets_file.MIN_KEY_BYTES).get(PSEUDONYM_KEY_VARIABLE)
              or secrets_file.read().get(PSEUDONYM_KEY_VARIABLE))
    return _derived(secret.encode()) if secret else None


def key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:16]


def _canonical(document: dict) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def _mac(key: bytes, document: dict) -> str:
    unsigned = {k: v for k, v in document.items() if k != SIGNATURE}
    return hmac.new(key, _canonical(unsigned), hashlib.sha256).hexdigest()


def sign(document: dict, key: bytes | None = None) -> dict:
    key = key or writing_key()
    return {**document, SIGNATURE: {"algorithm": ALGORITHM, "key_id": key_id(key), "mac": _mac(key, document)}}


def _required_key(doing: str) -> bytes:
    key = installation_key()
    if key is None:
        raise BackupError(f"cannot {doing}: this installation holds no {PSEUDONYM_KEY_VARIABLE} (neither in the "
                          "environment nor in secrets.env). Restoring onto a new host needs the keys of the "
                          f"deployment that wrote the backup: its {PSEUDONYM_KEY_VARIABLE} and its master key "
                          "(docs/deployment.md, \"Restoring onto a new host\")")
    return key


def check_signature(document: dict, location: str) -> None:
    signature = document.get(SIGNATURE)
    if not isinstance(signature, dict) or signature.get("algorithm") != ALGORITHM:
        raise BackupError(f"{location}: not signed, so nothing proves who wrote it; a backup made by "
                          "MongoDB's mongodump (or by a version before signing) is restored only when asked: "
                          "`healthcare-assets restore --from DIR --mongodump`")
    key = _required_key("verify a backup")
    if signature.get("key_id") != key_id(key):
        raise BackupError(f"{location}: signed with backup key {signature.get('key_id')!r}, this installation's "
                          f"is {key_id(key)!r}: it was written by another deployment, or this host holds another "
                          f"{PSEUDONYM_KEY_VARIABLE} (bring the one of the deployment that wrote it)")
    if not hmac.compare_digest(str(signature.get("mac", "")), _mac(key, document)):
        raise BackupError(f"{location}: the signature does not match: changed after it was written")


def digest(document: dict) -> str:
    return hashlib.sha256(_canonical(document)).hexdigest()
