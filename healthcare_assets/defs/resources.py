"""The resources every asset gets, chosen for this environment, and how runs execute.

Every value comes from the environment through dg.EnvVar: Dagster reads it when a run starts and
never shows it in the UI. Only which variables are set is looked at here, at definitions time: it
chooses real MongoDB (MONGODB_URI) or the embedded server, and leaves each unset setting at its
default.
"""

import os

import dagster as dg

from healthcare_assets.domain.local_server import EmbeddedMongoResource
from healthcare_assets.plumbing.mongo import MongoResource
from healthcare_assets.plumbing.outputs import RunScopedOutputs
from healthcare_assets.plumbing.s3 import S3DropResource
from healthcare_assets.plumbing.settings import VARIABLES, PipelineSettings

INTEGERS = {"reports_keep", "max_file_bytes", "max_line_bytes", "max_header_columns", "max_header_bytes"}


def from_environment(variables: dict[str, str], resolve: bool = False) -> dict:
    """Field -> dg.EnvVar of its variable, for each variable that is set; with `resolve`, the
    value itself (for the CLI and tests, which call resources outside a run)."""
    fields = {}
    for field, variable in variables.items():
        if not os.environ.get(variable):
            continue
        if resolve:
            value = os.environ[variable]
            fields[field] = int(value) if field in INTEGERS and value.strip().isdigit() else value
        else:
            fields[field] = dg.EnvVar.int(variable) if field in INTEGERS else dg.EnvVar(variable)
    return fields


def mongo_resource(resolve: bool = False, **fields) -> MongoResource:
    """Real MongoDB when MONGODB_URI is set, otherwise the embedded server of HEALTHCARE_DATA_DIR."""
    names = {"database": "MONGODB_DATABASE", "collection": "MONGODB_COLLECTION"}
    if os.environ.get("MONGODB_URI"):
        return MongoResource(**from_environment({**names, "mongodb_uri": "MONGODB_URI"}, resolve) | fields)
    return EmbeddedMongoResource(**from_environment({**names, "data_dir": "HEALTHCARE_DATA_DIR"}, resolve) | fields)


def mongo_resource_from_env(start: bool = True, **fields) -> MongoResource:
    """The deployment's MongoResource with the environment's values, for use outside a run (the CLI).
    Without `start`, for a command that only reads: the embedded server is used only if it runs."""
    if not start and not os.environ.get("MONGODB_URI"):
        fields["start"] = False
    return mongo_resource(resolve=True, **fields)


def pipeline_settings() -> PipelineSettings:
    return PipelineSettings(**from_environment(VARIABLES))


def s3_drops() -> S3DropResource:
    # Region, endpoint and credentials come from boto3's default chain (AWS_* variables).
    return S3DropResource(**from_environment({"bucket": "HEALTHCARE_S3_BUCKET", "prefix": "HEALTHCARE_S3_PREFIX"}))


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(
        resources={"mongo": mongo_resource(), "settings": pipeline_settings(), "s3": s3_drops(),
                   "io_manager": RunScopedOutputs()},
        # One process per run, not per step: a drop's steps are short, and a process per step cost
        # more than the steps themselves (Dagster's and pandas' imports, each time).
        executor=dg.in_process_executor,
    )
