"""Which backups are kept: retention deletes older backups only after a newer one verified; the
CLI keeps the newest."""

from __future__ import annotations

import datetime as dt
import json

from healthcare_assets.domain.backup import files as backup_files
from healthcare_assets.domain.backup import reading, signing
from healthcare_assets.plumbing.backup_store import LocalStore
from healthcare_assets.tooling import cli
from healthcare_assets_tests.fixtures.environment import keys_now


def signed_backup(store: LocalStore, name: str, verified: bool = True) -> None:
    """An empty backup this deployment signed (and, with `verified`, read back)."""
    manifest = signing.sign({"format": backup_files.FORMAT, "name": name, "databases": {}, "files": {}},
                            signing.writing_key(keys_now()))
    backup_files.write_file(store, name, backup_files.MANIFEST, iter([json.dumps(manifest).encode()]), compress=False)
    if verified:
        reading.mark_verified(reading.Opened(store, name, manifest), {}, keys_now())


def test_retention_deletes_older_backups_only_after_a_newer_one_verified(tmp_path):
    store = LocalStore(tmp_path)
    a, b, c, d = (backup_files.new_name(dt.datetime(2026, 11, day, tzinfo=dt.UTC)) for day in (1, 2, 3, 4))
    for name in (a, b, d):
        signed_backup(store, name)
    signed_backup(store, c, verified=False)
    (tmp_path / "not-a-backup").mkdir()
    # c (unverified) and d (newer than the one just verified) are never counted or deleted; a
    # folder not named like a backup is never deleted.
    assert reading.prune(store, b, keep_count=1, keys=keys_now()) == [a]
    assert store.names() == [b, c, d, "not-a-backup"]
    assert reading.prune(store, d, keep_count=1, keys=keys_now()) == [b]
    assert store.names() == [c, d, "not-a-backup"]


def test_the_cli_keeps_the_newest_backups(small_export_loaded, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HEALTHCARE_BACKUP_KEEP", "2")
    monkeypatch.setenv("HEALTHCARE_BACKUP_URI", str(tmp_path / "backups"))
    for _ in range(3):
        assert cli.main(["backup"]) == 0
    names = LocalStore(tmp_path / "backups").names()
    assert len(names) == 2 and all((tmp_path / "backups" / n / backup_files.VERIFIED).exists() for n in names)
    assert "deleted older backup" in capsys.readouterr().out
