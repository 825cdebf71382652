"""The S3 drop zone the sensor watches; credentials and endpoint come from boto3's default chain."""

from __future__ import annotations

from dagster_aws.s3 import S3Resource

from healthcare_assets.plumbing.settings import DEFAULT_S3_PREFIX

DEFAULT_PREFIX = DEFAULT_S3_PREFIX


class S3DropResource(S3Resource):
    """No bucket: nothing to watch. A run names objects here only (PipelineSettings.outside_drop_zone)."""

    bucket: str = ""
    prefix: str = DEFAULT_PREFIX
