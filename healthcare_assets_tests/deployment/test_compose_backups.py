"""The compose deployment's backups: the code server's rendered environment, read by the code,
writes daily encrypted backups to the bucket minio-setup creates."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from urllib.parse import urlsplit

import boto3

from healthcare_assets_tests.fixtures.compose import (
    dash_leading_env,
    install_recorders,
    local_environment,
    rendered_compose,
    run_recorded_shell,
)
from healthcare_assets_tests.fixtures.environment import REPO


def test_backups_go_to_the_bucket_the_stack_creates_daily(tmp_path, mongo, moto_endpoint):
    """The code server's rendered environment, read by the code: the daily schedule is on, and a
    backup lands, encrypted, in the bucket minio-setup's command creates. Only the endpoints are
    this machine's (moto for MinIO, the embedded server for mongo); MinIO's own SSE-S3 with
    MINIO_KMS_SECRET_KEY is not exercised (moto does not need a key)."""
    env_file, _ = dash_leading_env(tmp_path)
    services = rendered_compose(env_file)["services"]
    assert services["minio"]["environment"]["MINIO_KMS_SECRET_KEY"]  # MinIO refuses SSE-S3 without a key
    bin_dir, log = tmp_path / "bin", tmp_path / "argv.jsonl"
    install_recorders(bin_dir, log, "mc")
    setup = services["minio-setup"]
    ran = run_recorded_shell(setup["entrypoint"][0], setup["command"][0], local_environment("minio-setup", setup, tmp_path),
                     bin_dir, log)
    buckets = [argv[-1].removeprefix("minio/") for argv in ran if argv[1] == "mb"]
    code = {k: str(v) for k, v in services["user-code"]["environment"].items()}
    uri = urlsplit(code["HEALTHCARE_BACKUP_URI"])
    assert uri.scheme == "s3" and uri.netloc in buckets and code["HEALTHCARE_S3_BUCKET"] in buckets

    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1",
                      aws_access_key_id=code["AWS_ACCESS_KEY_ID"], aws_secret_access_key=code["AWS_SECRET_ACCESS_KEY"])
    for bucket in buckets:
        s3.create_bucket(Bucket=bucket)
    mongo.hospitalizations().insert_many([{"_id": f"r{n}", "n": n} for n in range(30)])
    env = {**code, "AWS_ENDPOINT_URL": moto_endpoint, "MONGODB_URI": mongo.uri(), "MONGODB_DATABASE": mongo.database,
           "PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), "HEALTHCARE_DATA_DIR": str(tmp_path / "data"),
           "DAGSTER_HOME": str(tmp_path)}
    probe = ("import json; from healthcare_assets.defs.backup import backups;"
             "print(json.dumps([s.default_status.value for s in backups().schedules]))")
    for command in ([sys.executable, "-c", probe], [sys.executable, "-m", "healthcare_assets.tooling.cli", "backup"]):
        result = subprocess.run(command, env=env, check=False, capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
        if command[1] == "-c":
            assert json.loads(result.stdout.splitlines()[-1]) == ["RUNNING", "RUNNING"]
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=uri.netloc)["Contents"]]
    prefix = uri.path.strip("/") + "/"
    manifests = [k for k in keys if k.startswith(prefix) and k.endswith("/manifest.json")]
    assert len(manifests) == 1, keys
    manifest = json.loads(s3.get_object(Bucket=uri.netloc, Key=manifests[0])["Body"].read())
    assert manifest["databases"][mongo.database][mongo.collection]["documents"] == 30
    assert {s3.head_object(Bucket=uri.netloc, Key=k)["ServerSideEncryption"] for k in keys} == {"AES256"}
