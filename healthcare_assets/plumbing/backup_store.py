"""Backups, one sub-folder each, in a local folder or an S3 prefix (docs/backups.md). A symbolic link is never
followed: whoever can write the store could otherwise point a restore, or retention's deletion, anywhere."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import dagster as dg

from healthcare_assets.plumbing import settings

PART_BYTES = 8 << 20  # S3's minimum part is 5 MiB (the last part excepted)


# Each field of BackupStoreResource and the variable that sets it (docs/backups.md).
VARIABLES = {"uri": "HEALTHCARE_BACKUP_URI", "keep": "HEALTHCARE_BACKUP_KEEP", "kms_key_id": "HEALTHCARE_BACKUP_KMS_KEY_ID"}


class BackupStoreResource(dg.ConfigurableResource):
    """Where backups are written and how many are kept; a field whose variable is set is its dg.EnvVar."""

    uri: str = ""  # a folder or s3://bucket/prefix; empty: the data directory's backups/
    keep: str = "7"  # text, as a variable is: checked when pruning
    kms_key_id: str = ""  # S3 objects are encrypted under this KMS key, else with AES256

    def store(self, uri: str | None = None) -> LocalStore | S3Store:
        """`uri` over the configured one (a run's or a command's `to`)."""
        return open_store(uri or self.uri or str(settings.data_dir() / "backups"), self.kms_key_id)

    def kept(self) -> int:
        value = self.keep.strip()
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"HEALTHCARE_BACKUP_KEEP={value!r}: expected a whole number of at least 1")
        return int(value)


class LocalStore:
    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()

    def __str__(self) -> str:
        return str(self.root)

    def location(self, name: str, relpath: str = "") -> str:
        return str(self.root / name / relpath) if relpath else str(self.root / name)

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.is_symlink())

    def _path(self, name: str, relpath: str) -> Path:
        """The file, refused when it or a folder on its way from the root is a symbolic link."""
        path, step = self.root / name / relpath, self.root
        for part in Path(name, relpath).parts:
            step = step / part
            if step.is_symlink():
                raise OSError(f"{step}: a symbolic link, not followed in a backup store")
        return path

    def exists(self, name: str, relpath: str) -> bool:
        return self._path(name, relpath).is_file()

    @contextlib.contextmanager
    def writer(self, name: str, relpath: str) -> Iterator[BinaryIO]:
        path = self.root / name / relpath
        settings.private_dir(path.parent)
        # Created 0600 from the start (O_EXCL: a backup never overwrites a file), whatever the umask
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            yield out

    @contextlib.contextmanager
    def reader(self, name: str, relpath: str) -> Iterator[BinaryIO]:
        fd = os.open(self._path(name, relpath), os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as stream:
            yield stream

    def delete(self, name: str) -> None:
        shutil.rmtree(self.root / name)


class _MultipartWriter(io.RawIOBase):

    def __init__(self, client, bucket: str, key: str, encryption: dict):
        self.client, self.bucket, self.key = client, bucket, key
        self.upload_id = client.create_multipart_upload(Bucket=bucket, Key=key, **encryption)["UploadId"]
        self.parts: list[dict] = []
        self.buffer = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.buffer += data
        while len(self.buffer) >= PART_BYTES:
            self._upload(bytes(self.buffer[:PART_BYTES]))
            del self.buffer[:PART_BYTES]
        return len(data)

    def _upload(self, body: bytes) -> None:
        number = len(self.parts) + 1
        etag = self.client.upload_part(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                                       PartNumber=number, Body=body)["ETag"]
        self.parts.append({"PartNumber": number, "ETag": etag})

    def complete(self) -> None:
        if self.buffer or not self.parts:  # an empty object is one empty part
            self._upload(bytes(self.buffer))
            self.buffer.clear()
        self.client.complete_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                                              MultipartUpload={"Parts": self.parts})

    def abort(self) -> None:
        self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)


class S3Store:
    def __init__(self, uri: str, kms_key_id: str = ""):
        import boto3

        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        if not bucket:
            raise ValueError(f"{uri!r}: expected s3://bucket/prefix")
        self.bucket, self.prefix = bucket, prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.client, self.kms_key_id = boto3.client("s3"), kms_key_id

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def _key(self, name: str, relpath: str = "") -> str:
        return f"{self.prefix}{name}/{relpath}"

    def location(self, name: str, relpath: str = "") -> str:
        return f"s3://{self.bucket}/{self._key(name, relpath)}"

    def encryption(self) -> dict:
        if self.kms_key_id:
            return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": self.kms_key_id}
        return {"ServerSideEncryption": "AES256"}

    def names(self) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix,
                                                                       Delimiter="/")
        return sorted(p["Prefix"][len(self.prefix):].rstrip("/") for page in pages
                      for p in page.get("CommonPrefixes", []))

    def exists(self, name: str, relpath: str) -> bool:
        import botocore.exceptions

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(name, relpath))
            return True
        except botocore.exceptions.ClientError as exc:
            if exc.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    @contextlib.contextmanager
    def writer(self, name: str, relpath: str) -> Iterator[BinaryIO]:
        upload = _MultipartWriter(self.client, self.bucket, self._key(name, relpath), self.encryption())
        try:
            yield upload
            upload.complete()
        except BaseException:
            upload.abort()  # no half-written object, and no parts left to pay for
            raise

    @contextlib.contextmanager
    def reader(self, name: str, relpath: str) -> Iterator[BinaryIO]:
        body = self.client.get_object(Bucket=self.bucket, Key=self._key(name, relpath))["Body"]
        try:
            yield body
        finally:
            body.close()

    def delete(self, name: str) -> None:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self._key(name))
        for page in pages:
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                answer = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})
                # Quiet still lists what was refused (HTTP 200 all the same): not pruned, then
                if refused := answer.get("Errors"):
                    raise RuntimeError(f"{self}: {len(refused)} objects of {name} not deleted, e.g. "
                                          f"{refused[0].get('Key')}: {refused[0].get('Code')} {refused[0].get('Message', '')}")


def open_store(uri: str, kms_key_id: str = "") -> LocalStore | S3Store:
    return S3Store(uri, kms_key_id) if uri.startswith("s3://") else LocalStore(uri)
