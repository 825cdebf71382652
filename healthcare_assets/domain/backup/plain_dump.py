"""A `mongodump --gzip --out DIR` folder, read as reading.Opened. Nothing in it is trusted: plain names, no
link, bounded inflation (a metadata file 1 MiB, a document 16 MiB), so a small hostile file cannot take memory."""

from __future__ import annotations

import gzip
import os
import stat
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from bson import json_util

from healthcare_assets.domain.backup import files
from healthcare_assets.domain.backup.files import BackupError, Digest
from healthcare_assets.plumbing.backup_store import LocalStore

BSON_SUFFIX, METADATA_SUFFIX = files.bson_file(""), files.metadata_file("")
# What mongodump may write beside the database folders: never read here
TOP_LEVEL = {"prelude.json", "oplog.bson", "oplog.bson.gz"}
UNVERIFIED = [
    "Who wrote the dump, from which server and when: a plain dump names no source, time or tool.",
    ("That no file was added, removed or changed since the dump was written: it holds no checksums "
     "from dump time, only those taken here when the folder was opened."),
    ("That each collection holds every document the source held at dump time: the source's counts "
     "were not recorded."),
]


def _refuse_link(path: Path) -> None:
    if path.is_symlink():
        raise BackupError(f"{path}: a symbolic link; a mongodump folder holds only the files and folders "
                          "mongodump wrote, and a link is never followed")


def _open_file(path: Path) -> BinaryIO:
    """Opened for reading, refusing a link (also one swapped in after the folder was listed)."""
    _refuse_link(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise BackupError(f"{path}: missing") from None
    except OSError as exc:
        raise BackupError(f"{path}: cannot be opened ({exc.strerror})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise BackupError(f"{path}: not a regular file")
    return os.fdopen(fd, "rb")


def _read(path: Path, consume: Callable[[BinaryIO, str], Iterator], expected: dict | None,
          found: dict | None = None) -> Iterator:
    """What `consume` yields; the file's bytes and SHA-256 then compared with `expected`, or put in `found`."""
    location = str(path)
    with _open_file(path) as raw:
        digest = Digest(raw)
        try:
            with gzip.GzipFile(fileobj=digest, mode="rb") as stream:
                yield from consume(stream, location)
        except (OSError, EOFError, zlib.error) as exc:
            raise BackupError(f"{location}: cannot be decompressed ({exc}; truncated, or not gzip)") from None
        digest.drain()
    summary = digest.summary()
    if expected is None:
        found.update(summary)
    elif summary != expected:
        raise BackupError(f"{location}: {summary['bytes']:,} bytes, SHA-256 {summary['sha256'][:12]}…; when "
                          f"the folder was opened {expected['bytes']:,} bytes, {expected['sha256'][:12]}… "
                          "(changed since)")


def _metadata_payload(stream: BinaryIO, location: str) -> Iterator[bytes]:
    payload = stream.read(files.METADATA_MAX_BYTES + 1)
    if len(payload) > files.METADATA_MAX_BYTES:
        raise BackupError(f"{location}: inflates to more than {files.METADATA_MAX_BYTES:,} bytes; not a mongodump "
                          "metadata file")
    yield payload


def _parse_metadata(payload: bytes, location: str) -> dict:
    try:
        meta = json_util.loads(payload, json_options=files.EXTENDED_JSON)
    except ValueError as exc:
        raise BackupError(f"{location}: not Extended JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise BackupError(f"{location}: not a metadata document")
    return meta


def _split(path: Path) -> tuple[str, str]:
    name = path.name
    for suffix, kind in ((METADATA_SUFFIX, "metadata"), (BSON_SUFFIX, "bson")):
        if name.endswith(suffix):
            collection = name[:-len(suffix)]
            if files.SAFE_NAME.fullmatch(collection):
                return collection, kind
            raise BackupError(f"{path}: collection name {collection!r} is not letters, digits and underscores")
    raise BackupError(f"{path}: not a file `mongodump --gzip` writes (<collection>{BSON_SUFFIX} or "
                      f"<collection>{METADATA_SUFFIX})")


class PlainDump:
    """A `mongodump --gzip` folder, with the interface restore consumes (reading.Opened's)."""

    def __init__(self, root: Path):
        self.root = root
        self.store, self.name = LocalStore(root.parent), root.name
        self.manifest = {"format": files.FORMAT, "name": self.name, "databases": {}, "files": {}}
        self._read_folder()

    @property
    def location(self) -> str:
        return self.store.location(self.name)

    def _path(self, relpath: str) -> Path:
        return self.root / relpath

    def _read_folder(self) -> None:
        found: dict[str, dict[str, set[str]]] = {}
        for entry in sorted(self.root.iterdir()):
            _refuse_link(entry)
            if entry.is_file() and entry.name in TOP_LEVEL:
                continue
            if not entry.is_dir():
                raise BackupError(f"{entry}: not a database folder, nor a file mongodump writes beside them "
                                  f"({', '.join(sorted(TOP_LEVEL))})")
            if not files.SAFE_NAME.fullmatch(entry.name):
                raise BackupError(f"{entry}: database name {entry.name!r} is not letters, digits and underscores")
            found[entry.name] = {}
            for path in sorted(entry.iterdir()):
                _refuse_link(path)
                if not path.is_file():
                    raise BackupError(f"{path}: a folder inside a database folder")
                collection, kind = _split(path)
                found[entry.name].setdefault(collection, set()).add(kind)
        for db, collections in found.items():
            self.manifest["databases"][db] = self._describe(db, collections)
        if not self.manifest["databases"]:
            raise BackupError(f"{self.location}: no database folder (not a `mongodump --out` folder)")

    def _describe(self, db: str, collections: dict[str, set[str]]) -> dict:
        entries = {}
        for coll, kinds in collections.items():
            meta_path = f"{db}/{files.metadata_file(coll)}"
            if "metadata" not in kinds:
                raise BackupError(f"{self._path(meta_path)}: missing")
            summary = self.manifest["files"][meta_path] = {}
            (payload,) = _read(self._path(meta_path), _metadata_payload, None, summary)
            meta = _parse_metadata(payload, str(self._path(meta_path)))
            kind = meta.get("type", "collection")
            if meta.get("collectionName") != coll or kind not in ("collection", "view"):
                raise BackupError(f"{self._path(meta_path)}: describes {meta.get('collectionName')!r} ({kind}), "
                                  f"expected the collection or view {coll!r}")
            bson_path = f"{db}/{files.bson_file(coll)}"
            if kind == "view":
                if "bson" in kinds:
                    raise BackupError(f"{self._path(bson_path)}: documents of a view (dumped with "
                                      "--viewsAsCollections?); a view is restored from its definition")
                entries[coll] = {"type": "view"}
                continue
            if "bson" not in kinds:
                raise BackupError(f"{self._path(bson_path)}: missing")
            summary = self.manifest["files"][bson_path] = {}
            documents = _read(self._path(bson_path), files.bson_documents, None, summary)
            entries[coll] = {"type": "collection", "documents": sum(1 for _ in documents)}
        # collections before views, as a backup lists them: a view's source is restored first
        return dict(sorted(entries.items(), key=lambda item: (item[1]["type"] == "view", item[0])))

    def collections(self) -> Iterator[tuple[str, str, dict]]:
        return files.manifest_collections(self.manifest)

    def metadata(self, db: str, coll: str) -> dict:
        relpath = f"{db}/{files.metadata_file(coll)}"
        if relpath not in self.manifest["files"]:
            raise BackupError(f"{self._path(relpath)}: not in the dump")
        (payload,) = _read(self._path(relpath), _metadata_payload, self.manifest["files"][relpath])
        return _parse_metadata(payload, str(self._path(relpath)))

    def documents(self, db: str, coll: str) -> Iterator[bytes]:
        relpath = f"{db}/{files.bson_file(coll)}"
        if relpath not in self.manifest["files"]:
            raise BackupError(f"{self._path(relpath)}: not in the dump")
        return _read(self._path(relpath), files.bson_documents, self.manifest["files"][relpath])

    def verify(self) -> dict:
        """Read every file again against the folder as opened; what a plain dump cannot show: "unverified"."""
        documents = 0
        for db, coll, entry in self.collections():
            meta = self.metadata(db, coll)
            if meta.get("collectionName") != coll or meta.get("type", "collection") != entry["type"]:
                raise BackupError(f"{self._path(f'{db}/{files.metadata_file(coll)}')}: describes "
                                  f"{meta.get('collectionName')!r}, expected {coll!r} ({entry['type']})")
            if entry["type"] == "view":
                continue
            found = sum(1 for _ in self.documents(db, coll))
            if found != entry["documents"]:
                raise BackupError(f"{self._path(f'{db}/{files.bson_file(coll)}')}: {found:,} documents, "
                                  f"{entry['documents']:,} when the folder was opened")
            documents += found
        unverified = list(UNVERIFIED)
        if any((self.root / name).is_file() for name in TOP_LEVEL if name.startswith("oplog")):
            unverified.append("The oplog mongodump --oplog wrote beside the databases: it is not read, and not replayed.")
        return {"backup": self.location, "collections": sum(1 for _ in self.collections()), "documents": documents,
                "bytes": sum(f["bytes"] for f in self.manifest["files"].values()), "unverified": unverified}


def open_plain_dump(path: str) -> PlainDump:
    root = Path(path).expanduser()
    if not root.is_dir():
        raise BackupError(f"{root}: not a folder")
    return PlainDump(root.resolve())
