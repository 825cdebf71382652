"""GDPR rights: export one patient's records and erase them everywhere they live (docs/security.md).
A name of several patients is refused until narrowed; a report is deleted if it quotes the name as a whole value."""

from __future__ import annotations

import csv
import getpass
import html
import io
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from bson import json_util
from pymongo.collection import Collection

from healthcare_assets.domain import audit, encryption, privacy
from healthcare_assets.domain.access import doctor_app_copy
from healthcare_assets.domain.cleaning import normalize_names
from healthcare_assets.domain.master_keys import MasterKeys
from healthcare_assets.domain.release.publishing import Release
from healthcare_assets.domain.schema import BLOOD_TYPES, GENDERS
from healthcare_assets.plumbing import csv_cells, settings, staging

MIN_LETTERS = 2  # a blank or one-letter name matches rows without a name, or everyone's initial
REPORT_SUFFIXES = {".html", ".json", ".md", ".csv"}
KEPT = "staging_folders_of_runs_in_progress_kept"


class PatientSelectionError(ValueError):
    """The name does not pick out patients safely; the message says why and what to add."""


class SeveralPatientsError(PatientSelectionError):
    pass


def normalized(name: str) -> str:
    return normalize_names(pd.Series([name])).iloc[0]


def _folded(text) -> str:
    return " ".join(str(text).split()).casefold()


def _canonical(value: str, allowed: tuple[str, ...]) -> str:
    """A quarantined row's raw gender or blood type as the cleaning step would have it, if it can."""
    return {v.casefold(): v for v in allowed}.get(_folded(value), str(value).strip())


@dataclass(frozen=True)
class Patient:
    patient_id: str  # keyed (HMAC): safe to print, shortened
    gender: str
    blood_type: str
    stays: int = 0  # documents in the collection
    quarantined: int = 0  # rows in quarantine files

    def describe(self) -> str:
        return (f"patient {self.patient_id[:12]}  {self.gender:<6}  {self.blood_type:<3}  "
                f"{self.stays} stays, {self.quarantined} quarantined rows")


@dataclass(frozen=True)
class Selection:
    name: str  # normalized
    patients: tuple[Patient, ...]

    @property
    def ids(self) -> list[str]:
        return sorted(p.patient_id for p in self.patients)

    def has(self, gender: str, blood_type: str) -> bool:
        return any(p.gender == gender and p.blood_type == blood_type for p in self.patients)


def patient_query(collection: Collection, keys: MasterKeys, name: str, gender: str | None = None,
                  blood_type: str | None = None) -> dict:
    """Names are stored encrypted deterministically: the normalized name is encrypted and matched as stored."""
    try:
        stored = encryption.cipher(collection, keys).encrypt("personal_info.name", normalized(name))
    except encryption.NoDataKeyError:  # nothing was ever loaded: no document holds a name
        stored = {"$in": []}
    query = {"personal_info.name": stored}
    if gender:
        query["personal_info.gender"] = gender
    if blood_type:
        query["personal_info.blood_type"] = blood_type
    return query


def _quarantine_files() -> Iterator[tuple[Path, pd.DataFrame, pd.DataFrame]]:
    """Path, rows as written, and the identifying cells as the source had them (a formula-like name was quoted)."""
    for path in sorted(settings.quarantine_dir().glob("*.csv")):
        rows = pd.read_csv(path, dtype=str, keep_default_na=False)
        yield path, rows, rows[["Name", "Gender", "Blood Type"]].map(csv_cells.as_written)


def _quarantined(name: str) -> pd.DataFrame:
    frames = []
    for path, _, rows in _quarantine_files():
        mine = rows.loc[normalize_names(rows["Name"]).map(_folded) == _folded(name)]
        frames.append(pd.DataFrame({"file": str(path), "gender": mine["Gender"].map(lambda g: _canonical(g, GENDERS)),
                                    "blood_type": mine["Blood Type"].map(lambda b: _canonical(b, BLOOD_TYPES))}))
    return pd.concat(frames) if frames else pd.DataFrame(columns=["file", "gender", "blood_type"])


def select(collection: Collection, keys: MasterKeys, name: str, gender: str | None = None,
           blood_type: str | None = None, everyone: bool = False) -> Selection:
    """The patients the name (and gender, blood type) stands for, in the collection and in quarantine."""
    target = normalized(name)
    if sum(c.isalpha() for c in target) < MIN_LETTERS:
        raise PatientSelectionError(f"{name!r} is not a name (fewer than {MIN_LETTERS} letters): "
                                    "give the patient's full name as exported")
    found: dict[tuple[str, str], dict] = {}
    pipeline = [{"$match": patient_query(collection, keys, target, gender, blood_type)},
                {"$group": {"_id": "$patient_id", "gender": {"$first": "$personal_info.gender"},
                            "blood_type": {"$first": "$personal_info.blood_type"}, "stays": {"$sum": 1}}}]
    for group in collection.aggregate(pipeline):
        found[(group["gender"], group["blood_type"])] = {"patient_id": group["_id"], "stays": group["stays"]}
    rows = _quarantined(target)
    if gender:
        rows = rows.loc[rows["gender"].map(_folded) == _folded(gender)]
    if blood_type:
        rows = rows.loc[rows["blood_type"].map(_folded) == _folded(blood_type)]
    key = keys.pseudonym_key()
    for (g, b), count in rows.groupby(["gender", "blood_type"]).size().items():
        entry = found.setdefault((g, b), {"patient_id": privacy.patient_id(target, g, b, key), "stays": 0})
        entry["quarantined"] = int(count)
    patients = tuple(sorted((Patient(gender=g, blood_type=b, **entry) for (g, b), entry in found.items()),
                            key=lambda p: (-p.stays, p.gender, p.blood_type)))
    if len(patients) > 1 and not everyone:
        listing = "\n".join(f"  {p.describe()}" for p in patients)
        raise SeveralPatientsError(
            f"{target!r} is the name of {len(patients)} patients:\n{listing}\n"
            "pick one with --gender and/or --blood-type, or pass --all for every one of them")
    return Selection(target, patients)


def export_patient(collection: Collection, keys: MasterKeys, out: Path, selection: Selection) -> int:
    """Into a new owner-only file (never replacing nor following what is at `out`); returns the count."""
    with settings.create_owner_only(out) as handle:
        try:
            cipher = encryption.cipher(collection, keys)
            records = [cipher.decrypt_document(d) for d in collection.find({"patient_id": {"$in": selection.ids}})] \
                if selection.ids else []
            handle.write(json_util.dumps({"patient": selection.name, "records": records},
                                         json_options=json_util.RELAXED_JSON_OPTIONS, indent=2))
        except BaseException:
            out.unlink(missing_ok=True)  # the file this call created, half written
            raise
    audit.record(collection.database, "export_patient", str(out), len(records),
                 patient_ids=sorted({r["patient_id"] for r in records}))
    return len(records)


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict | list):
        for item in value.values() if isinstance(value, dict) else value:
            yield from _strings(item)


def quotes(path: Path, name: str) -> bool:
    """Whether a report holds the name as a whole value, letter case aside: a CSV cell or JSON string equal to it, or
    the name between non-letters in HTML and Markdown; never a substring."""
    text, target = path.read_text(errors="ignore"), _folded(name)
    if path.suffix == ".csv":
        return any(_folded(cell) == target for row in csv.reader(io.StringIO(text)) for cell in row)
    if path.suffix == ".json":
        try:
            return any(_folded(s) == target for s in _strings(json.loads(text)))
        except ValueError:
            pass  # not JSON after all: read as text
    words = r"\s+".join(re.escape(w) for w in target.split())
    return re.search(rf"(?<!\w){words}(?!\w)", html.unescape(text), re.IGNORECASE) is not None


def _scrub_files(selection: Selection, apply: bool) -> dict[str, int]:
    """Quarantine rows of the patients, reports quoting the name, staging folders of finished runs."""
    done = {"quarantine_rows": 0, "report_files": 0, "staging_folders": 0, KEPT: 0}
    target = _folded(selection.name)
    for path, rows, cells in _quarantine_files():
        theirs = pd.Series([selection.has(_canonical(g, GENDERS), _canonical(b, BLOOD_TYPES))
                            for g, b in zip(cells["Gender"], cells["Blood Type"], strict=True)], index=rows.index, dtype=bool)
        mine = (normalize_names(cells["Name"]).map(_folded) == target) & theirs
        if mine.any():
            if apply:
                csv_cells.to_csv(rows.loc[~mine], path)
            done["quarantine_rows"] += int(mine.sum())
    if settings.reports_dir().exists():
        for path in sorted(settings.reports_dir().rglob("*")):
            if path.is_file() and path.suffix in REPORT_SUFFIXES and quotes(path, selection.name):
                if apply:
                    path.unlink()  # regenerated by the next run
                done["report_files"] += 1
    if settings.staging_dir().exists():  # staged rows are transient; the next run stages again
        for folder in sorted(p for p in settings.staging_dir().iterdir() if p.is_dir()):
            removed = staging.remove_if_unused(folder) if apply else not staging.in_use(folder)
            done["staging_folders" if removed else KEPT] += 1
    return done


def erase_stays(collection: Collection, ids: list[str], command: str, key: bytes) -> dict[str, int]:
    """Returns what was removed per place; `command` names who erases (the release's lease owner)."""
    release = Release(collection, key)
    doctor_app = doctor_app_copy(collection)
    # The source and the analysts' copy in one release operation: every increment that holds one of
    # the patients' stays leaves the copy whole, so what leaves is never fewer than 11 people.
    plan, copy_removed = release.erase(ids, owner=f"{command}:{getpass.getuser()}:{os.getpid()}") \
        if ids else (None, 0)
    return {collection.full_name: len(plan.erased_stays) if plan else 0, release.copy.full_name: copy_removed,
            doctor_app.full_name: doctor_app.delete_many({"patient_id": {"$in": ids}}).deleted_count if ids else 0}


def erase_patient(collection: Collection, keys: MasterKeys, selection: Selection, apply: bool = True) -> dict:
    """Returns what was removed per place (KEPT: what was not). Not applied, a dry run of the collection and the files
    (the copies lose the same stays, and the analysts' copy the whole increments that hold them)."""
    ids = selection.ids
    if not apply:
        return {collection.full_name: sum(p.stays for p in selection.patients), **_scrub_files(selection, apply=False)}
    removed = erase_stays(collection, ids, "erase-patient", keys.pseudonym_key())
    erasures = audit.audit_db(collection.database)[audit.ERASURES_COLLECTION]
    for patient_id in ids:
        erasures.update_one({"_id": patient_id}, {"$setOnInsert": {"_id": patient_id}}, upsert=True)
    removed.update(_scrub_files(selection, apply=True))
    audit.record(collection.database, "erase_patient", collection.full_name,
                 sum(n for place, n in removed.items() if place != KEPT), patient_ids=ids, removed=removed)
    return removed
