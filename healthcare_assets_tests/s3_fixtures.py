"""A real S3 endpoint for tests: moto's HTTP server on a free loopback port (no patched boto3)."""

from __future__ import annotations

import logging
import uuid

import boto3
import pytest
from moto.server import ThreadedMotoServer

from healthcare_assets.resources.embedded_mongo import HOST, free_port


@pytest.fixture(scope="session")
def moto_endpoint() -> str:
    """One moto S3 server for the session; each test gets a bucket of its own."""
    port = free_port()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request drowns failures
    server = ThreadedMotoServer(ip_address=HOST, port=port, verbose=False)
    server.start()
    yield f"http://{HOST}:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(moto_endpoint, monkeypatch) -> str:
    """A fresh bucket on the moto server, with the environment the sensor and raw_csv read."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION"):  # nothing may point elsewhere
        monkeypatch.delenv(name, raising=False)
    bucket = f"drops-{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("HEALTHCARE_S3_BUCKET", bucket)
    monkeypatch.setenv("HEALTHCARE_S3_PREFIX", "incoming/")
    boto3.client("s3").create_bucket(Bucket=bucket)
    return bucket
