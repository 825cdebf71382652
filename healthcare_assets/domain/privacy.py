"""De-identification: keyed pseudonyms (never made inside a view, whose pipeline anyone listing
collections reads), and the release policy of the analysts' copy (docs/release-policy.md)."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

import pandas as pd

from healthcare_assets.domain import schema
from healthcare_assets.domain.hierarchies import Bands, Exact, Hidden, Merge, Span

# Columns whose values name or single out a person by themselves: never quoted in a report or in
# metadata, not even as a sample of what failed a check (counts only).
IDENTIFYING_COLUMNS = ("name", "doctor", "hospital", "patient_id", "record_key")
K_ANONYMITY = 11  # the CMS small-cell rule, counted in patients
MAX_SHARE = 0.5  # of a group's (or an increment's) stays that one sensitive value may make up
MAX_SUPPRESSED = 0.05  # of the stays counted
VIEW_NAME = "patients_anonymized_view"
COPY_COLLECTION = "patients_anonymized"  # in the analytics database (access.databases)


def patient_identity(name: str, gender: str, blood_type: str) -> str:
    # The export has no patient number: a person is a cleaned name with gender and blood type.
    return f"{name.casefold()}|{gender}|{blood_type}"


def patient_id(name: str, gender: str, blood_type: str, key: bytes) -> str:
    return hmac.new(key, patient_identity(name, gender, blood_type).encode(), hashlib.sha256).hexdigest()


def patient_ids(frame: pd.DataFrame, key: bytes) -> pd.Series:
    people = zip(frame["name"], frame["gender"], frame["blood_type"], strict=True)
    return pd.Series([patient_id(*person, key) for person in people], index=frame.index, dtype="str")


@dataclass(frozen=True)
class QuasiIdentifier:
    field: str  # its name in the release
    value: Any  # the MongoDB expression of its exact value in a source document
    levels: tuple  # finest first
    weight: float  # what the analyses lose when it is generalized (healthcare_assets.domain.generalization)


# Ages: decades (everyone over 89 in "90+", Safe Harbor), then twenty years, then minors/adults/60+.
AGE_BANDS = ((0, "0-17"), (18, "18-29"), (30, "30-39"), (40, "40-49"), (50, "50-59"),
             (60, "60-69"), (70, "70-79"), (80, "80-89"), (90, "90+"))
AGE_BANDS_20 = ((0, "0-17"), (18, "18-39"), (40, "40-59"), (60, "60-79"), (80, "80+"))
AGE_BANDS_WIDE = ((0, "0-17"), (18, "18-59"), (60, "60+"))
STAY_WEEKS = ((0, "0-7"), (8, "8-14"), (15, "15-21"), (22, "22-28"), (29, "29+"))
STAY_FORTNIGHTS = ((0, "0-14"), (15, "15+"))
ABO_GROUPS = tuple((group, (f"{group}+", f"{group}-")) for group in ("A", "B", "AB", "O"))

QUASI_IDENTIFIERS = (
    QuasiIdentifier("age_range", "$personal_info.age",
                    (Bands(AGE_BANDS), Bands(AGE_BANDS_20), Bands(AGE_BANDS_WIDE), Hidden()), 2),
    QuasiIdentifier("gender", "$personal_info.gender", (Exact(schema.GENDERS), Hidden()), 1),
    QuasiIdentifier("blood_type", "$personal_info.blood_type",
                    (Exact(schema.BLOOD_TYPES), Merge(ABO_GROUPS), Hidden()), 1),
    QuasiIdentifier("medical_condition", "$medical_info.condition", (Exact(schema.CONDITIONS), Hidden()), 4),
    QuasiIdentifier("admission_year", {"$year": "$admission_info.date_admission"}, (Span(1), Span(2), Hidden()), 2),
    QuasiIdentifier("length_of_stay", "$admission_info.duration_days",
                    (Bands(STAY_WEEKS), Bands(STAY_FORTNIGHTS), Hidden()), 2),
    QuasiIdentifier("insurance_provider", "$administrative_info.insurance_provider",
                    (Exact(schema.INSURERS), Hidden()), 1),
    QuasiIdentifier("admission_type", "$admission_info.admission_type", (Exact(schema.ADMISSION_TYPES), Hidden()), 1),
)
QI_FIELDS = tuple(q.field for q in QUASI_IDENTIFIERS)
NO_RESULT = "none"  # exports without a test result column
SENSITIVE = {
    # a stay has at most one result (one CSV column); the array allows none
    "test_results": {"$ifNull": [{"$arrayElemAt": ["$medical_info.test_results", 0]}, NO_RESULT]},
    "medication": "$medical_info.medication",
}
SENSITIVE_VALUES = {"test_results": (*schema.TEST_RESULTS, NO_RESULT), "medication": schema.MEDICATIONS}
VIEW_FIELDS = (*QI_FIELDS, *SENSITIVE)

Scheme = dict[str, int]  # quasi-identifier field -> level in its hierarchy
FINEST: Scheme = {field: 0 for field in QI_FIELDS}


def exact_values() -> dict:
    """Quasi-identifiers as they are (for generalizing in Python), sensitive fields as released."""
    return {"_values": {q.field: q.value for q in QUASI_IDENTIFIERS}, **SENSITIVE, PERSON: "$patient_id"}


PERSON = "patient_id"  # whom a stay is about: k counts these


def counted_person(patient_id: str) -> int:
    """A patient as counted: a number keeps a million ids in a fraction of the memory; two patients sharing one
    would count once (fewer patients, never more)."""
    return hash(patient_id)


def diverse(counts: dict[str, dict[Any, int]], stays: int) -> bool:
    """counts: field -> value -> stays; they add up over a union, so a union of diverse sets is diverse."""
    return stays > 0 and all(max(counts.get(f, {}).values(), default=0) <= MAX_SHARE * stays for f in SENSITIVE)


def qualifies(people: int, counts: dict[str, dict[Any, int]], stays: int) -> bool:
    return people >= K_ANONYMITY and diverse(counts, stays)


def generalize(values: dict, scheme: Scheme) -> dict[str, str]:
    return {q.field: q.levels[scheme[q.field]].label(values[q.field]) for q in QUASI_IDENTIFIERS}


def release_projection(scheme: Scheme) -> dict:
    """The same labels generalize() gives, computed by the server."""
    return {**{q.field: q.levels[scheme[q.field]].expression(q.value) for q in QUASI_IDENTIFIERS}, **SENSITIVE}


def allowed(field: str, label: Any, scheme: Scheme) -> bool:
    if field in SENSITIVE_VALUES:
        return label in SENSITIVE_VALUES[field]
    if field not in QI_FIELDS:
        return False
    qi = QUASI_IDENTIFIERS[QI_FIELDS.index(field)]
    return qi.levels[scheme[field]].allows(label)


def view_pipeline(scheme: Scheme, stays: str) -> list[dict]:
    """The stays the copy holds according to the `stays` collection, looked up by the source's _id."""
    return [{"$lookup": {"from": stays, "localField": "_id", "foreignField": "_id", "as": "_release"}},
            {"$match": {"_release.live": True}}, {"$project": {"_id": 0, **release_projection(scheme)}}]


def group_of(released: dict) -> dict:
    return {field: released.get(field) for field in QI_FIELDS}


def group_key(group: dict) -> str:
    return "|".join(str(group[field]) for field in QI_FIELDS)  # no label holds "|"


def group_from_key(key: str) -> dict[str, str]:
    return dict(zip(QI_FIELDS, key.split("|"), strict=True))


def release_id(record_key: str, key: bytes, epoch: str) -> str:
    """Keyed (unmatchable to the source's _id), fixed within an epoch (a repeat is a no-op), new with each."""
    return hmac.new(key, f"analysts-copy|{epoch}|{record_key}".encode(), hashlib.sha256).hexdigest()[:32]
