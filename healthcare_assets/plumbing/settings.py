"""Environment-driven settings (see the README's table). Read at call time so tests can set them."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_SOURCE_CSV = "data/healthcare_dataset.csv"


def data_dir() -> Path:
    """Where the embedded database, reports and quarantine files live."""
    return Path(os.environ.get("HEALTHCARE_DATA_DIR", ".data")).resolve()


# Everything under the data directory is patient data or a secret: owner-only whatever the umask
# it is written under, so that no other local user can read it.

def private_dir(path: Path | None = None) -> Path:
    """The data directory, or a folder under it, created owner-only (0700) with every folder it
    has to create; an existing one of ours (an older version's 0755) is made 0700 too."""
    root = data_dir()
    path = Path(path or root)
    created = [folder for folder in (path, *path.parents) if not folder.exists()]
    path.mkdir(parents=True, exist_ok=True)
    ours = [folder for folder in {path, *([root] if path.is_relative_to(root) else [])}
            if folder.stat().st_uid == os.getuid()]  # a mounted volume may belong to root
    for folder in {*created, *ours}:
        folder.chmod(0o700)
    return path


def owner_only(path: Path) -> Path:
    """Make a file we wrote 0600, or a folder we filled 0700 with everything in it 0700 / 0600."""
    path = Path(path)
    if not path.is_dir():
        path.chmod(0o600)
        return path
    path.chmod(0o700)
    for folder, folders, files in os.walk(path):
        for entry in (Path(folder, name) for name in folders + files):
            if not entry.is_symlink():  # chmod would change what it points to
                entry.chmod(0o700 if entry.is_dir() else 0o600)
    return path


def write_owner_only(path: Path, text: str) -> Path:
    """Write a report (or any text) under the data directory, owner-only."""
    private_dir(path.parent)
    path.write_text(text)
    return owner_only(path)


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


def reports_keep() -> int:
    """How many runs' quality reports and Data Docs validation pages are kept (the newest)."""
    return _positive_int("HEALTHCARE_REPORTS_KEEP", 50)


def quarantine_ceiling() -> float:
    """Share of rows that may be quarantined before the file as a whole is refused."""
    return float(os.environ.get("HEALTHCARE_QUARANTINE_CEILING", "0.05"))


def import_roots() -> list[Path]:
    """The folders a run's `source` may name a file under: the repo's data/ and each folder of
    HEALTHCARE_IMPORT_DIR (os.pathsep-separated). Not the temp dir, not the data dir: a run's
    config is typed by whoever can launch a run, and must not read the server's other files."""
    extra = [p for p in os.environ.get("HEALTHCARE_IMPORT_DIR", "").split(os.pathsep) if p.strip()]
    return [Path(p).resolve() for p in ["data", *extra]]


# Limits on what one export may be, each raised by its environment variable (see the README).
LIMITS = {
    "HEALTHCARE_MAX_FILE_BYTES": 4 << 30,  # one file or S3 object
    "HEALTHCARE_MAX_LINE_BYTES": 1 << 20,  # one physical line (a line without newline is read whole)
    "HEALTHCARE_MAX_HEADER_COLUMNS": 100,  # an export has 15
    "HEALTHCARE_MAX_HEADER_BYTES": 8 << 10,
}


def limit(variable: str) -> int:
    return _positive_int(variable, LIMITS[variable])


def _positive_int(variable: str, default: int) -> int:
    value = os.environ.get(variable, "").strip()
    if not value:
        return default
    if not value.isdigit() or int(value) <= 0:
        raise ValueError(f"{variable}={value!r}: expected a positive whole number")
    return int(value)
