"""Who wrote a backup: its manifest and its verified marker carry an HMAC-SHA256, over canonical
JSON, under the deployment's backup key (the manifest lists every file's SHA-256, so it covers every
byte). The key is derived from the pseudonym key, so it is kept where that is and never in the
backup store: whoever can write the store cannot sign. A restore needs that very key anyway. A
manifest names its key by a digest, so a host holding another is told so before anything is written.
"""

from __future__ import annotations

import hashlib
import hmac
import json

from healthcare_assets.domain import privacy
from healthcare_assets.domain.backup.files import BackupError
from healthcare_assets.plumbing import secrets_file

PSEUDONYM_KEY_VARIABLE = "HEALTHCARE_PSEUDONYM_KEY"
LABEL = b"backup-manifest"
ALGORITHM = "HMAC-SHA256"
SIGNATURE = "signature"


def _derived(pseudonym_key: bytes) -> bytes:
    return hmac.new(pseudonym_key, LABEL, hashlib.sha256).digest()


def writing_key() -> bytes:
    """The key a new backup is signed with (a development installation's pseudonym key is made
    on first use, as for a load)."""
    return _derived(privacy.pseudonym_key())


def installation_key() -> bytes | None:
    """The key backups are verified with, or None when this installation holds no pseudonym key
    (a new host: none is made here, since a new key would verify nothing)."""
    secret = (secrets_file.environment([PSEUDONYM_KEY_VARIABLE], secrets_file.MIN_KEY_BYTES).get(PSEUDONYM_KEY_VARIABLE)
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
    """Raises BackupError unless `document` carries a valid signature by this installation's key."""
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
    """A SHA-256 of a signed document, by which a verified marker names the manifest it vouches for."""
    return hashlib.sha256(_canonical(document)).hexdigest()
