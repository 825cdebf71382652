"""Backups in mongodump's `--gzip` directory layout, their verification, restore and retention.

One backup is a folder named by its UTC time, holding for every database of the deployment
(access.databases: the hospitalizations, the analysts' copy, the doctor app's copy, the audit log):

    <db>/<collection>.bson.gz           the documents, concatenated BSON, gzip
    <db>/<collection>.metadata.json.gz  {options, indexes, collectionName, type} (Extended JSON)
    manifest.json                       counts, sizes and SHA-256 of every file, source, time, version
    verified.json                       written once the backup has been read back intact

so `mongorestore --gzip --dir <backup>` restores it too (manifest.json and verified.json are not
in a database folder, and mongorestore ignores them). Views have a metadata file and no documents.

The deployment's data keys in the key vault (`encryption/__keyVault.*`) go too: without them no
restored name can be decrypted. The vault is shared by every deployment of a server, so only the
keys named after this deployment's databases are read, and a restore replaces only those.
They are useless without the master key, which a backup never holds.

Nothing else is read: never `admin` (users and their password hashes) and nothing of
secrets.env (the pseudonym key, role passwords, the master key), which live outside MongoDB.

Memory: documents are streamed as raw BSON, never decoded, one range at a time (scans: the
embedded server holds a query's whole result until its cursor is spent); restore inserts batches.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import io
import json
import re
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import BinaryIO

import bson
from bson import json_util
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo import IndexModel, MongoClient
from pymongo.collection import Collection

from healthcare_assets.domain.access import databases
from healthcare_assets.domain.encryption import KEY_VAULT_COLLECTION, KEY_VAULT_DB
from healthcare_assets.plumbing import scans
from healthcare_assets.plumbing.backup_store import LocalStore, S3Store, keep, open_store

MANIFEST = "manifest.json"
VERIFIED = "verified.json"
FORMAT = "mongodump-gzip"
INSERT_BATCH = 1_000
READ_CHUNK = 1 << 20
RAW = CodecOptions(document_class=RawBSONDocument)
EXTENDED_JSON = json_util.JSONOptions(json_mode=json_util.JSONMode.CANONICAL)
# What a backup is consistent with; the pool is named in defs/load.py (see the README's "Backups").
CONSISTENCY = ("taken while no load runs: Dagster pool `mongo_writes`, shared with mongo_hospitalizations; "
               "a publication to the analysts' copy caught halfway is finished from its ledger plan "
               "by the next release after a restore")

Store = LocalStore | S3Store


class BackupError(RuntimeError):
    """A backup that cannot be used; the message names the file."""


class RestoreRefusedError(RuntimeError):
    pass


def project_version() -> str:
    try:
        return metadata.version("healthcare-assets")
    except metadata.PackageNotFoundError:
        return "unknown"


def new_name(now: dt.datetime | None = None) -> str:
    """A backup's folder: its UTC time, to the microsecond, so names sort by age."""
    return (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%S.%fZ")


NAME = re.compile(r"\d{8}T\d{6}\.\d{6}Z")


def backups(store: Store) -> list[str]:
    """The backups in a store, oldest first. Only folders named like one: retention deletes what
    this lists, and a mistyped HEALTHCARE_BACKUP_URI may point at a folder holding anything."""
    return [name for name in store.names() if NAME.fullmatch(name)]


def bson_file(collection: str) -> str:
    return f"{collection}.bson.gz"


def metadata_file(collection: str) -> str:
    return f"{collection}.metadata.json.gz"


# ---- streams that count and hash what passes through them ------------------------------------


class _Digest(io.RawIOBase):
    """Wraps a binary stream; counts and hashes every byte written to it or read from it."""

    def __init__(self, stream: BinaryIO):
        self.stream, self.sha256, self.bytes = stream, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.stream.write(data)
        self.sha256.update(data)
        self.bytes += len(data)
        return len(data)

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size if size is not None and size >= 0 else None) or b""
        self.sha256.update(data)
        self.bytes += len(data)
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def drain(self) -> None:
        while self.read(READ_CHUNK):
            pass

    def summary(self) -> dict:
        return {"bytes": self.bytes, "sha256": self.sha256.hexdigest()}


def _write(store: Store, name: str, relpath: str, chunks: Iterator[bytes], compress: bool = True) -> dict:
    with store.writer(name, relpath) as raw:
        digest = _Digest(raw)
        if compress:
            # mtime=0 and no file name: the same documents give the same file
            with gzip.GzipFile(fileobj=digest, mode="wb", mtime=0, filename="") as out:
                for chunk in chunks:
                    out.write(chunk)
        else:
            for chunk in chunks:
                digest.write(chunk)
    return digest.summary()


# ---- what to read, range by range ------------------------------------------------------------


def read_ranges(collection: Collection, documents: int) -> list[dict]:
    """Filters that together take every document once, each a query the embedded server can hold:
    patient_id slices where that index exists, slices of a keyed _id where an index starts with
    _id (the analysts' copy; the plain _id index would be a whole-collection scan there), else the
    whole collection in one query (the small collections: bookkeeping, audit, erasures)."""
    firsts = [list(index["key"].keys()) for index in collection.list_indexes()]
    if any(keys[0] == scans.FIELD for keys in firsts):
        return scans.ranges(documents)
    if any(keys[0] == "_id" and len(keys) > 1 for keys in firsts):
        slices = scans.ranges(documents, "_id", 32)
        # keyed _ids are strings, and a range of strings takes no other type: any other goes last
        # (instead of the slice for a missing field, which an _id never is)
        return slices if slices == [{}] else [*slices[:-1], {"_id": {"$not": {"$type": "string"}}}]
    return [{}]


def raw_documents(collection: Collection, matches: list[dict]) -> Iterator[RawBSONDocument]:
    raw = collection.with_options(codec_options=RAW)
    for match in matches:
        yield from raw.find(match, batch_size=INSERT_BATCH)


# ---- writing a backup ------------------------------------------------------------------------


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
    """This deployment's data keys: their alt names start with one of its databases."""
    names = "|".join(re.escape(db) for db in databases(main_database).values())
    return {"keyAltNames": {"$regex": f"^({names})\\."}}


def _dump_collection(store: Store, name: str, client: MongoClient, db: str, info: dict,
                     files: dict, log: Callable[[str], None], match: dict | None = None) -> dict:
    """One collection's metadata and documents; with `match`, only the documents it selects (a
    collection the deployment shares, small: read in one query)."""
    coll_name, kind = info["name"], info.get("type", "collection")
    meta = {"options": info.get("options", {}), "collectionName": coll_name, "type": kind,
            "indexes": [] if kind == "view" else [dict(ix) for ix in client[db][coll_name].list_indexes()]}
    files[f"{db}/{metadata_file(coll_name)}"] = _write(
        store, name, f"{db}/{metadata_file(coll_name)}", iter([json_util.dumps(meta, json_options=EXTENDED_JSON).encode()]))
    if kind == "view":
        return {"type": "view"}
    collection = client[db][coll_name]
    if match is None:
        source_documents = collection.estimated_document_count()  # an exact count once no write runs
        matches = read_ranges(collection, source_documents)
    else:
        source_documents, matches = collection.count_documents(match), [match]
    counted = [0]

    def chunks() -> Iterator[bytes]:
        for doc in raw_documents(collection, matches):
            counted[0] += 1
            yield doc.raw

    files[f"{db}/{bson_file(coll_name)}"] = _write(store, name, f"{db}/{bson_file(coll_name)}", chunks())
    log(f"{db}.{coll_name}: {counted[0]:,} documents")
    entry = {"type": "collection", "documents": counted[0], "source_documents": source_documents}
    return entry if match is None else {**entry, "filter": match}


def write_backup(client: MongoClient, main_database: str, server: str, uri: str | None = None,
                 log: Callable[[str], None] = lambda _: None) -> Written:
    """Back up every database of the deployment into a new folder of the store at `uri`."""
    started = time.perf_counter()
    store, name = open_store(uri), new_name()
    files: dict[str, dict] = {}
    contents: dict[str, dict] = {}
    for db in databases(main_database).values():
        contents[db] = {info["name"]: _dump_collection(store, name, client, db, info, files, log)
                        for info in _collection_infos(client, db)}
    for info in _collection_infos(client, KEY_VAULT_DB):
        if info["name"] == KEY_VAULT_COLLECTION:
            contents[KEY_VAULT_DB] = {KEY_VAULT_COLLECTION: _dump_collection(
                store, name, client, KEY_VAULT_DB, info, files, log, key_vault_filter(main_database))}
    manifest = {
        "format": FORMAT, "name": name, "created_at": dt.datetime.now(dt.UTC).isoformat(),
        "source_server": server, "project_version": project_version(), "consistency": CONSISTENCY,
        "databases": contents, "files": files,
    }
    _write(store, name, MANIFEST, iter([json.dumps(manifest, indent=2).encode()]), compress=False)
    counts = {f"{db}.{c}": v["documents"] for db, cs in contents.items() for c, v in cs.items() if "documents" in v}
    return Written(name, store.location(name), manifest, time.perf_counter() - started, counts)


# ---- reading one back ------------------------------------------------------------------------


def _iter_bson(stream: BinaryIO, location: str) -> Iterator[bytes]:
    """The documents of a concatenated BSON stream, each checked to be whole, valid BSON."""
    while header := stream.read(4):
        if len(header) < 4:
            raise BackupError(f"{location}: ends inside a document's length (truncated)")
        (size,) = struct.unpack("<i", header)
        if size < 5:
            raise BackupError(f"{location}: a document claims {size} bytes (corrupted)")
        body = stream.read(size - 4)
        if len(body) < size - 4:
            raise BackupError(f"{location}: ends inside a document (truncated)")
        raw = header + body
        try:
            bson.decode(raw, codec_options=RAW)  # RawBSONDocument: checks the layout only
        except bson.errors.InvalidBSON as exc:
            raise BackupError(f"{location}: not valid BSON ({exc})") from None
        yield raw


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
class _Checked:
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

    def _compare(self, digest: _Digest) -> None:
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
            digest = _Digest(raw)
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
        return self._decompressed(lambda stream: _iter_bson(stream, self.location))

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

    def file(self, db: str, relpath: str) -> _Checked:
        path = f"{db}/{relpath}"
        return _Checked(self.store, self.name, path, self.manifest["files"].get(path))

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
        _write(backup.store, backup.name, VERIFIED, iter([json.dumps(report).encode()]), compress=False)


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


# ---- restore ---------------------------------------------------------------------------------


def _non_empty(client: MongoClient, db: str) -> list[str]:
    return [n for n in client[db].list_collection_names() if not n.startswith("system.")]


def _index_models(indexes: list[dict]) -> list[IndexModel]:
    return [IndexModel(list(ix["key"].items()), **{k: v for k, v in ix.items() if k not in ("v", "key", "ns")})
            for ix in indexes if ix["name"] != "_id_"]


def _insert(collection: Collection, batch: list[RawBSONDocument]) -> int:
    """Insert a batch as it was backed up. The server's validation is bypassed, as mongorestore
    --bypassDocumentValidation does: these documents were in the collection, and the backup's
    checksums say they are the same bytes; the validator is in force again for later writes.
    Raises on any document not inserted (insert_many reports no ids for raw documents)."""
    if batch:
        collection.insert_many(batch, ordered=False, bypass_document_validation=True)
    return len(batch)


def restore(backup: Opened, client: MongoClient, drop: bool = False, rename: dict[str, str] | None = None,
            log: Callable[[str], None] = lambda _: None) -> dict[str, int]:
    """Restore a verified backup: collections with their options (validators), their documents,
    then their indexes (built once, as mongorestore does), then the views. Refuses, before writing
    anything, a backup that does not verify and a target database that holds collections unless
    `drop`. `rename` maps a backed-up database to another (the restore drill's scratch databases).
    A collection backed up through a filter (the shared key vault) counts as busy when it holds
    documents the filter selects, and only those are replaced. Returns documents per
    "db.collection" of the target."""
    rename = rename or {}
    verify(backup)
    targets = {db: rename.get(db, db) for db in backup.manifest["databases"]}
    shared = {(targets[db], coll): entry["filter"] for db, coll, entry in backup.collections() if "filter" in entry}
    busy = {target: found for target in set(targets.values()) - {db for db, _ in shared}
            if (found := _non_empty(client, target))}
    held = {(db, coll): n for (db, coll), match in shared.items() if (n := client[db][coll].count_documents(match))}
    if (busy or held) and not drop:
        raise RestoreRefusedError("refusing to restore into non-empty databases: " + "; ".join(
            [f"{db} holds {', '.join(sorted(names)[:5])}" for db, names in busy.items()]
            + [f"{db}.{coll} holds {n} of this deployment's documents" for (db, coll), n in held.items()])
            + ". Add --drop to replace them.")
    for target in busy:
        client.drop_database(target)
    for db, coll in held:
        client[db][coll].delete_many(shared[(db, coll)])
    counts: dict[str, int] = {}
    views = []
    for db, coll, entry in backup.collections():
        meta, target = backup.metadata(db, coll), client[targets[db]]
        if entry["type"] == "view":
            views.append((target, coll, meta))
            continue
        if coll not in target.list_collection_names():
            target.create_collection(coll, **meta.get("options", {}))
        collection, batch, inserted = target[coll], [], 0
        for raw in backup.documents(db, coll):
            batch.append(RawBSONDocument(raw))
            if len(batch) == INSERT_BATCH:
                inserted += _insert(collection, batch)
                batch = []
        inserted += _insert(collection, batch)
        indexes = _index_models(meta.get("indexes", []))
        if indexes:
            collection.create_indexes(indexes)
        counts[f"{targets[db]}.{coll}"] = inserted
        log(f"{targets[db]}.{coll}: {inserted:,} documents, {len(indexes)} indexes")
    for target, coll, meta in views:
        target.create_collection(coll, **meta["options"])
        log(f"{target.name}.{coll}: view on {meta['options'].get('viewOn')}")
    return counts


# ---- the restore drill's comparison ----------------------------------------------------------


def _hashes(collection: Collection, match: dict) -> dict:
    return {doc["_id"]: hashlib.sha256(doc.raw).digest() for doc in raw_documents(collection, [match])}


def compare(source: MongoClient, restored: MongoClient, backup: Opened, rename: dict[str, str]) -> dict[str, dict]:
    """Every collection of the backup, restored, against the source, document by document (a
    SHA-256 of each document's BSON), one range at a time. Per "db.collection": identical,
    differing, only_in_backup, only_in_source."""
    report = {}
    for db, coll, entry in backup.collections():
        if entry["type"] == "view":
            continue
        ours, theirs = source[db][coll], restored[rename.get(db, db)][coll]
        tally = dict.fromkeys(("identical", "differing", "only_in_backup", "only_in_source"), 0)
        matches = ([entry["filter"]] if "filter" in entry
                   else read_ranges(ours, max(entry["documents"], ours.estimated_document_count())))
        for match in matches:
            want, got = _hashes(ours, match), _hashes(theirs, match)
            both = want.keys() & got.keys()
            same = sum(want[k] == got[k] for k in both)
            tally["identical"] += same
            tally["differing"] += len(both) - same
            tally["only_in_backup"] += len(got.keys() - want.keys())
            tally["only_in_source"] += len(want.keys() - got.keys())
        report[f"{db}.{coll}"] = tally
    return report
