"""`healthcare-assets`: the embedded database, generated data, where results are, backup and restore, key rotation."""

import argparse
import contextlib
import sys

from pymongo.errors import EncryptionError

from healthcare_assets.defs.resources import mongo_resource_from_env, resources
from healthcare_assets.domain.local_server import NoDatabaseError
from healthcare_assets.domain.master_keys import MasterKeyError, MasterKeys
from healthcare_assets.plumbing import secrets_file, settings
from healthcare_assets.tooling import mongo_commands, patient_commands
from healthcare_assets.tooling.generate import add_generate_arguments, run_generate
from healthcare_assets.tooling.runs import add_run_commands
from healthcare_assets.tooling.summary import run_summary

NO_DATABASE = 10


def _keys() -> MasterKeys:
    return MasterKeys.of(resources(resolve=True)["keys"])


def _provision_access(args: argparse.Namespace) -> int:
    from healthcare_assets.domain import access

    mongo, hospital = mongo_resource_from_env(), settings.environment().get("HEALTHCARE_DOCTOR_APP_HOSPITAL")
    print(*access.provision_all(mongo, _keys(), hospital), sep="\n")
    return 0


def _rotate_keys(args: argparse.Namespace) -> int:
    from healthcare_assets.domain import access, encryption, master_keys

    mongo = mongo_resource_from_env()
    copy, keys = access.doctor_app_copy(mongo.hospitalizations()), _keys()
    local = keys.aws_master_key() is None
    old = master_keys.local_provider(keys.master_key()) if local else None
    rewrapped = encryption.rotate_master_key(mongo.client(), keys,
                                             [encryption.KEY_VAULT, encryption.doctor_app_vault(copy)])
    for vault, count in rewrapped.items():
        print(f"re-wrapped {count:>4}  data keys in {vault}")
    if local and keys.master:
        print(f"now, wherever the pipeline and the roles that decrypt run: add the old {master_keys.MASTER_KEY_VARIABLE} "
              f"({old}) to {master_keys.RETIRED_KEYS_VARIABLE} (earlier backups need it), set "
              f"{master_keys.MASTER_KEY_VARIABLE} to the value of {master_keys.NEW_MASTER_KEY_VARIABLE}, then unset the latter")
    elif local:
        print(f"the old master key {old} is kept in secrets.env under {master_keys.RETIRED_KEYS_VARIABLE} "
              "while a backup needs it")
    return 0


def _backup(args: argparse.Namespace) -> int:
    from healthcare_assets.domain.backup import catalog, files, keys, reading, writing
    from healthcare_assets.plumbing.backup_store import open_store

    mongo, backups, installation = mongo_resource_from_env(), resources(resolve=True)["backups"], _keys()
    written = writing.write_backup(mongo.client(), mongo.database, mongo.server_label(), backups.store(args.to),
                                   installation, log=print)
    try:
        report = reading.verify(opened := reading.open_backup(written.location, installation))
    except files.BackupError as exc:
        print(f"backup {written.location} does not read back: {exc}", file=sys.stderr)
        return 6
    reading.mark_verified(opened, report, installation)
    deleted = reading.prune(store := open_store(str(opened.store)), opened.name, backups.kept(), installation)
    print(f"backup {written.location}: {report['documents']:,} documents, {report['bytes']:,} bytes, "
          f"{written.seconds:.1f} s; read back intact")
    for name in deleted:
        print(f"deleted older backup {name}")
    _retired_keys(*keys.forget_unneeded_master_keys(mongo.client(), installation, store,
                                                   catalog.Catalog(mongo.database, mongo.collection)))
    return 0


def _retired_keys(removable: list[str], why_kept: str | None) -> None:
    from healthcare_assets.domain import master_keys

    if why_kept:
        print(why_kept)
    elif removable and settings.environment().production:
        print("no retained backup or live data key needs these retired master keys; remove them from "
              f"{master_keys.RETIRED_KEYS_VARIABLE} / {master_keys.RETIRED_ARNS_VARIABLE}: {', '.join(removable)}")
    elif removable:
        print(f"forgot retired master keys no retained backup needs: {', '.join(removable)}")


def _restore(args: argparse.Namespace) -> int:
    from healthcare_assets.domain import audit
    from healthcare_assets.domain.backup import files, plain_dump, reading, restore

    try:
        # the backup first: on a new host, which keys it needs is said before any server starts
        if args.mongodump:
            opened = plain_dump.open_plain_dump(args.source)
            report = opened.verify()
            print(f"{opened.location}: a plain mongodump folder, {report['documents']:,} documents read whole; "
                  "unverified without a manifest:\n  " + "\n  ".join(report["unverified"]))
        else:
            opened = reading.open_backup(args.source, _keys(), latest=args.latest, log=print)
        mongo = mongo_resource_from_env()
        print(f"restoring {opened.location} into {mongo.server_label()}")
        restored = restore.restore(opened, mongo.client(), _keys(), mongo.database, mongo.collection,
                                   drop=args.drop, log=print)
    except (files.BackupError, restore.RestoreRefusedError) as exc:
        print(exc, file=sys.stderr)
        return 7
    counts = restored.counts
    audit.record(mongo.db(), "restore", opened.name, sum(counts.values()), collections=len(counts),
                 erased_patients=restored.erased_patients, erased_stays_kept_out=restored.kept_out,
                 patient_ids=restored.patient_ids, analysts_copy_withdrawn=restored.copy_withdrawn,
                 release_stale=restored.release_stale)
    print(f"restored {sum(counts.values()):,} documents in {len(counts)} collections")
    print(f"erasure list: {restored.erased_patients:,} patients (this server's and the backup's); erased patients' "
          "stays kept out: " + ", ".join(f"{n:,} of {place}" for place, n in restored.kept_out.items()))
    print(f"erasure applied again to the analysts' release: {restored.copy_withdrawn:,} documents withdrawn "
          "from its copy")
    if restored.release_stale:
        print(f"release marked stale, the next publication rebuilds it: {restored.release_stale}")
    print(f"data keys: {restored.keys_proven} restored, each unwrapped with this installation's master keys")
    return 0


def _reads_only(args: argparse.Namespace) -> bool:
    """A command that only reads the embedded server's data directory writes no secret there."""
    reads = args.command in ("summary", "export-patient") or (args.command == "erase-patient" and not args.yes) \
        or (args.command == "mongo" and args.action in ("uri", "status"))
    return reads and not settings.environment().production


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="healthcare-assets", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    mongo = commands.add_parser("mongo", help="the embedded MongoDB-compatible server")
    mongo_commands.add_arguments(mongo)
    mongo.set_defaults(handler=mongo_commands.run)

    generate = commands.add_parser("generate", help="write a seeded synthetic export")
    add_generate_arguments(generate)
    generate.set_defaults(handler=run_generate)

    summary = commands.add_parser("summary", help="the last run's status and where its results are")
    summary.set_defaults(handler=run_summary)
    add_run_commands(commands)

    provision = commands.add_parser("provision-access", help="create or update roles and users (idempotent)")
    provision.set_defaults(handler=_provision_access)

    for command, handler, text in (("export-patient", patient_commands.export_patient, "write one patient's records as JSON"),
                                   ("erase-patient", patient_commands.erase_patient, "remove one patient everywhere")):
        sub = commands.add_parser(command, help=text)
        patient_commands.add_arguments(sub, command)
        sub.set_defaults(handler=handler)

    commands.add_parser("rotate-keys", help="re-wrap every data key under a new master key (HEALTHCARE_NEW_MASTER_KEY, "
                                            "or HEALTHCARE_KMS_KEY_ARN)").set_defaults(handler=_rotate_keys)

    backup = commands.add_parser("backup", help="back up every database of the deployment, then read it back")
    backup.add_argument("--to", help="a folder or s3://bucket/prefix (default: HEALTHCARE_BACKUP_URI, or "
                                     "$HEALTHCARE_DATA_DIR/backups)")
    backup.set_defaults(handler=_backup)

    restore = commands.add_parser("restore", help="restore a backup into the configured server")
    restore.add_argument("--from", dest="source", required=True,
                         help="a backup's folder, or with --latest the folder or s3:// prefix holding backups")
    restore.add_argument("--latest", action="store_true", help="the newest complete backup under --from")
    restore.add_argument("--drop", action="store_true", help="replace databases that already hold collections")
    restore.add_argument("--mongodump", action="store_true",
                         help="--from is a folder MongoDB's `mongodump --gzip --out` wrote: unsigned, so restored only "
                              "when asked, with the same scope and key rules")
    restore.set_defaults(handler=_restore)

    args = parser.parse_args(argv)
    where, origin = settings.environment().data_dir_and_origin()
    print(f"data directory: {where} ({origin})", file=sys.stderr)
    try:
        with secrets_file.read_only() if _reads_only(args) else contextlib.nullcontext():
            return args.handler(args)
    except NoDatabaseError as exc:
        print(exc, file=sys.stderr)
        return NO_DATABASE
    except (EncryptionError, MasterKeyError) as exc:  # what to bring, not a traceback
        print(f"{args.command}: the names' data keys cannot be unwrapped with this installation's master keys: "
              f"{exc}. Bring the master key that wraps them (HEALTHCARE_MASTER_KEY, or a retired key in "
              "HEALTHCARE_RETIRED_MASTER_KEYS, named by its digest after `local:`), or the KMS key of "
              "HEALTHCARE_KMS_KEY_ARN: docs/deployment.md, \"Restoring onto a new host\"", file=sys.stderr)
        return 9


if __name__ == "__main__":
    sys.exit(main())
