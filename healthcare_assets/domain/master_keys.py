"""The keys this installation holds: master keys (current and retired: docs/security.md), which key-vault documents
they can unwrap, and the pseudonym key. Values are checked as every secret is, never logged: errors name the variable."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from bson.binary import UUID_SUBTYPE, Binary

from healthcare_assets.plumbing import secrets_file

MASTER_KEY_VARIABLE = "HEALTHCARE_MASTER_KEY"
NEW_MASTER_KEY_VARIABLE = "HEALTHCARE_NEW_MASTER_KEY"
RETIRED_KEYS_VARIABLE = "HEALTHCARE_RETIRED_MASTER_KEYS"
RETIRED_ARNS_VARIABLE = "HEALTHCARE_RETIRED_KMS_KEY_ARNS"
KMS_ARN_VARIABLE, KMS_REGION_VARIABLE = "HEALTHCARE_KMS_KEY_ARN", "HEALTHCARE_KMS_REGION"
PSEUDONYM_KEY_VARIABLE = "HEALTHCARE_PSEUDONYM_KEY"
MASTER_KEY_BYTES = 96  # what the local KMS provider takes
_LOCAL_NAME = re.compile(r"local:[0-9a-f]{16}")
_KMS_ARN = re.compile(r"arn:aws[a-z-]*:kms:(?P<region>[a-z0-9-]+):\d{12}:(key|alias)/[A-Za-z0-9/_-]+")


class MasterKeyError(ValueError):
    pass


def new_master_key() -> str:
    return base64.b64encode(secrets.token_bytes(MASTER_KEY_BYTES)).decode()


def decode_master_key(value: str, variable: str, production: bool) -> bytes:
    """A base64 master key as bytes; the error names the variable, never the value."""
    secrets_file.checked(variable, value, production)
    try:
        key = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != MASTER_KEY_BYTES:
        raise MasterKeyError(f"{variable} is not {MASTER_KEY_BYTES} bytes in base64 (make one with "
                             "`python -c 'import base64,os;print(base64.b64encode(os.urandom(96)).decode())'`)")
    return key


def local_provider(key: bytes) -> str:
    """Named after a digest of the key: a data key says which key wraps it, rotation re-wraps exactly the old key's
    (and resumes after an interruption), and a wrong key is refused by name rather than by a failed MAC."""
    return f"local:{hashlib.sha256(key).hexdigest()[:16]}"


def _entries(value: str) -> list[str]:
    """A list variable's entries (commas or white space between them); a placeholder is no entry."""
    value = value.strip()
    return [] if value.startswith(secrets_file.PLACEHOLDER) else [e for e in re.split(r"[\s,]+", value) if e]


def wrapped_by(master: dict) -> str:
    """`local:<digest>`, `aws:<ARN>`, or the provider as it is: what retired_keys_needed takes."""
    kind = master.get("provider") if isinstance(master, dict) else None
    return f"aws:{master.get('key')}" if kind == "aws" else str(kind)


def _label(document) -> str:
    names = document.get("keyAltNames") if isinstance(document, dict) else None
    name = names[0] if isinstance(names, list) and names else document.get("_id") if isinstance(document, dict) else None
    if isinstance(name, Binary) and name.subtype == UUID_SUBTYPE:  # a data key's id as the vault holds it
        name = str(name.as_uuid())
    text = name if isinstance(name, str) else repr(name)
    return "".join(c if c.isprintable() else "?" for c in text)[:120]


class RetiredKeys(NamedTuple):
    needed: list[str]  # retired keys that wrap a data key in use
    removable: list[str]  # retired keys that wrap none: no longer worth keeping


@dataclass(frozen=True)
class MasterKeys:
    """The key variables' text as a run's resource resolved them; `data_dir` holds secrets.env (None in production)."""

    production: bool
    data_dir: Path | None
    master: str = field(default="", repr=False)  # never in a traceback or a log
    new_master: str = field(default="", repr=False)
    retired: str = field(default="", repr=False)
    kms_arn: str = ""
    kms_region: str = ""  # HEALTHCARE_KMS_REGION, else AWS_REGION
    retired_arns: str = ""
    pseudonym: str = field(default="", repr=False)

    @classmethod
    def of(cls, keys) -> MasterKeys:
        """A KeysResource's (plumbing/keys.py): production, or development with its data directory's secrets.env."""
        return cls(keys.production, keys.secrets_path(), keys.master_key, keys.new_master_key, keys.retired_master_keys,
                   keys.kms_key_arn, keys.kms_region, keys.retired_kms_key_arns, keys.pseudonym_key)

    def pseudonym_key(self) -> bytes:
        """HEALTHCARE_PSEUDONYM_KEY (refused in production if a placeholder or short), else secrets.env's (made once)."""
        return secrets_file.value(PSEUDONYM_KEY_VARIABLE, lambda: secrets.token_hex(32), what="key", given=self.pseudonym,
                                  production=self.production, min_bytes=secrets_file.MIN_KEY_BYTES,
                                  data_dir=self.data_dir).encode()

    def master_key(self) -> bytes:
        """HEALTHCARE_MASTER_KEY, or in development one generated once into secrets.env. Refused missing in production:
        a key generated inside a container is lost with it, and every name with it."""
        if self.production and not self.master:
            raise MasterKeyError(f"{MASTER_KEY_VARIABLE} is not set and {KMS_ARN_VARIABLE} neither: MONGODB_URI "
                                 "is set, so this is production; set one of them (see docs/deployment.md)")
        value = secrets_file.value(MASTER_KEY_VARIABLE, new_master_key, given=self.master, production=self.production,
                                   what="master key", development_placeholder_ignored=True, data_dir=self.data_dir)
        return decode_master_key(value, MASTER_KEY_VARIABLE, self.production)

    def aws_master_key(self) -> dict | None:
        if not self.kms_arn:
            return None
        if not self.kms_region:
            raise MasterKeyError(f"{KMS_ARN_VARIABLE} is set without {KMS_REGION_VARIABLE} (or AWS_REGION)")
        return {"key": self.kms_arn, "region": self.kms_region}

    def retired_master_keys(self) -> dict[str, bytes]:
        """By provider name: the environment's, and in development secrets.env's too (rotate-keys moves the old key
        there even when the variable is set)."""
        where = [(RETIRED_KEYS_VARIABLE, self.retired)]
        if not self.production:
            where.append((f"{RETIRED_KEYS_VARIABLE} of {secrets_file.path(self.data_dir)}",
                          secrets_file.read(self.data_dir).get(RETIRED_KEYS_VARIABLE, "")))
        keys = (decode_master_key(entry, f"{variable} (entry {n})", self.production)
                for variable, value in where for n, entry in enumerate(_entries(value), 1))
        return {local_provider(key): key for key in keys}

    def retired_kms_keys(self) -> dict[str, str]:
        retired = {}
        for n, arn in enumerate(_entries(self.retired_arns), 1):
            match = _KMS_ARN.fullmatch(arn)
            if not match:
                raise MasterKeyError(f"{RETIRED_ARNS_VARIABLE} (entry {n}) is not the ARN of a KMS key")
            retired[arn] = match["region"]
        return retired

    def current_local_key(self) -> bytes | None:
        """Also beside an AWS key when HEALTHCARE_MASTER_KEY is set (data keys made before a move to AWS)."""
        if not self.aws_master_key() or (self.master and not self.master.startswith(secrets_file.PLACEHOLDER)):
            return self.master_key()
        return None

    def local_keys(self) -> dict[str, bytes]:
        keys = self.retired_master_keys()
        if (key := self.current_local_key()) is not None:
            keys[local_provider(key)] = key
        return keys

    def kms_providers(self) -> dict:
        retired_kms = self.retired_kms_keys()  # checked even when a KMS key is current
        providers: dict = {"aws": {}} if self.aws_master_key() or retired_kms else {}
        providers.update({name: {"key": key} for name, key in self.local_keys().items()})
        return providers

    def provider(self) -> tuple[str, dict | None]:
        aws = self.aws_master_key()
        return ("aws", aws) if aws else (local_provider(self.master_key()), None)

    def retire_current_key(self, pending: str) -> None:
        """Development rotation, once every data key is re-wrapped under `pending`: the current key of secrets.env
        joins the retired keys in the same write that makes `pending` current (never a moment holding neither)."""
        def changes(stored: dict[str, str]) -> dict[str, str]:
            retired = _entries(stored.get(RETIRED_KEYS_VARIABLE, ""))
            old = stored.get(MASTER_KEY_VARIABLE, "")
            if old and old != pending and old not in retired:
                retired.append(old)
            return {RETIRED_KEYS_VARIABLE: ",".join(retired), MASTER_KEY_VARIABLE: pending, NEW_MASTER_KEY_VARIABLE: ""}
        secrets_file.update(changes, self.data_dir)

    def wrapping_problems(self, key_documents: list[dict]) -> list[str]:
        """One sentence per key-vault document (a backup's, before a restore) this installation cannot unwrap or must
        not accept: an AWS key with an `endpoint` sends signed requests to another host."""
        held = set(self.local_keys())
        aws = self.aws_master_key()
        kms = {**self.retired_kms_keys(), **({aws["key"]: aws["region"]} if aws else {})}
        problems = []
        for document in key_documents:
            name = f"data key {_label(document)}"
            master = document.get("masterKey") if isinstance(document, dict) else None
            kind = master.get("provider") if isinstance(master, dict) else None
            if not isinstance(kind, str):
                problems.append(f"{name} names no master key that wraps it (no masterKey.provider): refused")
            elif _LOCAL_NAME.fullmatch(kind) and set(master) == {"provider"}:
                if kind not in held:
                    digest = kind.partition(":")[2]
                    problems.append(
                        f"{name} is wrapped by master key {kind}, which this installation does not hold: set "
                        f"{MASTER_KEY_VARIABLE} (or add it to {RETIRED_KEYS_VARIABLE}) to the key whose digest "
                        f"is {digest}, from the deployment that wrote the backup")
            elif kind == "aws" and "endpoint" in master:
                problems.append(f"{name} is wrapped by an AWS KMS key with a custom endpoint: refused, it would send "
                                "signed requests to another host")
            elif kind == "aws" and set(master) == {"provider", "key", "region"}:
                arn, region = master["key"], master["region"]
                if not isinstance(arn, str) or not isinstance(region, str) or kms.get(arn) != region:
                    problems.append(
                        f"{name} is wrapped by AWS KMS key {_label({'_id': arn})} in {_label({'_id': region})}, "
                        f"which this installation is not configured for: set HEALTHCARE_KMS_KEY_ARN and "
                        f"HEALTHCARE_KMS_REGION to it (or add it to {RETIRED_ARNS_VARIABLE})")
            else:
                problems.append(f"{name} is wrapped by a master key of kind {_label({'_id': kind})} "
                                f"with fields {_label({'_id': sorted(master)})}, which this installation does "
                                "not accept (only local:<digest> and aws, without endpoint)")
        return problems

    def retired_keys_needed(self, providers_in_use: set[str]) -> RetiredKeys:
        """`providers_in_use`: wrapped_by() of every data key of the retained backups and of the key vaults (a restored
        backup's keys stay under their key until the next rotate-keys)."""
        current = {local_provider(key)} if (key := self.current_local_key()) is not None else set()
        retired = [n for n in self.retired_master_keys() if n not in current]
        retired += [f"aws:{a}" for a in self.retired_kms_keys()]
        return RetiredKeys(sorted(n for n in retired if n in providers_in_use),
                           sorted(n for n in retired if n not in providers_in_use))

    def forget_retired_keys(self, providers_in_use: set[str]) -> list[str]:
        """Remove the unneeded retired keys from secrets.env, never the current key; returns their names. In production
        the retired keys are the environment's: nothing is removed, and the names are those the operator may remove."""
        removable = self.retired_keys_needed(providers_in_use).removable
        if self.production:
            return removable
        removed = []

        def changes(stored: dict[str, str]) -> dict[str, str]:
            kept = []
            for n, entry in enumerate(_entries(stored.get(RETIRED_KEYS_VARIABLE, "")), 1):
                name = local_provider(decode_master_key(entry, f"{RETIRED_KEYS_VARIABLE} (entry {n})", self.production))
                if name in removable and entry != stored.get(MASTER_KEY_VARIABLE):
                    removed.append(name)
                else:
                    kept.append(entry)
            return {RETIRED_KEYS_VARIABLE: ",".join(kept)} if removed else {}
        secrets_file.update(changes, self.data_dir)
        return removed
