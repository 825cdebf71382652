"""provision_access: roles, users and the doctor app's records, from healthcare_assets.access."""

import dagster as dg

from healthcare_assets import access
from healthcare_assets.resources.mongo import MongoResource


@dg.op
def provision_roles_and_users(context: dg.OpExecutionContext, mongo: MongoResource) -> None:
    """Idempotent: creates what is missing, updates what exists (passwords from the environment)."""
    for line in access.provision_all(mongo.hospitalizations(), mongo.uri()):
        context.log.info(line)


@dg.job(description="Create or update the five roles and their users; refresh the doctor app's records.")
def provision_access():
    provision_roles_and_users()
