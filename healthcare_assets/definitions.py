"""The code location's only entry point."""

import dagster as dg

from healthcare_assets.defs import anonymize, clean, ingest, load, provisioning, quality
from healthcare_assets.resources.mongo import mongo_resource_from_env

_modules = [ingest, clean, quality, load, anonymize]

defs = dg.Definitions(
    assets=dg.load_assets_from_modules(_modules),
    asset_checks=dg.load_asset_checks_from_modules(_modules),
    jobs=[provisioning.provision_access],
    resources={"mongo": mongo_resource_from_env()},
)
