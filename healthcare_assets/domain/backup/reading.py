"""Reading a backup back: its manifest, each file checked against it (bytes, SHA-256, whole
documents), verification, and the retention that deletes older backups once a newer one verified.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from bson import json_util

from healthcare_assets.domain.backup.files import (
    EXTENDED_JSON,
    FORMAT,
    MANIFEST,
    READ_CHUNK,
    VERIFIED,
    BackupError,
    Digest,
    Store,
    backups,
    bson_documents,
    bson_file,
    metadata_file,
    write_file,
)
from healthcare_assets.plumbing.backup_store import keep, open_store


def read_manifest(store: Store, name: str) -> dict:
    location = store.location(name, MANIFEST)
    if not store.exists(name, MANIFEST):
        raise BackupError(f"{location}: missing (an unfinished backup, or not a backup folder)")
    with store.reader(name, MANIFEST) as stream:
        try:
            manifest = json.loads(stream.read())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BackupError(f"{location}: not a manifest ({exc})") from None
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{location}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    return manifest


@dataclass
class CheckedFile:
    """One file of a backup, read as a stream and compared with the manifest when spent."""

    store: Store
    name: str
    relpath: str
    expected: dict | None

    @property
    def location(self) -> str:
        return self.store.location(self.name, self.relpath)

    def _open(self):
        if self.expected is None:
            raise BackupError(f"{self.location}: not listed in {MANIFEST}")
        if not self.store.exists(self.name, self.relpath):
            raise BackupError(f"{self.location}: missing")
        return self.store.reader(self.name, self.relpath)

    def _compare(self, digest: Digest) -> None:
        found = digest.summary()
        if found["bytes"] != self.expected["bytes"]:
            raise BackupError(f"{self.location}: {found['bytes']:,} bytes, the manifest says "
                              f"{self.expected['bytes']:,} (truncated or changed)")
        if found["sha256"] != self.expected["sha256"]:
            raise BackupError(f"{self.location}: SHA-256 differs from the manifest's (the file changed "
                              "after the backup was written)")

    def _decompressed(self, consume: Callable[[BinaryIO], Iterator]) -> Iterator:
        """What `consume` yields from the decompressed file; raises BackupError naming the file
        when it is not the file the manifest describes, or does not decompress."""
        with self._open() as raw:
            digest = Digest(raw)
            try:
                with gzip.GzipFile(fileobj=digest, mode="rb") as stream:
                    yield from consume(stream)
            except (OSError, EOFError, zlib.error) as exc:
                digest.drain()
                self._compare(digest)  # a changed file is named as such before its symptom
                raise BackupError(f"{self.location}: cannot be decompressed ({exc})") from None
            digest.drain()
            self._compare(digest)

    def documents(self) -> Iterator[bytes]:
        return self._decompressed(lambda stream: bson_documents(stream, self.location))

    def json(self) -> dict:
        payload = b"".join(self._decompressed(lambda stream: iter(lambda: stream.read(READ_CHUNK), b"")))
        try:
            return json_util.loads(payload, json_options=EXTENDED_JSON)
        except ValueError as exc:
            raise BackupError(f"{self.location}: not Extended JSON ({exc})") from None


@dataclass
class Opened:
    """A backup in a store, its manifest read."""

    store: Store
    name: str
    manifest: dict

    @property
    def location(self) -> str:
        return self.store.location(self.name)

    def file(self, db: str, relpath: str) -> CheckedFile:
        path = f"{db}/{relpath}"
        return CheckedFile(self.store, self.name, path, self.manifest["files"].get(path))

    def collections(self) -> Iterator[tuple[str, str, dict]]:
        for db, collections in self.manifest["databases"].items():
            for coll, entry in collections.items():
                yield db, coll, entry

    def metadata(self, db: str, coll: str) -> dict:
        return self.file(db, metadata_file(coll)).json()

    def documents(self, db: str, coll: str) -> Iterator[bytes]:
        return self.file(db, bson_file(coll)).documents()


def open_backup(uri: str, latest: bool = False) -> Opened:
    """The backup at `uri` (a backup's own folder), or with `latest` the newest complete backup
    under `uri` (a folder or s3:// prefix of backups)."""
    if not latest:
        if uri.startswith("s3://"):
            parent, _, name = uri.rstrip("/").rpartition("/")
        else:
            path = Path(uri).expanduser().resolve()
            parent, name = str(path.parent), path.name
        store = open_store(parent)
        return Opened(store, name, read_manifest(store, name))
    store = open_store(uri)
    complete = [n for n in backups(store) if store.exists(n, MANIFEST)]
    if not complete:
        raise BackupError(f"{store}: no backup (no folder with a {MANIFEST}) under it")
    return Opened(store, complete[-1], read_manifest(store, complete[-1]))


def verify(backup: Opened) -> dict:
    """Read every file back: sizes and SHA-256 equal the manifest's, every document whole, the
    counts equal what was written and what the source held then. Raises BackupError naming the
    first file that is not."""
    documents = 0
    for db, coll, entry in backup.collections():
        meta = backup.metadata(db, coll)
        if meta.get("collectionName") != coll or meta.get("type") != entry["type"]:
            raise BackupError(f"{backup.file(db, metadata_file(coll)).location}: describes "
                              f"{meta.get('collectionName')!r} ({meta.get('type')}), expected {coll!r}")
        if entry["type"] == "view":
            continue
        found = sum(1 for _ in backup.documents(db, coll))
        location = backup.file(db, bson_file(coll)).location
        if found != entry["documents"]:
            raise BackupError(f"{location}: {found:,} documents, the manifest says {entry['documents']:,}")
        if found != entry["source_documents"]:
            raise BackupError(f"{location}: {found:,} documents, the source held {entry['source_documents']:,} "
                              "at backup time")
        documents += found
    return {"backup": backup.location, "collections": sum(1 for _ in backup.collections()), "documents": documents,
            "bytes": sum(f["bytes"] for f in backup.manifest["files"].values())}


def mark_verified(backup: Opened, report: dict) -> None:
    if not backup.store.exists(backup.name, VERIFIED):
        write_file(backup.store, backup.name, VERIFIED, iter([json.dumps(report).encode()]), compress=False)


def prune(store: Store, verified: str, keep_count: int | None = None) -> list[str]:
    """After `verified` was read back intact: delete every backup older than it, except the newest
    `keep_count` verified ones (HEALTHCARE_BACKUP_KEEP). Nothing newer is touched: it may be a
    backup still being written."""
    keep_count = keep() if keep_count is None else keep_count
    names = [n for n in backups(store) if n <= verified]
    kept = set([n for n in names if store.exists(n, VERIFIED)][-keep_count:])
    deleted = [n for n in names if n not in kept and n != verified]
    for name in deleted:
        store.delete(name)
    return deleted


