"""The S3 drop zone the sensor watches. Read at call time, like settings, so tests can set it.

Credentials and the endpoint are never configured here: boto3's default chain reads
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or an instance role) and AWS_ENDPOINT_URL.
"""

from __future__ import annotations

import os

from dagster_aws.s3 import S3Resource

DEFAULT_PREFIX = "incoming/"


def drop_bucket() -> str | None:
    return os.environ.get("HEALTHCARE_S3_BUCKET") or None


def drop_prefix() -> str:
    return os.environ.get("HEALTHCARE_S3_PREFIX", DEFAULT_PREFIX)


def s3_resource_from_env() -> S3Resource:
    # No fields set: region, endpoint and credentials all come from the AWS environment.
    return S3Resource()
