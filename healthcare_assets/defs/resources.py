"""The resources every asset gets, through dg.EnvVar (read when a run starts, never shown in the UI)."""

import dagster as dg

from healthcare_assets.domain import access, local_server
from healthcare_assets.plumbing import backup_store
from healthcare_assets.plumbing.keys import KeysResource
from healthcare_assets.plumbing.mongo import MongoResource
from healthcare_assets.plumbing.outputs import RunScopedOutputs
from healthcare_assets.plumbing.s3 import S3DropResource
from healthcare_assets.plumbing.settings import (
    VARIABLES,
    Environment,
    PipelineSettings,
    environment,
)

INTEGERS = {"reports_keep", "max_file_bytes", "max_line_bytes", "max_header_columns", "max_header_bytes"}
MONGO = {"database": "MONGODB_DATABASE", "collection": "MONGODB_COLLECTION",  # and the passwords of its users:
         **{r.password_field: r.password_variable for r in access.roles()}}
KEYS = {"master_key": "HEALTHCARE_MASTER_KEY", "new_master_key": "HEALTHCARE_NEW_MASTER_KEY",
        "retired_master_keys": "HEALTHCARE_RETIRED_MASTER_KEYS", "kms_key_arn": "HEALTHCARE_KMS_KEY_ARN",
        "retired_kms_key_arns": "HEALTHCARE_RETIRED_KMS_KEY_ARNS", "pseudonym_key": "HEALTHCARE_PSEUDONYM_KEY"}


def fields(env: Environment, variables: dict[str, str], resolve: bool) -> dict:
    """Field -> dg.EnvVar of each variable set; with `resolve`, the value itself (outside a run)."""
    found = {}
    for field, variable in variables.items():
        if value := env.get(variable):
            integer = field in INTEGERS
            found[field] = ((int(value) if integer and value.strip().isdigit() else value) if resolve
                            else dg.EnvVar.int(variable) if integer else dg.EnvVar(variable))
    return found


def resources(env: Environment | None = None, resolve: bool = False, **mongo_fields) -> dict:
    """`mongo_fields` over the environment's; S3's region, endpoint and credentials: boto3's default chain."""
    env = env or environment()
    mongo_fields = fields(env, MONGO, resolve) | mongo_fields
    if env.production:
        mongo = MongoResource(**fields(env, {"mongodb_uri": "MONGODB_URI"}, resolve) | mongo_fields)
    else:
        mongo = local_server.EmbeddedMongoResource(**fields(env, {"data_dir": "HEALTHCARE_DATA_DIR"}, resolve) | mongo_fields)
    region = "HEALTHCARE_KMS_REGION" if env.get("HEALTHCARE_KMS_REGION") else "AWS_REGION"
    keys = KeysResource(production=env.production, secrets_dir="" if env.production else mongo.data_dir,
                        **fields(env, {**KEYS, "kms_region": region}, resolve))
    s3 = {"bucket": "HEALTHCARE_S3_BUCKET", "prefix": "HEALTHCARE_S3_PREFIX"}
    return {"mongo": mongo, "keys": keys, "settings": PipelineSettings(**fields(env, VARIABLES, resolve)),
            "s3": S3DropResource(**fields(env, s3, resolve)), "io_manager": RunScopedOutputs(),
            "backups": backup_store.BackupStoreResource(**fields(env, backup_store.VARIABLES, resolve))}


def mongo_resource_from_env(start: bool = True, **mongo_fields) -> MongoResource:
    """For the CLI. Without `start` (a command that only reads), the embedded server is used only if it runs."""
    env = environment()
    if not start and not env.production:
        mongo_fields["start"] = False
    return resources(env, resolve=True, **mongo_fields)["mongo"]


def pipeline_settings() -> PipelineSettings:
    return PipelineSettings(**fields(environment(), VARIABLES, resolve=False))


@dg.definitions
def definitions() -> dg.Definitions:
    return dg.Definitions(
        resources=resources(),
        # one process per run: a process per step cost more than the short steps themselves (imports each time)
        executor=dg.in_process_executor,
    )
