"""The resources every asset gets, and how runs execute."""

import dagster as dg

from healthcare_assets.plumbing.mongo import mongo_resource_from_env
from healthcare_assets.plumbing.outputs import RunScopedOutputs
from healthcare_assets.plumbing.s3 import s3_resource_from_env


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(
        resources={"mongo": mongo_resource_from_env(), "s3": s3_resource_from_env(), "io_manager": RunScopedOutputs()},
        # One process per run, not per step: a drop's steps are short, and a process per step cost
        # more than the steps themselves (Dagster's and pandas' imports, each time).
        executor=dg.in_process_executor,
    )
