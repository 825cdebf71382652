"""Damaged backups refused, naming the file: a flipped byte, a truncated or missing file, a BSON
stream cut inside a document."""

from __future__ import annotations

import uuid
from pathlib import Path

import bson
import pytest

from healthcare_assets.domain.backup import files as backup_files
from healthcare_assets.domain.backup import reading, restore, writing
from healthcare_assets.domain.deployment_databases import databases
from healthcare_assets.plumbing.backup_store import LocalStore
from healthcare_assets_tests.fixtures.environment import keys_now


@pytest.mark.parametrize("damage", ["flipped byte", "truncated", "missing metadata"])
def test_a_damaged_backup_is_refused_naming_the_file(small_export_loaded, tmp_path, damage, capsys):
    written = writing.write_backup(small_export_loaded.client(), small_export_loaded.database, small_export_loaded.server_label(), LocalStore(tmp_path / "b"), keys_now())
    main = databases(small_export_loaded.database)["main"]
    folder = Path(written.location)
    if damage == "missing metadata":
        broken = folder / main / "hospitalizations.metadata.json.gz"
        broken.unlink()
    else:
        broken = folder / main / "hospitalizations.bson.gz"
        data = bytearray(broken.read_bytes())
        if damage == "flipped byte":
            data[len(data) // 2] ^= 0x01
        else:
            del data[len(data) - 100:]
        broken.write_bytes(bytes(data))
    with pytest.raises(backup_files.BackupError, match=str(broken)):
        reading.verify(reading.open_backup(str(folder), keys_now()))
    # The restore refuses it before writing anything, naming the file.
    scratch = {db: f"scratch_{uuid.uuid4().hex[:8]}" for db in written.manifest["databases"]}
    with pytest.raises(backup_files.BackupError, match=str(broken)):
        restore.restore(reading.open_backup(str(folder), keys_now()), small_export_loaded.client(), keys_now(),small_export_loaded.database, small_export_loaded.collection, rename=scratch)
    assert not set(scratch.values()) & set(small_export_loaded.client().list_database_names())


def test_a_bson_stream_cut_inside_a_document_is_named(tmp_path):
    """Damage the manifest agrees with (a backup written broken) is caught by the BSON framing."""
    store = LocalStore(tmp_path)
    docs = b"".join(bson.encode({"_id": i, "x": "y" * 50}) for i in range(3))
    summary = backup_files.write_file(store, "b", "db/c.bson.gz", iter([docs[:-10]]))
    opened = reading.Opened(store, "b", {"files": {"db/c.bson.gz": summary}})
    with pytest.raises(backup_files.BackupError, match=r"db/c\.bson\.gz: ends inside a document"):
        list(opened.documents("db", "c"))
