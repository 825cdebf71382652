"""A `mongodump --gzip` folder read as a backup (domain/backup/plain_dump.py), on folders written
here in mongodump's layout; and hostile ones, refused naming the file. The server tier
(server/test_mongo_tools.py) reads a folder the real mongodump wrote."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import struct
from pathlib import Path

import bson
import pytest
from bson import json_util

from healthcare_assets.domain.backup.files import METADATA_MAX_BYTES, BackupError
from healthcare_assets.domain.backup.plain_dump import open_plain_dump

STAYS = [{"_id": f"stay-{i}", "patient_id": f"p{i % 2}", "age": 30 + i} for i in range(3)]


def _metadata(name: str, kind: str = "collection", options: dict | None = None) -> bytes:
    meta = {"indexes": [] if kind == "view" else [{"v": 2, "key": {"_id": 1}, "name": "_id_"}],
            "uuid": "0" * 32, "collectionName": name, "type": kind}
    if options:
        meta = {"options": options, **meta}
    return gzip.compress(json_util.dumps(meta).encode())


@pytest.fixture
def dump(tmp_path) -> Path:
    """Two databases as `mongodump --gzip --out` lays them out: a collection, an empty one, a view."""
    root = tmp_path / "dump"
    main, vault = root / "main_db", root / "encryption"
    main.mkdir(parents=True)
    vault.mkdir()
    (main / "hospitalizations.bson.gz").write_bytes(gzip.compress(b"".join(bson.encode(d) for d in STAYS)))
    (main / "hospitalizations.metadata.json.gz").write_bytes(_metadata("hospitalizations"))
    (main / "view_1.metadata.json.gz").write_bytes(
        _metadata("view_1", "view", {"viewOn": "hospitalizations", "pipeline": [{"$project": {"age": 1}}]}))
    (vault / "__keyVault.bson.gz").write_bytes(gzip.compress(b""))
    (vault / "__keyVault.metadata.json.gz").write_bytes(_metadata("__keyVault"))
    return root


def test_a_mongodump_folder_reads_as_a_backup(dump):
    opened = open_plain_dump(str(dump))
    assert opened.location == str(dump) and opened.name == "dump"
    assert opened.manifest["format"] == "mongodump-gzip"
    assert opened.manifest["databases"] == {
        "encryption": {"__keyVault": {"type": "collection", "documents": 0}},
        "main_db": {"hospitalizations": {"type": "collection", "documents": 3}, "view_1": {"type": "view"}}}
    on_disk = {str(p.relative_to(dump)): {"bytes": p.stat().st_size, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
               for p in dump.rglob("*.gz")}
    assert opened.manifest["files"] == on_disk
    assert [bson.decode(raw) for raw in opened.documents("main_db", "hospitalizations")] == STAYS
    assert opened.metadata("main_db", "view_1")["options"]["viewOn"] == "hospitalizations"
    assert list(opened.collections())[-1] == ("main_db", "view_1", {"type": "view"})
    report = opened.verify()
    assert {k: v for k, v in report.items() if k != "unverified"} == {
        "backup": str(dump), "collections": 3, "documents": 3, "bytes": sum(f["bytes"] for f in on_disk.values())}
    assert len(report["unverified"]) == 3 and all(s.endswith(".") for s in report["unverified"])


def test_files_mongodump_writes_beside_the_databases_are_ignored(dump):
    (dump / "prelude.json").write_text("{}")
    (dump / "oplog.bson").write_bytes(b"")
    opened = open_plain_dump(str(dump))
    assert set(opened.manifest["databases"]) == {"encryption", "main_db"}
    assert any("oplog" in s for s in opened.verify()["unverified"])


def _symlinked_file(dump: Path) -> Path:
    target = dump.parent / "elsewhere.bson.gz"
    shutil.move(dump / "main_db" / "hospitalizations.bson.gz", target)
    (dump / "main_db" / "hospitalizations.bson.gz").symlink_to(target)
    return dump / "main_db" / "hospitalizations.bson.gz"


def _symlinked_folder(dump: Path) -> Path:
    shutil.move(dump / "main_db", dump.parent / "elsewhere")
    (dump / "main_db").symlink_to(dump.parent / "elsewhere")
    return dump / "main_db"


def _dotted_database(dump: Path) -> Path:
    (dump / "main_db").rename(dump / "main.db")
    return dump / "main.db"


def _dotted_collection(dump: Path) -> Path:
    (dump / "main_db" / "hospitalizations.bson.gz").rename(dump / "main_db" / "..bson.gz")
    return dump / "main_db" / "..bson.gz"


def _dot_in_collection(dump: Path) -> Path:
    path = dump / "main_db" / "system.views.metadata.json.gz"
    path.write_bytes(_metadata("system.views"))
    return path


def _metadata_bomb(dump: Path) -> Path:
    path = dump / "main_db" / "hospitalizations.metadata.json.gz"
    path.write_bytes(gzip.compress(b'{"collectionName": "hospitalizations", "pad": "' + b" " * (METADATA_MAX_BYTES + 10) + b'"}'))
    assert path.stat().st_size < 10_000
    return path


def _truncated(dump: Path) -> Path:
    path = dump / "main_db" / "hospitalizations.bson.gz"
    path.write_bytes(path.read_bytes()[:-12])
    return path


def _forged_length(dump: Path) -> Path:
    """A document claiming 1 GiB, followed by 1 GiB of zeros that compress to almost nothing."""
    path = dump / "main_db" / "hospitalizations.bson.gz"
    with gzip.open(path, "wb") as out:
        out.write(struct.pack("<i", 1 << 30))
        for _ in range(64):
            out.write(bytes(16 << 20))
    return path


def _stray_file(dump: Path) -> Path:
    path = dump / "main_db" / "hospitalizations.bson"
    path.write_bytes(b"")
    return path


def _missing_metadata(dump: Path) -> Path:
    path = dump / "main_db" / "hospitalizations.metadata.json.gz"
    path.unlink()
    return path


@pytest.mark.parametrize(("damage", "said"), [
    (_symlinked_file, "a symbolic link"), (_symlinked_folder, "a symbolic link"),
    (_dotted_database, "database name 'main.db' is not"), (_dotted_collection, "collection name '.' is not"),
    (_dot_in_collection, "collection name 'system.views' is not"), (_metadata_bomb, "inflates to more than 1,048,576"),
    (_truncated, "cannot be decompressed"), (_forged_length, "a document claims 1,073,741,824 bytes (corrupted"),
    (_stray_file, "not a file `mongodump --gzip` writes"), (_missing_metadata, "missing"),
], ids=lambda p: p.__name__.strip("_") if callable(p) else "")
def test_a_hostile_folder_is_refused_naming_the_file(dump, damage, said):
    broken = damage(dump)
    with pytest.raises(BackupError) as refused:
        open_plain_dump(str(dump))
    assert str(refused.value).startswith(f"{broken}: {said}"), refused.value


def test_a_file_changed_after_the_folder_was_opened_is_refused(dump):
    opened = open_plain_dump(str(dump))
    path = dump / "main_db" / "hospitalizations.bson.gz"
    path.write_bytes(gzip.compress(b"".join(bson.encode(d) for d in STAYS[:2])))
    with pytest.raises(BackupError, match=f"^{path}: .*changed since"):
        list(opened.documents("main_db", "hospitalizations"))
    with pytest.raises(BackupError, match=f"^{path}: "):
        opened.verify()
    os.remove(path)
    path.symlink_to(dump.parent)  # swapped for a link after the folder was listed
    with pytest.raises(BackupError, match=f"^{path}: a symbolic link"):
        list(opened.documents("main_db", "hospitalizations"))
