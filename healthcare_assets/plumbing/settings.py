"""Environment, the one read of the process environment, and PipelineSettings (docs/operations.md)."""

from __future__ import annotations

import errno
import functools
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TextIO

import dagster as dg

DEFAULT_SOURCE_CSV = "data/healthcare_dataset.csv"
DEFAULT_S3_PREFIX = "incoming/"
PROJECT = "healthcare-assets"


@functools.cache
def checkout() -> Path | None:
    """The source checkout the package runs from, or None for an installed package."""
    root = Path(__file__).resolve().parents[2]
    try:
        name = tomllib.loads((root / "pyproject.toml").read_text())["project"]["name"]
    except (OSError, UnicodeDecodeError, KeyError, TypeError, tomllib.TOMLDecodeError):
        return None
    return root if name == PROJECT else None


def repo_path(relative: str) -> Path:
    """A file the repository ships, in the checkout; without one, from the current folder (an image's WORKDIR)."""
    return ((checkout() or Path.cwd()) / relative).resolve()


@dataclass(frozen=True)
class Environment:
    """Every other module takes its variables from here; `production` says which deployment this is."""

    variables: Mapping[str, str]

    def get(self, variable: str, default: str = "") -> str:
        return self.variables.get(variable) or default

    @property
    def production(self) -> bool:
        """MONGODB_URI set: secrets must be set and not placeholders, nothing is generated."""
        return bool(self.get("MONGODB_URI"))

    def data_dir_and_origin(self) -> tuple[Path, str]:
        """The data directory and why: HEALTHCARE_DATA_DIR, else the checkout's .data, else XDG's per-user."""
        if given := self.get("HEALTHCARE_DATA_DIR"):
            return Path(given).resolve(), "HEALTHCARE_DATA_DIR"
        if checkout():
            return checkout() / ".data", "this checkout"
        xdg = self.get("XDG_DATA_HOME")
        base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".local" / "share"  # the spec ignores a relative one
        return (base / PROJECT).resolve(), "per-user"


def environment() -> Environment:
    """Read at each call: a test, or the CLI, may have changed it."""
    return Environment(MappingProxyType(dict(os.environ)))


def data_dir() -> Path:
    return environment().data_dir_and_origin()[0]


def embedded_tls_files() -> dict[str, str]:
    """HEALTHCARE_MONGO_TLS_*_FILE set, by kind: like the data directory, every process reaching the server shares them."""
    env = environment()
    return {kind: found for kind in ("cert", "key", "ca", "client")
            if (found := env.get(f"HEALTHCARE_MONGO_TLS_{kind.upper()}_FILE"))}


# Everything under the data directory is patient data or a secret: owner-only whatever the umask.

def private_dir(path: Path | None = None) -> Path:
    """Created 0700 with every folder it has to create; an existing one of ours (once 0755) is made 0700."""
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
    private_dir(path.parent)
    path.write_text(text)
    return owner_only(path)


def create_owner_only(path: Path) -> TextIO:
    """0600 whatever the umask; a file or (dangling) link there is neither replaced nor followed."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno in (errno.EEXIST, errno.ELOOP):
            raise FileExistsError(errno.EEXIST, "already exists (a file or a symbolic link)", str(path)) from None
        raise
    os.fchmod(fd, 0o600)  # the umask only takes bits away: 0400 under umask 0277
    return os.fdopen(fd, "w", encoding="utf-8")


def reports_dir() -> Path:
    return data_dir() / "reports"


def quarantine_dir() -> Path:
    return data_dir() / "quarantine"


def staging_dir() -> Path:
    return data_dir() / "staging"


# Each field of PipelineSettings and the variable that sets it (docs/operations.md, "Environment").
VARIABLES = {"source_csv": "HEALTHCARE_SOURCE_CSV", "import_dir": "HEALTHCARE_IMPORT_DIR",
             "quarantine_ceiling": "HEALTHCARE_QUARANTINE_CEILING", "reports_keep": "HEALTHCARE_REPORTS_KEEP",
             "max_file_bytes": "HEALTHCARE_MAX_FILE_BYTES", "max_line_bytes": "HEALTHCARE_MAX_LINE_BYTES",
             "max_header_columns": "HEALTHCARE_MAX_HEADER_COLUMNS", "max_header_bytes": "HEALTHCARE_MAX_HEADER_BYTES",
             "s3_bucket": "HEALTHCARE_S3_BUCKET", "s3_prefix": "HEALTHCARE_S3_PREFIX"}


@dataclass(frozen=True)
class Limits:
    """What one export may be (each raised by its variable, which the errors name)."""

    file_bytes: int = 4 << 30  # one file or S3 object
    line_bytes: int = 1 << 20  # one physical line (a line without newline is read whole)
    header_columns: int = 100  # an export has 15
    header_bytes: int = 8 << 10


class PipelineSettings(dg.ConfigurableResource):
    """What a run reads and how much of it may be bad; a field whose variable is set is its dg.EnvVar."""

    source_csv: str = DEFAULT_SOURCE_CSV  # the input when a run names none: a path or s3://bucket/key
    import_dir: str = ""  # os.pathsep-separated folders a run's `source` may name files under
    quarantine_ceiling: str = "0.05"  # share of rows that may be quarantined (text, as a variable is)
    reports_keep: int = 50  # runs whose quality reports and Data Docs validations are kept
    max_file_bytes: int = Limits.file_bytes
    max_line_bytes: int = Limits.line_bytes
    max_header_columns: int = Limits.header_columns
    max_header_bytes: int = Limits.header_bytes
    s3_bucket: str = ""  # the drop bucket (the sensor's): the only bucket a run's `source` may name
    s3_prefix: str = DEFAULT_S3_PREFIX  # and the folder in it

    def ceiling(self) -> float:
        return float(self.quarantine_ceiling)

    def limits(self) -> Limits:
        return Limits(*(self._positive(name) for name in
                        ("max_file_bytes", "max_line_bytes", "max_header_columns", "max_header_bytes")))

    def kept_reports(self) -> int:
        return self._positive("reports_keep")

    def _positive(self, name: str) -> int:
        if getattr(self, name) <= 0:
            raise ValueError(f"{VARIABLES[name]}={getattr(self, name)!r}: expected a positive whole number")
        return getattr(self, name)

    def import_roots(self) -> list[Path]:
        """Not the temp dir nor the data dir: whoever can launch a run must not read the server's other files."""
        extra = [p for p in self.import_dir.split(os.pathsep) if p.strip()]
        return [repo_path("data"), *(Path(p).resolve() for p in extra)]

    def default_source(self) -> str:
        return str(repo_path(DEFAULT_SOURCE_CSV)) if self.source_csv == DEFAULT_SOURCE_CSV else self.source_csv

    def outside_drop_zone(self, bucket: str, key: str) -> str | None:
        """Why a run may not name this object (None: it may): not another bucket the credentials can read, not a
        blank name, not a '.' or '..' segment (S3 keeps them, a proxy or another S3 may resolve them)."""
        zone = f"s3://{self.s3_bucket}/{self.s3_prefix}"
        where = (f"a run's source may name only objects under {zone} (HEALTHCARE_S3_BUCKET, HEALTHCARE_S3_PREFIX)"
                 if self.s3_bucket else "HEALTHCARE_S3_BUCKET is not set: a run's source may name no S3 object")
        if not self.s3_bucket or bucket != self.s3_bucket or not key.startswith(self.s3_prefix):
            return f"not in the drop zone: {where}"
        if not key[len(self.s3_prefix):].strip() or key.endswith("/"):
            return f"names no object (a blank name or a folder): {where}"
        if {".", ".."} & set(key.split("/")):
            return f"has a '.' or '..' segment: {where}"
        return None
