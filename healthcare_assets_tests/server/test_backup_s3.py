"""Backups to S3 on moto's server over HTTP: encrypted with the KMS key, streamed in parts, no
object left by a failed upload, a bucket named by the URI."""

from __future__ import annotations

import shutil
import uuid

import boto3
import pytest

from healthcare_assets.defs.resources import resources
from healthcare_assets.domain.backup import files as backup_files
from healthcare_assets.domain.backup import reading, restore, writing
from healthcare_assets.plumbing.backup_store import PART_BYTES, S3Store
from healthcare_assets_tests.fixtures.environment import keys_now


def test_backup_to_s3_is_encrypted_and_restores(small_export_loaded, s3_bucket, monkeypatch):
    uri = f"s3://{s3_bucket}/backups"
    written = writing.write_backup(small_export_loaded.client(), small_export_loaded.database, small_export_loaded.server_label(), S3Store(uri), keys_now())
    s3 = boto3.client("s3")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket, Prefix="backups/")["Contents"]]
    assert f"backups/{written.name}/{backup_files.MANIFEST}" in keys
    for key in keys:
        assert s3.head_object(Bucket=s3_bucket, Key=key)["ServerSideEncryption"] == "AES256", key
    opened = reading.open_backup(uri, keys_now(), latest=True)
    assert opened.name == written.name
    scratch = {db: f"s3restore_{uuid.uuid4().hex[:8]}" for db in written.manifest["databases"]}
    client = small_export_loaded.client()
    try:
        counts = restore.restore(opened, client, keys_now(),small_export_loaded.database, small_export_loaded.collection, rename=scratch).counts
        assert sum(counts.values()) == sum(written.collections.values())
        report = restore.compare(client, client, opened, small_export_loaded.collection, scratch)
        assert not [t for t in report.values() if t["differing"] or t["only_in_backup"] or t["only_in_source"]]
        assert sum(t["identical"] for t in report.values()) == sum(written.collections.values())
    finally:
        for db in scratch.values():
            client.drop_database(db)
    # Retention on S3: deleting a backup removes every object under it.
    reading.mark_verified(opened, {}, keys_now())
    later = writing.write_backup(client, small_export_loaded.database, small_export_loaded.server_label(), S3Store(uri), keys_now())
    reading.mark_verified(reading.open_backup(later.location, keys_now()), {}, keys_now())
    assert reading.prune(S3Store(uri), later.name, keep_count=1, keys=keys_now()) == [written.name]
    assert not s3.list_objects_v2(Bucket=s3_bucket, Prefix=f"backups/{written.name}/").get("KeyCount")


def test_s3_uploads_are_streamed_in_parts_with_the_kms_key(s3_bucket, monkeypatch):
    monkeypatch.setenv("HEALTHCARE_BACKUP_KMS_KEY_ID", "alias/healthcare-backups")
    store = resources(resolve=True)["backups"].store(f"s3://{s3_bucket}/p")
    assert store.encryption() == {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "alias/healthcare-backups"}
    assert S3Store(f"s3://{s3_bucket}/p").encryption() == {"ServerSideEncryption": "AES256"}
    store.kms_key_id = ""  # moto has no KMS key of that name
    payload = bytes(range(256)) * ((2 * PART_BYTES + 12345) // 256)
    with store.writer("b", "big.bin") as out:
        for start in range(0, len(payload), 1 << 20):
            out.write(payload[start:start + (1 << 20)])
        assert len(out.parts) == 2 and len(out.buffer) < PART_BYTES  # never more than a part held
    head = boto3.client("s3").head_object(Bucket=s3_bucket, Key="p/b/big.bin", PartNumber=1)
    assert head["PartsCount"] == 3
    with store.reader("b", "big.bin") as stream:
        assert stream.read() == payload


def test_a_failed_upload_leaves_no_object(s3_bucket):
    store = S3Store(f"s3://{s3_bucket}/p")
    with pytest.raises(RuntimeError, match="interrupted"), store.writer("b", "x.bin") as out:
        out.write(b"some bytes")
        raise RuntimeError("interrupted")
    assert not store.exists("b", "x.bin")
    assert not boto3.client("s3").list_multipart_uploads(Bucket=s3_bucket).get("Uploads")


def test_an_s3_uri_names_a_bucket(tmp_path):
    with pytest.raises(ValueError, match="s3://bucket/prefix"):
        S3Store("s3://")
    shutil.rmtree(tmp_path)
    with pytest.raises(backup_files.BackupError, match="no good backup"):
        reading.open_backup(str(tmp_path), keys_now(), latest=True)
