"""Reading a backup back: its signed manifest, each file checked against it, verification and retention."""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from bson import json_util

from healthcare_assets.domain.backup import files
from healthcare_assets.domain.backup.files import BackupError, Digest, Store
from healthcare_assets.domain.backup.signing import check_signature, digest, sign, writing_key
from healthcare_assets.domain.master_keys import MasterKeys
from healthcare_assets.plumbing.backup_store import open_store


def _read_json(store: Store, name: str, relpath: str) -> dict:
    location = store.location(name, relpath)
    try:
        if not store.exists(name, relpath):
            raise BackupError(f"{location}: missing (an unfinished backup, or not a backup of this project: a "
                              "plain `mongodump --gzip` folder is restored with --mongodump)")
        with store.reader(name, relpath) as stream:
            payload = stream.read(files.METADATA_MAX_BYTES + 1)
    except OSError as exc:
        raise BackupError(f"{location}: cannot be read ({exc})") from None
    if len(payload) > files.METADATA_MAX_BYTES:
        raise BackupError(f"{location}: larger than {files.METADATA_MAX_BYTES:,} bytes, not a file this project writes")
    try:
        document = json.loads(payload)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BackupError(f"{location}: not JSON ({exc})") from None
    if not isinstance(document, dict):
        raise BackupError(f"{location}: not a JSON object")
    return document


def check_names(databases: dict, location: str) -> None:
    for db, collections in databases.items():
        for part in (db, *collections):
            if not files.SAFE_NAME.fullmatch(part):
                raise BackupError(f"{location}: names {part!r}; a database or collection name here is letters, "
                                  "digits and underscores only")


def read_manifest(store: Store, name: str, keys: MasterKeys) -> dict:
    location = store.location(name, files.MANIFEST)
    manifest = _read_json(store, name, files.MANIFEST)
    if manifest.get("format") != files.FORMAT:
        raise BackupError(f"{location}: format {manifest.get('format')!r}, expected {files.FORMAT!r}")
    check_signature(manifest, location, keys)
    if manifest.get("name") != name:
        raise BackupError(f"{location}: signed for the backup {manifest.get('name')!r}, found in the folder {name!r} "
                          "(a copy under another name)")
    check_names(manifest["databases"], location)
    return manifest


@dataclass
class _Capped:

    stream: BinaryIO
    limit: int
    location: str
    read_so_far: int = 0

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(min(size if size >= 0 else self.limit + 1, self.limit + 1 - self.read_so_far))
        self.read_so_far += len(data)
        if self.read_so_far > self.limit:
            raise BackupError(f"{self.location}: inflates to more than {self.limit:,} bytes (the manifest's "
                              "size, or the most such a file may hold): refused")
        return data


@dataclass
class CheckedFile:

    store: Store
    name: str
    relpath: str
    expected: dict | None

    @property
    def location(self) -> str:
        return self.store.location(self.name, self.relpath)

    def _open(self):
        if self.expected is None:
            raise BackupError(f"{self.location}: not listed in {files.MANIFEST}")
        try:
            if not self.store.exists(self.name, self.relpath):
                raise BackupError(f"{self.location}: missing")
        except OSError as exc:
            raise BackupError(f"{self.location}: cannot be read ({exc})") from None
        return self.store.reader(self.name, self.relpath)

    def _capped(self, stream: BinaryIO, cap: int) -> _Capped:
        return _Capped(stream, min(cap, self.expected.get("inflated_bytes", cap)), self.location)

    def _compare(self, digest: Digest) -> None:
        found = digest.summary()
        if found["bytes"] != self.expected["bytes"]:
            raise BackupError(f"{self.location}: {found['bytes']:,} bytes, the manifest says "
                              f"{self.expected['bytes']:,} (truncated or changed)")
        if found["sha256"] != self.expected["sha256"]:
            raise BackupError(f"{self.location}: SHA-256 differs from the manifest's (the file changed "
                              "after the backup was written)")

    def _decompressed(self, consume: Callable[[BinaryIO], Iterator], cap: int) -> Iterator:
        with self._open() as raw:
            digest = Digest(raw)
            try:
                with gzip.GzipFile(fileobj=digest, mode="rb") as stream:
                    yield from consume(self._capped(stream, cap))
            except (OSError, EOFError, zlib.error) as exc:
                digest.drain()
                self._compare(digest)  # a changed file is named as such before its symptom
                raise BackupError(f"{self.location}: cannot be decompressed ({exc})") from None
            digest.drain()
            self._compare(digest)

    def documents(self) -> Iterator[bytes]:
        return self._decompressed(lambda stream: files.bson_documents(stream, self.location), 1 << 62)

    def json(self) -> dict:
        payload = b"".join(self._decompressed(lambda stream: iter(lambda: stream.read(files.READ_CHUNK), b""),
                                              files.METADATA_MAX_BYTES))
        try:
            return json_util.loads(payload, json_options=files.EXTENDED_JSON)
        except ValueError as exc:
            raise BackupError(f"{self.location}: not Extended JSON ({exc})") from None


@dataclass
class Opened:

    store: Store
    name: str
    manifest: dict
    report: dict | None = None  # set once verify() read it back whole
    skipped: dict[str, str] = field(default_factory=dict)  # newer backups passed over, and why

    @property
    def location(self) -> str:
        return self.store.location(self.name)

    def file(self, db: str, relpath: str) -> CheckedFile:
        path = f"{db}/{relpath}"
        return CheckedFile(self.store, self.name, path, self.manifest["files"].get(path))

    def collections(self) -> Iterator[tuple[str, str, dict]]:
        return files.manifest_collections(self.manifest)

    def metadata(self, db: str, coll: str) -> dict:
        return self.file(db, files.metadata_file(coll)).json()

    def documents(self, db: str, coll: str) -> Iterator[bytes]:
        return self.file(db, files.bson_file(coll)).documents()

    def verify(self) -> dict:
        if self.report is None:
            self.report = verify(self)
        return self.report


def _split(uri: str) -> tuple[str, str]:
    if uri.startswith("s3://"):
        parent, _, name = uri.rstrip("/").rpartition("/")
        return parent, name
    path = Path(uri).expanduser().absolute()
    return str(path.parent), path.name


def open_backup(uri: str, keys: MasterKeys, latest: bool = False, log: Callable[[str], None] = lambda _: None) -> Opened:
    """The backup at `uri`, or with `latest` the newest good one under it (newer ones passed over, and why)."""
    if not latest:
        parent, name = _split(uri)
        store = open_store(parent)
        return Opened(store, name, read_manifest(store, name, keys))
    store, skipped = open_store(uri), {}
    for name in reversed(files.backups(store)):
        try:
            if files.dated_in_future(name):
                raise BackupError(f"{store.location(name)}: dated in the future")
            opened = Opened(store, name, read_manifest(store, name, keys), skipped=skipped)
            opened.verify()
            return opened
        except BackupError as exc:
            skipped[name] = str(exc)
            log(f"passed over {name}: {exc}")
    raise BackupError(f"{store}: no good backup under it" + "".join(f"\n  {n}: {why}" for n, why in skipped.items()))


def verify(backup: Opened) -> dict:
    documents = 0
    for db, coll, entry in backup.collections():
        meta = backup.metadata(db, coll)
        if meta.get("collectionName") != coll or meta.get("type") != entry["type"]:
            raise BackupError(f"{backup.file(db, files.metadata_file(coll)).location}: describes "
                              f"{meta.get('collectionName')!r} ({meta.get('type')}), expected {coll!r}")
        if entry["type"] == "view":
            continue
        found = sum(1 for _ in backup.documents(db, coll))
        location = backup.file(db, files.bson_file(coll)).location
        if found != entry["documents"]:
            raise BackupError(f"{location}: {found:,} documents, the manifest says {entry['documents']:,}")
        if found != entry["source_documents"]:
            raise BackupError(f"{location}: {found:,} documents, the source held {entry['source_documents']:,} "
                              "at backup time")
        documents += found
    return {"backup": backup.location, "collections": sum(1 for _ in backup.collections()), "documents": documents,
            "bytes": sum(f["bytes"] for f in backup.manifest["files"].values())}


def mark_verified(backup: Opened, report: dict, keys: MasterKeys) -> None:
    if not backup.store.exists(backup.name, files.VERIFIED):
        marker = sign({"name": backup.name, "manifest": digest(backup.manifest), "report": report}, writing_key(keys))
        files.write_file(backup.store, backup.name, files.VERIFIED, iter([json.dumps(marker).encode()]), compress=False)


def good_manifest(store: Store, name: str, keys: MasterKeys) -> dict:
    if files.dated_in_future(name):
        raise BackupError(f"{store.location(name)}: dated in the future")
    manifest = read_manifest(store, name, keys)
    marker = _read_json(store, name, files.VERIFIED)
    check_signature(marker, store.location(name, files.VERIFIED), keys)
    if marker.get("name") != name or marker.get("manifest") != digest(manifest):
        raise BackupError(f"{store.location(name, files.VERIFIED)}: vouches for another backup")
    return manifest


def good(store: Store, name: str, keys: MasterKeys) -> bool:
    try:
        good_manifest(store, name, keys)
    except BackupError:
        return False
    return True


def prune(store: Store, verified: str, keep_count: int, keys: MasterKeys) -> list[str]:
    """Nothing newer (it may be being written) nor not good: whoever can write the store only adds clutter."""
    older = [n for n in files.backups(store) if n < verified and good(store, n, keys)]
    deleted = older[:max(0, len(older) - (keep_count - 1))]
    for name in deleted:
        store.delete(name)
    return deleted
