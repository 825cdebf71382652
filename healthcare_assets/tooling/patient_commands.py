"""`healthcare-assets export-patient` and `erase-patient`: one patient's records, or their erasure everywhere."""

import argparse
import sys
from pathlib import Path

from healthcare_assets.defs.resources import mongo_resource_from_env, resources
from healthcare_assets.plumbing import settings

NOT_FOUND = 4


def add_arguments(sub: argparse.ArgumentParser, command: str) -> None:
    sub.add_argument("--name", required=True, help="the full name as exported; letter case does not matter")
    sub.add_argument("--gender", help="narrow to one gender when the name is shared")
    sub.add_argument("--blood-type", help="narrow to one blood type when the name is shared")
    sub.add_argument("--all", action="store_true",
                     help="every patient of that name (and gender, blood type), when it is shared")
    if command == "export-patient":
        sub.add_argument("--out", required=True, help="the JSON file to write")
    else:
        sub.add_argument("--yes", action="store_true", help="erase; without it, only show what would be removed")


def _selection(args: argparse.Namespace):
    """The collection, its master keys, then the patients the arguments stand for and 0, or None and the exit code
    (2: not a name; 5: several). A command that only reads (all but erase-patient --yes) never starts the server."""
    from healthcare_assets.domain import gdpr
    from healthcare_assets.domain.master_keys import MasterKeys

    mongo = mongo_resource_from_env(start=getattr(args, "yes", False))
    collection, keys = mongo.hospitalizations(), MasterKeys.of(resources(resolve=True)["keys"])
    try:
        return collection, keys, gdpr.select(collection, keys, args.name, args.gender, args.blood_type,
                                             everyone=args.all), 0
    except gdpr.PatientSelectionError as exc:
        print(exc, file=sys.stderr)
        return collection, keys, None, 5 if isinstance(exc, gdpr.SeveralPatientsError) else 2


def _not_found(name: str, collection) -> str:
    return (f"no records of {name!r} in {collection.full_name} or in quarantine ({settings.quarantine_dir()}); "
            "check the spelling (letter case does not matter)")


def export_patient(args: argparse.Namespace) -> int:
    from healthcare_assets.domain import gdpr

    collection, keys, selection, code = _selection(args)
    if selection is None:
        return code
    if not selection.patients:  # nothing to write: no empty export that reads as "we hold nothing on you"
        print(_not_found(selection.name, collection), file=sys.stderr)
        return NOT_FOUND
    try:
        count = gdpr.export_patient(collection, keys, Path(args.out), selection)
    except FileExistsError:
        print(f"{args.out}: already exists (a file or a symbolic link): the export holds decrypted records "
              "and is written only into a new file, created 0600; give a path where nothing is", file=sys.stderr)
        return 8
    print(f"wrote {count} records to {args.out}")
    if not count:
        print(f"{selection.name!r} has rows in quarantine only ({settings.quarantine_dir()}): no record of "
              f"{collection.full_name} to export", file=sys.stderr)
    return 0 if count else NOT_FOUND


def erase_patient(args: argparse.Namespace) -> int:
    from healthcare_assets.domain import gdpr

    collection, keys, selection, code = _selection(args)
    if selection is None:
        return code
    for patient in selection.patients:
        print(patient.describe())
    if not selection.patients:  # reports quoting the name are still erased: exit 0
        print(_not_found(selection.name, collection), file=sys.stderr)
    removed = gdpr.erase_patient(collection, keys, selection, apply=args.yes)
    verb = "removed" if args.yes else "would remove"
    for place, count in removed.items():
        print(f"{'kept' if place == gdpr.KEPT else verb} {count:>6}  {place}")
    if not args.yes:
        print("dry run: nothing was removed (the analysts' and doctor app's copies lose the same stays); "
              "run again with --yes to erase")
    return 0
