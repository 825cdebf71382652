"""The compose deployment's MinIO users: who holds which S3 credentials, and what each may do.

The policies are enforced, not only read. minio-setup's own script runs here (bash, with a
recorder standing in for mc) and renders deploy/minio/*.json from a .env; a moto server of this
test's own, in its own process, is given exactly those documents as the IAM policies of two users,
then switched to enforcing IAM (moto's reset-auth), and real boto3 calls are made as each user,
the backups through the product's own S3Store. What moto does not evaluate: policy conditions
other than StringEquals, so the s3:prefix limit on listing is checked as written, not enforced;
and moto authorizes a DeleteObjects request as s3:DeleteObject on the bucket's ARN, then each key
against the bucket policy only, where MinIO and S3 authorize s3:DeleteObject for each key alone
(MinIO's DeleteMultipleObjectsHandler ignores its bucket-level check). So the pipeline's moto copy
also allows s3:DeleteObject on the bucket ARN, which names no object on MinIO, and pruning's limit
to the backup prefix rests on the single-key DeleteObject checks below.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import boto3
import botocore.exceptions
import pytest

from healthcare_assets.plumbing.backup_store import S3Store
from healthcare_assets.plumbing.embedded_mongo import HOST, free_port
from healthcare_assets_tests.fixtures.compose import (
    dash_leading_env,
    install_recorders,
    local_environment,
    rendered_compose,
    run_recorded_shell,
)

# Not the defaults: the rendering must follow .env (the backup prefix as the code normalises it).
DROP_PREFIX, BACKUP_PREFIX = "drops/hospital-a/", "/nightly/"
WRITTEN_BACKUP_PREFIX = "nightly/"
UNRELATED = "unrelated-bucket"


def _env_with(tmp_path: Path, **settings: str) -> tuple[Path, dict[str, str]]:
    env_file, values = dash_leading_env(tmp_path)
    lines = [line for line in env_file.read_text().splitlines() if line.partition("=")[0] not in settings]
    env_file.write_text("\n".join([*lines, *(f"{k}={v}" for k, v in settings.items())]) + "\n")
    return env_file, values


def _run_setup(tmp_path: Path, env_file: Path) -> tuple[dict, list[list[str]]]:
    """minio-setup's script as rendered by Compose from env_file, mc replaced by a recorder."""
    setup = rendered_compose(env_file)["services"]["minio-setup"]
    bin_dir, log = tmp_path / "bin", tmp_path / "mc.jsonl"
    install_recorders(bin_dir, log, "mc")
    environment = local_environment("minio-setup", setup, tmp_path)
    return environment, run_recorded_shell(setup["entrypoint"][0], setup["command"][0], environment, bin_dir, log)


# ---- who holds what -------------------------------------------------------------------------------

def test_only_minio_and_its_setup_hold_the_root_user_and_the_pipeline_has_its_own(tmp_path):
    env_file, values = dash_leading_env(tmp_path)
    services = rendered_compose(env_file)["services"]

    def holders(secret: str) -> set[str]:
        return {name for name, service in services.items()
                if any(secret in str(v) for v in (service.get("environment") or {}).values())}

    assert holders(values["MINIO_ROOT_PASSWORD"]) == {"minio", "minio-setup"}
    assert {name for name, service in services.items()
            if {"MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"} & set(service.get("environment") or {})} == {"minio"}
    # The pipeline (the code server and the runs it starts) signs with its own user, not the root.
    code, minio = services["user-code"]["environment"], services["minio"]["environment"]
    assert code["AWS_SECRET_ACCESS_KEY"] == values["HEALTHCARE_PIPELINE_S3_SECRET_KEY"]
    assert code["AWS_ACCESS_KEY_ID"] == services["minio-setup"]["environment"]["HEALTHCARE_PIPELINE_S3_ACCESS_KEY"]
    assert code["AWS_ACCESS_KEY_ID"] != minio["MINIO_ROOT_USER"]
    assert holders(values["HEALTHCARE_PIPELINE_S3_SECRET_KEY"]) == {"user-code", "minio-setup"}
    # The uploader's secret is in no container but the one that creates its user.
    assert holders(values["HEALTHCARE_DROP_S3_SECRET_KEY"]) == {"minio-setup"}


@pytest.mark.parametrize("setting", [
    {"HEALTHCARE_S3_PREFIX": 'incoming/"}],"Statement":[{"Effect":"Allow'},
    {"HEALTHCARE_S3_PREFIX": "*"},
    {"HEALTHCARE_BACKUP_PREFIX": "${aws:username}/"},
    {"HEALTHCARE_S3_PREFIX": "in\\coming/"},
    {"HEALTHCARE_BACKUP_BUCKET": "Backups_With_Capitals"},
    {"HEALTHCARE_BACKUP_RETENTION_DAYS": "two weeks"},
    {"HEALTHCARE_PIPELINE_S3_ACCESS_KEY": "hospital-uploader"},  # the uploader's name: one user, both policies
])
def test_setup_refuses_values_that_would_change_a_policy(tmp_path, setting):
    env_file, _ = _env_with(tmp_path, **setting)
    setup = rendered_compose(env_file)["services"]["minio-setup"]
    bin_dir, log = tmp_path / "bin", tmp_path / "mc.jsonl"
    install_recorders(bin_dir, log, "mc")
    log.write_text("")
    environment = {**{k: str(v) for k, v in local_environment("minio-setup", setup, tmp_path).items()},
                   "PATH": f"{bin_dir}:/usr/bin:/bin"}
    result = subprocess.run([setup["entrypoint"][0], "-c", setup["command"][0].replace("$$", "$")], env=environment,
                            check=False, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode != 0 and "minio-setup:" in result.stderr, result.stderr
    assert log.read_text() == ""  # refused before anything was created


# ---- what each may do, enforced --------------------------------------------------------------------

@pytest.fixture
def enforcing_moto(tmp_path):
    """A moto server in a process of its own (moto's auth switch is global to a process, and the
    session's server must stay open); it enforces IAM once reset-auth is posted 0."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "INITIAL_NO_AUTH_ACTION_COUNT"}
    with open(tmp_path / "moto.log", "wb") as out:
        server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)], env=env,
                                  stdout=out, stderr=subprocess.STDOUT)
    endpoint = f"http://{HOST}:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=1).close()
                break
            except OSError:
                assert server.poll() is None, (tmp_path / "moto.log").read_text()
                assert time.monotonic() < deadline, \
                    f"moto's server did not answer on {endpoint} in 60 s:\n{(tmp_path / 'moto.log').read_text()}"
                time.sleep(0.1)
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=30)


def _enforce(endpoint: str, on: bool) -> None:
    # not form-encoded (urllib's default type), or the server never sees the body
    request = urllib.request.Request(f"{endpoint}/moto-api/reset-auth", data=b"0" if on else b"inf", method="POST",
                                     headers={"Content-Type": "application/octet-stream"})
    urllib.request.urlopen(request, timeout=10).close()


def _client(service: str, endpoint: str, key: dict):
    return boto3.client(service, endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"])


def _allowed(call, *args, **kwargs) -> bool:
    try:
        call(*args, **kwargs)
        return True
    except botocore.exceptions.ClientError as exc:
        if exc.response["Error"]["Code"] in ("AccessDenied", "403"):
            return False
        raise


def test_each_user_can_do_what_its_policy_says_and_nothing_else(tmp_path, enforcing_moto, monkeypatch):
    env_file, _ = _env_with(tmp_path, HEALTHCARE_S3_PREFIX=DROP_PREFIX, HEALTHCARE_BACKUP_PREFIX=BACKUP_PREFIX)
    environment, ran = _run_setup(tmp_path, env_file)
    drop_bucket, backups = environment["HEALTHCARE_S3_BUCKET"], environment["HEALTHCARE_BACKUP_BUCKET"]
    policies = {argv[5]: Path(argv[6]).read_text() for argv in ran if argv[1:4] == ["admin", "policy", "create"]}
    attached = {argv[-1]: argv[5] for argv in ran if argv[1:4] == ["admin", "policy", "attach"]}
    uploader, pipeline_user = environment["HEALTHCARE_DROP_S3_ACCESS_KEY"], environment["HEALTHCARE_PIPELINE_S3_ACCESS_KEY"]
    assert set(attached) == {uploader, pipeline_user}
    [retention] = [argv for argv in ran if argv[1:3] == ["retention", "set"]]
    assert retention[3:5] == ["--default", "GOVERNANCE"] and retention[-1] == f"minio/{backups}"

    # As minio-setup leaves MinIO: the buckets (backups versioned and locked), the users, their policies.
    admin_key = {"AccessKeyId": "admin", "SecretAccessKey": "admin"}
    admin, iam = _client("s3", enforcing_moto, admin_key), _client("iam", enforcing_moto, admin_key)
    admin.create_bucket(Bucket=drop_bucket)
    admin.create_bucket(Bucket=backups, ObjectLockEnabledForBucket=True)
    admin.put_bucket_versioning(Bucket=backups, VersioningConfiguration={"Status": "Enabled"})
    admin.put_object_lock_configuration(Bucket=backups, ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled",
        "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": int(retention[5].removesuffix("d"))}}})
    admin.create_bucket(Bucket=UNRELATED)
    admin.put_object(Bucket=UNRELATED, Key="x", Body=b"x")
    admin.put_object(Bucket=backups, Key=f"{WRITTEN_BACKUP_PREFIX}old/manifest.json", Body=b"{}")
    as_on_minio = json.loads(policies["healthcare-pipeline"])
    as_on_minio["Statement"].append({"Effect": "Allow", "Action": ["s3:DeleteObject"],
                                     "Resource": [f"arn:aws:s3:::{backups}"]})
    documents = {**policies, "moto-pipeline": json.dumps(as_on_minio)}
    keys = {}
    for user, policy in [(uploader, attached[uploader]), (pipeline_user, "moto-pipeline"),
                         ("exact-pipeline", attached[pipeline_user])]:
        iam.create_user(UserName=user)
        arn = iam.create_policy(PolicyName=policy, PolicyDocument=documents[policy])["Policy"]["Arn"]
        iam.attach_user_policy(UserName=user, PolicyArn=arn)
        keys[user] = iam.create_access_key(UserName=user)["AccessKey"]
    _enforce(enforcing_moto, on=True)
    with pytest.raises(botocore.exceptions.ClientError, match="InvalidAccessKeyId"):
        admin.list_buckets()  # enforcing: a key no user holds is refused

    drop = _client("s3", enforcing_moto, keys[uploader])
    assert _allowed(drop.put_object, Bucket=drop_bucket, Key=f"{DROP_PREFIX}export.csv", Body=b"a,b\n1,2\n")
    for key in ("export.csv", "drops/hospital-b/export.csv", "drops/hospital-a"):
        assert not _allowed(drop.put_object, Bucket=drop_bucket, Key=key, Body=b"x"), key
    assert not _allowed(drop.get_object, Bucket=drop_bucket, Key=f"{DROP_PREFIX}export.csv")
    assert not _allowed(drop.head_object, Bucket=drop_bucket, Key=f"{DROP_PREFIX}export.csv")
    assert not _allowed(drop.list_objects_v2, Bucket=drop_bucket, Prefix=DROP_PREFIX)
    assert not _allowed(drop.delete_object, Bucket=drop_bucket, Key=f"{DROP_PREFIX}export.csv")
    assert not _allowed(drop.list_buckets)
    assert not _allowed(drop.list_objects_v2, Bucket=backups, Prefix=WRITTEN_BACKUP_PREFIX)
    assert not _allowed(drop.get_object, Bucket=backups, Key=f"{WRITTEN_BACKUP_PREFIX}old/manifest.json")
    assert not _allowed(drop.put_object, Bucket=backups, Key=f"{WRITTEN_BACKUP_PREFIX}old/manifest.json", Body=b"")
    assert not _allowed(drop.delete_object, Bucket=backups, Key=f"{WRITTEN_BACKUP_PREFIX}old/manifest.json")
    assert not _allowed(drop.put_object, Bucket=UNRELATED, Key=f"{DROP_PREFIX}x", Body=b"x")

    pipeline = _client("s3", enforcing_moto, keys[pipeline_user])
    listed = pipeline.list_objects_v2(Bucket=drop_bucket, Prefix=DROP_PREFIX)["Contents"]
    assert [o["Key"] for o in listed] == [f"{DROP_PREFIX}export.csv"]
    assert pipeline.get_object(Bucket=drop_bucket, Key=f"{DROP_PREFIX}export.csv")["Body"].read() == b"a,b\n1,2\n"
    assert not _allowed(pipeline.put_object, Bucket=drop_bucket, Key=f"{DROP_PREFIX}forged.csv", Body=b"x")
    assert not _allowed(pipeline.delete_object, Bucket=drop_bucket, Key=f"{DROP_PREFIX}export.csv")
    assert not _allowed(pipeline.get_object, Bucket=UNRELATED, Key="x")
    assert not _allowed(pipeline.list_buckets)
    assert not _allowed(pipeline.put_bucket_versioning, Bucket=backups,
                        VersioningConfiguration={"Status": "Suspended"})
    assert not _allowed(pipeline.put_object_lock_configuration, Bucket=backups,
                        ObjectLockConfiguration={"ObjectLockEnabled": "Enabled"})

    # The backups, through the product's own store, as the code server's runs use it.
    def store_as(user: str) -> S3Store:
        monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # it keeps the first credentials it found
        for name, value in {"AWS_ENDPOINT_URL": enforcing_moto, "AWS_DEFAULT_REGION": "us-east-1",
                            "AWS_ACCESS_KEY_ID": keys[user]["AccessKeyId"],
                            "AWS_SECRET_ACCESS_KEY": keys[user]["SecretAccessKey"]}.items():
            monkeypatch.setenv(name, value)
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION", "HEALTHCARE_BACKUP_KMS_KEY_ID"):
            monkeypatch.delenv(name, raising=False)
        return S3Store(f"s3://{backups}/{BACKUP_PREFIX}")

    # A refused prune (here moto's bucket-level refusal) is an error, not a silent success.
    with pytest.raises(RuntimeError, match="not deleted.*AccessDenied"):
        store_as("exact-pipeline").delete("old")
    store = store_as(pipeline_user)
    for name in ("b1", "b2"):
        with store.writer(name, "manifest.json") as out:
            out.write(json.dumps({"name": name}).encode())
    assert store.names() == ["b1", "b2", "old"]
    with store.reader("b1", "manifest.json") as stream:
        assert json.loads(stream.read()) == {"name": "b1"}
    version = pipeline.head_object(Bucket=backups, Key=f"{WRITTEN_BACKUP_PREFIX}b1/manifest.json")["VersionId"]
    store.delete("b1")  # pruning: DeleteObjects without versions, on a versioned, locked bucket
    # Gone from the current view. (Not asserted on store.names(): moto, like some S3 servers, still
    # rolls a prefix holding only delete markers up into CommonPrefixes; S3 does not.)
    assert not store.exists("b1", "manifest.json") and store.exists("b2", "manifest.json")
    assert pipeline.list_objects_v2(Bucket=backups, Prefix=f"{WRITTEN_BACKUP_PREFIX}b1/")["KeyCount"] == 0
    # ... but the pruned bytes cannot be destroyed with the pipeline's credentials
    for bypass in (False, True):
        assert not _allowed(pipeline.delete_object, Bucket=backups, Key=f"{WRITTEN_BACKUP_PREFIX}b1/manifest.json",
                            VersionId=version, BypassGovernanceRetention=bypass)
    assert not _allowed(pipeline.put_object, Bucket=backups, Key="elsewhere/b1/manifest.json", Body=b"")
    assert not _allowed(pipeline.list_object_versions, Bucket=backups, Prefix=WRITTEN_BACKUP_PREFIX)

    # ... and the root (here moto's unauthenticated admin) can still get the pruned backup back.
    _enforce(enforcing_moto, on=False)
    pruned = admin.list_object_versions(Bucket=backups, Prefix=f"{WRITTEN_BACKUP_PREFIX}b1/")
    assert [m["IsLatest"] for m in pruned["DeleteMarkers"]] == [True]
    assert [v["VersionId"] for v in pruned["Versions"]] == [version]
    kept = admin.get_object(Bucket=backups, Key=f"{WRITTEN_BACKUP_PREFIX}b1/manifest.json", VersionId=version)
    assert json.loads(kept["Body"].read()) == {"name": "b1"}


def test_listing_is_limited_to_the_prefixes_as_written(tmp_path):
    """moto ignores StringLike conditions, so this limit of s3:ListBucket (which MinIO evaluates)
    is checked in the rendered documents themselves."""
    env_file, _ = _env_with(tmp_path, HEALTHCARE_S3_PREFIX=DROP_PREFIX, HEALTHCARE_BACKUP_PREFIX=BACKUP_PREFIX)
    environment, ran = _run_setup(tmp_path, env_file)
    policies = {argv[5]: json.loads(Path(argv[6]).read_text()) for argv in ran if argv[1:4] == ["admin", "policy", "create"]}
    drop_bucket, backups = environment["HEALTHCARE_S3_BUCKET"], environment["HEALTHCARE_BACKUP_BUCKET"]
    listing = {statement["Resource"][0]: statement.get("Condition")
               for policy in policies.values() for statement in policy["Statement"]
               if "s3:ListBucket" in statement["Action"]}
    assert listing == {f"arn:aws:s3:::{drop_bucket}": {"StringLike": {"s3:prefix": [f"{DROP_PREFIX}*"]}},
                       f"arn:aws:s3:::{backups}": {"StringLike": {"s3:prefix": [f"{WRITTEN_BACKUP_PREFIX}*"]}}}
    # Every statement allows, names its resources, and none reaches beyond the two buckets.
    for policy in policies.values():
        for statement in policy["Statement"]:
            assert statement["Effect"] == "Allow" and "*" not in statement["Action"]
            assert all(r.startswith((f"arn:aws:s3:::{drop_bucket}", f"arn:aws:s3:::{backups}"))
                       for r in statement["Resource"]), statement
    assert {a for s in policies["healthcare-drop-zone"]["Statement"] for a in s["Action"]} == {"s3:PutObject"}
