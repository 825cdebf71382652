"""Backups in mongodump's `--gzip` directory layout, their verification, restore and retention.

One backup is a folder named by its UTC time, holding for every database of the deployment
(deployment_databases.databases: the hospitalizations, the analysts' copy, the doctor app's copy,
the audit log):

    <db>/<collection>.bson.gz           the documents, concatenated BSON, gzip
    <db>/<collection>.metadata.json.gz  {options, indexes, collectionName, type} (Extended JSON)
    manifest.json                       counts, sizes and SHA-256 of every file, source, time, version
    verified.json                       written once the backup has been read back intact

so `mongorestore --gzip --dir <backup>` restores it too (manifest.json and verified.json are not
in a database folder, and mongorestore ignores them). Views have a metadata file and no documents.

The deployment's data keys in the key vault (`encryption/__keyVault.*`) go too: without them no
restored name can be decrypted. The vault is shared by every deployment of a server, so only the
keys named after this deployment's databases are read, and a restore replaces only those.
They are useless without the master key, which a backup never holds.

Nothing else is read: never `admin` (users and their password hashes) and nothing of
secrets.env (the pseudonym key, role passwords, the master key), which live outside MongoDB.

Memory: documents are streamed as raw BSON, never decoded, one range at a time (scans: the
embedded server holds a query's whole result until its cursor is spent); restore inserts batches.

A restore never undoes an erasure: it merges the erasure list (never replaces or shrinks it) and
writes no stay of an erased patient (erasures).

The modules: files (names, layout, hashing streams, read ranges), writing, reading (verification
and retention), restore (restore and the drill's comparison) and erasures (what a restore does
about erasures). This module is what callers import.
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

__all__ = [
           "CONSISTENCY",
           "MANIFEST",
           "VERIFIED",
           "BackupError",
           "Catalog",
           "Opened",
           "PlainDump",
           "RestoreRefusedError",
           "Restored",
           "Written",
           "compare",
           "differences", "forget_unneeded_master_keys",
           "key_vault_filter",
           "mark_verified",
           "open_backup",
           "open_plain_dump",
           "prune",
           "restore",
           "verify",
           "write_backup",
]
