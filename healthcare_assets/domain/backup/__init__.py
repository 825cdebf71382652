"""Backups in mongodump's `--gzip` directory layout, their verification, restore and retention (format, trust
and memory: docs/backups.md). A backup never holds `admin` nor anything of secrets.env, and a restore never
undoes an erasure.

The modules: files (names, layout, hashing streams, read ranges), signing, keys, catalog, writing, reading
(verification and retention), plain_dump (a plain `mongodump --gzip` folder), restore (restore and the drill's
comparison) and erasures (what a restore does about erasures). This module is what callers import.
"""

from __future__ import annotations

from healthcare_assets.domain.backup.catalog import Catalog
from healthcare_assets.domain.backup.files import MANIFEST, VERIFIED, BackupError
from healthcare_assets.domain.backup.keys import forget_unneeded_master_keys
from healthcare_assets.domain.backup.plain_dump import PlainDump, open_plain_dump
from healthcare_assets.domain.backup.reading import (
           Opened,
           mark_verified,
           open_backup,
           prune,
           verify,
)
from healthcare_assets.domain.backup.restore import (
           Restored,
           RestoreRefusedError,
           compare,
           differences,
           restore,
)
from healthcare_assets.domain.backup.writing import (
           CONSISTENCY,
           Written,
           key_vault_filter,
           write_backup,
)

__all__ = ["CONSISTENCY", "MANIFEST", "VERIFIED", "BackupError", "Catalog", "Opened", "PlainDump",
           "RestoreRefusedError", "Restored", "Written", "compare", "differences", "forget_unneeded_master_keys",
           "key_vault_filter", "mark_verified", "open_backup", "open_plain_dump", "prune", "restore", "verify",
           "write_backup"]
