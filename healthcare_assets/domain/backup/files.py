"""A backup's files: names, layout, hashing streams and the ranges documents are read by."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import io
import re
import struct
from collections.abc import Iterator
from typing import BinaryIO

import bson
from bson import json_util
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo.collection import Collection

from healthcare_assets.domain.collection_definitions import COPY_KEY, STAYS_KEY
from healthcare_assets.plumbing import scans
from healthcare_assets.plumbing.backup_store import LocalStore, S3Store

MANIFEST = "manifest.json"
VERIFIED = "verified.json"
FORMAT = "mongodump-gzip"
INSERT_BATCH = 1_000
READ_CHUNK = 1 << 20
# What a file may inflate to, whatever it claims: a metadata file is a few KiB; a document at most 16 MiB + envelope
METADATA_MAX_BYTES = 1 << 20
DOCUMENT_MAX_BYTES = (16 << 20) + (16 << 10)
CLOCK_SKEW = dt.timedelta(minutes=5)
RAW = CodecOptions(document_class=RawBSONDocument)
EXTENDED_JSON = json_util.JSONOptions(json_mode=json_util.JSONMode.CANONICAL)

Store = LocalStore | S3Store


class BackupError(RuntimeError):
    """A backup that cannot be used; the message names the file."""


def new_name(now: dt.datetime | None = None) -> str:
    return (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%S.%fZ")


NAME = re.compile(r"\d{8}T\d{6}\.\d{6}Z")
# a name in a backup: nothing that could reach another namespace (a dot), a parent folder or a system collection
SAFE_NAME = re.compile(r"[A-Za-z0-9_]+")


def backups(store: Store) -> list[str]:
    """Only folders named like one: retention deletes these, and a mistyped URI may point at anything."""
    return [name for name in store.names() if NAME.fullmatch(name)]


def dated_in_future(name: str, now: dt.datetime | None = None) -> bool:
    """A backup named after a time still to come: no backup written here can be (clock skew aside)."""
    taken = dt.datetime.strptime(name, "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=dt.UTC)
    return taken > (now or dt.datetime.now(dt.UTC)) + CLOCK_SKEW


def manifest_collections(manifest: dict) -> Iterator[tuple[str, str, dict]]:
    for db, collections in manifest["databases"].items():
        for coll, entry in collections.items():
            yield db, coll, entry


def bson_file(collection: str) -> str:
    return f"{collection}.bson.gz"


def metadata_file(collection: str) -> str:
    return f"{collection}.metadata.json.gz"


class Digest(io.RawIOBase):

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


def write_file(store: Store, name: str, relpath: str, chunks: Iterator[bytes], compress: bool = True) -> dict:
    with store.writer(name, relpath) as raw:
        digest = Digest(raw)
        if not compress:
            for chunk in chunks:
                digest.write(chunk)
            return digest.summary()
        inflated = 0
        # mtime=0 and no file name: the same documents give the same file
        with gzip.GzipFile(fileobj=digest, mode="wb", mtime=0, filename="") as out:
            for chunk in chunks:
                inflated += out.write(chunk)
    return {**digest.summary(), "inflated_bytes": inflated}


def read_ranges(collection: Collection, documents: int) -> list[dict]:
    """Filters taking every document once, each a query the embedded server can hold (the plain _id index
    would scan the analysts' copy whole)."""
    firsts = [list(index["key"].keys()) for index in collection.list_indexes()]
    if any(keys[0] == STAYS_KEY[0] for keys in firsts):
        return scans.ranges(documents, *STAYS_KEY)
    if any(keys[0] == "_id" and len(keys) > 1 for keys in firsts):
        slices = scans.ranges(documents, *COPY_KEY)
        # a range of strings takes no other type: any other _id goes last (no _id is ever missing)
        return slices if slices == [{}] else [*slices[:-1], {"_id": {"$not": {"$type": "string"}}}]
    return [{}]


def raw_documents(collection: Collection, matches: list[dict]) -> Iterator[RawBSONDocument]:
    raw = collection.with_options(codec_options=RAW)
    for match in matches:
        yield from raw.find(match, batch_size=INSERT_BATCH)


def bson_documents(stream: BinaryIO, location: str) -> Iterator[bytes]:
    while header := stream.read(4):
        if len(header) < 4:
            raise BackupError(f"{location}: ends inside a document's length (truncated)")
        (size,) = struct.unpack("<i", header)
        if size < 5 or size > DOCUMENT_MAX_BYTES:
            raise BackupError(f"{location}: a document claims {size:,} bytes (corrupted: a document is 5 bytes "
                              f"to {DOCUMENT_MAX_BYTES:,})")
        body = stream.read(size - 4)
        if len(body) < size - 4:
            raise BackupError(f"{location}: ends inside a document (truncated)")
        raw = header + body
        try:
            bson.decode(raw, codec_options=RAW)  # RawBSONDocument: checks the layout only
        except bson.errors.InvalidBSON as exc:
            raise BackupError(f"{location}: not valid BSON ({exc})") from None
        yield raw


