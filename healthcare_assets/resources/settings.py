"""Environment-driven settings (see the README's table). Read at call time so tests can set them."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_SOURCE_CSV = "data/healthcare_dataset.csv"


def data_dir() -> Path:
    """Where the embedded database, reports and quarantine files live."""
    return Path(os.environ.get("HEALTHCARE_DATA_DIR", ".data")).resolve()


def source_csv() -> str:
    return os.environ.get("HEALTHCARE_SOURCE_CSV", DEFAULT_SOURCE_CSV)


def mongodb_uri() -> str | None:
    return os.environ.get("MONGODB_URI") or None


def database_name() -> str:
    return os.environ.get("MONGODB_DATABASE", "healthcare_db")


def collection_name() -> str:
    return os.environ.get("MONGODB_COLLECTION", "hospitalizations")


def reports_dir() -> Path:
    return data_dir() / "reports"


def quarantine_dir() -> Path:
    return data_dir() / "quarantine"


def staging_dir() -> Path:
    return data_dir() / "staging"


def quarantine_ceiling() -> float:
    """Share of rows that may be quarantined before the file as a whole is refused."""
    return float(os.environ.get("HEALTHCARE_QUARANTINE_CEILING", "0.05"))
