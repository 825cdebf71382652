"""KeysResource: the installation's keys as a run resolves them (domain/master_keys.py's MasterKeys.of reads it)."""

from pathlib import Path

import dagster as dg
from pydantic import Field

from healthcare_assets.plumbing import settings


class KeysResource(dg.ConfigurableResource):
    """Key variables' text: dg.EnvVar fields read at run time (never in the UI nor a repr); resources() sets the rest."""

    production: bool
    secrets_dir: str = ""  # development: the embedded server's data directory (its secrets.env); empty: the default
    master_key: str = Field(default="", repr=False)  # HEALTHCARE_MASTER_KEY and its kin
    new_master_key: str = Field(default="", repr=False)
    retired_master_keys: str = Field(default="", repr=False)
    kms_key_arn: str = ""
    kms_region: str = ""  # HEALTHCARE_KMS_REGION, else AWS_REGION
    retired_kms_key_arns: str = ""
    pseudonym_key: str = Field(default="", repr=False)  # HEALTHCARE_PSEUDONYM_KEY

    def secrets_path(self) -> Path | None:
        return None if self.production else Path(self.secrets_dir).resolve() if self.secrets_dir else settings.data_dir()
