"""The S3 drop zone the sensor watches: a bucket and a folder in it.

Credentials and the endpoint are never configured here: boto3's default chain reads
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or an instance role) and AWS_ENDPOINT_URL.
"""

from __future__ import annotations

from dagster_aws.s3 import S3Resource

from healthcare_assets.plumbing.settings import DEFAULT_S3_PREFIX

DEFAULT_PREFIX = DEFAULT_S3_PREFIX


class S3DropResource(S3Resource):
    """S3, and where hospitals drop their exports (in the code location HEALTHCARE_S3_BUCKET and
    HEALTHCARE_S3_PREFIX, read at run time). No bucket: the sensor has nothing to watch. A run's
    config may name objects of this drop zone only (PipelineSettings.outside_drop_zone, set from
    the same variables)."""

    bucket: str = ""
    prefix: str = DEFAULT_PREFIX
