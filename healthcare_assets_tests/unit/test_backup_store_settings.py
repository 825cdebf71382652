"""The backup store's settings reach the store from the resource, each refused by its variable's name."""

from __future__ import annotations

import pytest

from healthcare_assets.defs.resources import resources
from healthcare_assets.plumbing.backup_store import BackupStoreResource, LocalStore, S3Store


@pytest.mark.parametrize("keep", ["", " ", "0", "-1", "#", "1e3", "7.5", "x" * 10_000])
def test_a_retention_that_is_not_a_whole_number_of_at_least_one_is_refused(keep):
    with pytest.raises(ValueError, match=r"HEALTHCARE_BACKUP_KEEP=.*expected a whole number of at least 1"):
        BackupStoreResource(keep=keep).kept()


def test_the_variables_reach_the_store(tmp_path, monkeypatch):
    monkeypatch.setenv("HEALTHCARE_DATA_DIR", str(tmp_path / "data"))
    for variable in ("HEALTHCARE_BACKUP_URI", "HEALTHCARE_BACKUP_KEEP", "HEALTHCARE_BACKUP_KMS_KEY_ID"):
        monkeypatch.delenv(variable, raising=False)
    default = resources(resolve=True)["backups"]
    assert default.kept() == 7
    assert str(default.store()) == str(tmp_path / "data" / "backups")
    assert str(default.store(str(tmp_path / "given"))) == str(tmp_path / "given")  # a run's `to` wins
    monkeypatch.setenv("HEALTHCARE_BACKUP_URI", "s3://bucket/backups")
    monkeypatch.setenv("HEALTHCARE_BACKUP_KEEP", " 3 ")
    monkeypatch.setenv("HEALTHCARE_BACKUP_KMS_KEY_ID", "alias/backups")
    configured = resources(resolve=True)["backups"]
    store = configured.store()
    assert isinstance(store, S3Store) and str(store) == "s3://bucket/backups/" and configured.kept() == 3
    assert store.encryption() == {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "alias/backups"}
    assert isinstance(configured.store(str(tmp_path)), LocalStore)
