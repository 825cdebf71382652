"""De-identification: keyed pseudonyms, and the release policy of the analysts' copy.

Pseudonyms. The source's patient_id is an HMAC-SHA256 computed at load time with
HEALTHCARE_PSEUDONYM_KEY, never inside a view: a view's pipeline is readable by anyone who can list
collections, and a plain or salted hash of a name falls to a dictionary attack.

Threat model. The analysts' copy (and the view it mirrors) is read by people who must not learn
anything about one patient. The attacker is an analyst, or anyone the copy leaks to, who knows a
neighbour, colleague or relative was in hospital and knows what an outsider can know about that
stay: the person's age and sex, often their blood type and what they were treated for, when they
were admitted, how long they stayed, their insurer and whether it was an emergency. Those are the
quasi-identifiers (QUASI_IDENTIFIERS). What the attacker wants is the rest: the test result, the
medication and what the stay cost (SENSITIVE). HIPAA Safe Harbor's list (no names, no dates finer
than a year, no ages over 89) is the floor; on this data it is not enough (an admission year with
the exact length of stay singles out two stays in three).

Release policy.
- Never released: names, doctor, hospital, room, exact ages, amounts and dates, and any linkable
  patient id. The analyses the copy serves (counts by condition and age band per year, lengths of
  stay, results and medication by group) need no link between two stays of one person; readmission
  studies run on the source, inside the data team, and leave as aggregates. With no link, every
  stay is its own record, and groups count stays.
- Every quasi-identifier is released at a level of its hierarchy (QUASI_IDENTIFIERS: finest first,
  "*" hides it). The levels are chosen for the data at hand (healthcare_assets.domain.generalization): the
  least information lost, weighted by what the analyses need, with at most MAX_SUPPRESSED of the
  stays held back.
- k-anonymity: every released combination of quasi-identifiers is shared by at least K_ANONYMITY
  stays (the CMS small-cell rule).
- l-diversity: within every released group each sensitive field takes at least L_DIVERSITY values,
  so knowing someone's group never tells their test result, medication or bill.
- A group that does not meet both is held back whole (suppressed) until it does.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import secrets
from dataclasses import dataclass
from typing import Any

import pandas as pd

from healthcare_assets.domain import schema
from healthcare_assets.plumbing import secrets_file

# Columns whose values name or single out a person by themselves: never quoted in a report or in
# metadata, not even as a sample of what failed a check (counts only).
IDENTIFYING_COLUMNS = ("name", "doctor", "hospital", "patient_id", "record_key")
K_ANONYMITY = 11  # the CMS small-cell rule
L_DIVERSITY = 2
MAX_SUPPRESSED = 0.05  # of the stays counted
VIEW_NAME = "patients_anonymized_view"
COPY_COLLECTION = "patients_anonymized"  # in the analytics database (access.databases)


def pseudonym_key() -> bytes:
    """HEALTHCARE_PSEUDONYM_KEY (in production at least 32 bytes, never the .env.example
    placeholder), or a per-installation key generated once into $HEALTHCARE_DATA_DIR/secrets.env
    (with a warning): never a key written in the code."""
    return secrets_file.value("HEALTHCARE_PSEUDONYM_KEY", lambda: secrets.token_hex(32), what="key",
                              min_bytes=secrets_file.MIN_KEY_BYTES).encode()


def patient_identity(name: str, gender: str, blood_type: str) -> str:
    # The export has no patient number: a person is a cleaned name with gender and blood type.
    return f"{name.casefold()}|{gender}|{blood_type}"


def patient_id(name: str, gender: str, blood_type: str, key: bytes) -> str:
    return hmac.new(key, patient_identity(name, gender, blood_type).encode(), hashlib.sha256).hexdigest()


def patient_ids(frame: pd.DataFrame, key: bytes) -> pd.Series:
    people = zip(frame["name"], frame["gender"], frame["blood_type"], strict=True)
    return pd.Series([patient_id(*person, key) for person in people], index=frame.index, dtype="str")


def band(value: float, bands: tuple) -> str:
    label = bands[0][1]
    for lower, name in bands:
        if value >= lower:
            label = name
    return label


# ---- generalization hierarchies: each level says how a value is released, in Python and in MongoDB

HIDDEN = "*"


@dataclass(frozen=True)
class Exact:
    """The category itself, from a closed set."""

    categories: tuple[str, ...]

    def label(self, value: Any) -> str:
        return str(value)

    def expression(self, value: Any) -> Any:
        return value

    def allows(self, label: Any) -> bool:
        return label in self.categories

    def describe(self) -> str:
        return "exact"


@dataclass(frozen=True)
class Bands:
    """A number in its range: (lower bound, label), ascending."""

    bounds: tuple[tuple[float, str], ...]

    def label(self, value: float) -> str:
        return band(value, self.bounds)

    def expression(self, value: Any) -> dict:
        branches = [{"case": {"$lt": [value, upper]}, "then": label}
                    for (_, label), (upper, _) in itertools.pairwise(self.bounds)]
        return {"$switch": {"branches": branches, "default": self.bounds[-1][1]}}

    def allows(self, label: Any) -> bool:
        return label in {name for _, name in self.bounds}

    def describe(self) -> str:
        return "bands " + ", ".join(name for _, name in self.bounds)


@dataclass(frozen=True)
class Span:
    """A year in a span of `width` years starting at a multiple of it: "2023", or "2022-2023"."""

    width: int

    def label(self, year: int) -> str:
        start = year - year % self.width
        return str(start) if self.width == 1 else f"{start}-{start + self.width - 1}"

    def expression(self, year: Any) -> dict:
        if self.width == 1:
            return {"$toString": year}
        start = {"$subtract": [year, {"$mod": [year, self.width]}]}
        return {"$concat": [{"$toString": start}, "-", {"$toString": {"$add": [start, self.width - 1]}}]}

    def allows(self, label: Any) -> bool:
        parts = label.split("-") if isinstance(label, str) else []
        if not all(p.isdigit() and len(p) == 4 for p in parts) or len(parts) != (1 if self.width == 1 else 2):
            return False
        return self.label(int(parts[0])) == label

    def describe(self) -> str:
        return "year" if self.width == 1 else f"{self.width}-year spans"


@dataclass(frozen=True)
class Merge:
    """Categories merged into wider ones: (label, members); anything else is "other"."""

    groups: tuple[tuple[str, tuple[str, ...]], ...]

    def label(self, value: Any) -> str:
        return next((label for label, members in self.groups if value in members), "other")

    def expression(self, value: Any) -> dict:
        branches = [{"case": {"$in": [value, list(members)]}, "then": label} for label, members in self.groups]
        return {"$switch": {"branches": branches, "default": "other"}}

    def allows(self, label: Any) -> bool:
        return label in {"other", *(name for name, _ in self.groups)}

    def describe(self) -> str:
        return "merged into " + ", ".join(name for name, _ in self.groups)


@dataclass(frozen=True)
class Hidden:
    """Not released: every stay shows "*"."""

    def label(self, value: Any) -> str:
        return HIDDEN

    def expression(self, value: Any) -> dict:
        return {"$literal": HIDDEN}

    def allows(self, label: Any) -> bool:
        return label == HIDDEN

    def describe(self) -> str:
        return "hidden (*)"


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
BILLING_BANDS = ((0, "0-10K"), (10_000, "10K-25K"), (25_000, "25K-50K"), (50_000, "50K+"))

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
    "billing_range": Bands(BILLING_BANDS).expression("$administrative_info.billing_amount"),
}
SENSITIVE_VALUES = {"test_results": (*schema.TEST_RESULTS, NO_RESULT), "medication": schema.MEDICATIONS,
                    "billing_range": tuple(label for _, label in BILLING_BANDS)}
VIEW_FIELDS = (*QI_FIELDS, *SENSITIVE)

Scheme = dict[str, int]  # quasi-identifier field -> level in its hierarchy
FINEST: Scheme = {field: 0 for field in QI_FIELDS}


def exact_values() -> dict:
    """A source document's quasi-identifiers as they are (for generalizing in Python), and its
    sensitive fields as released."""
    return {"_values": {q.field: q.value for q in QUASI_IDENTIFIERS}, **SENSITIVE}


def generalize(values: dict, scheme: Scheme) -> dict[str, str]:
    """Exact quasi-identifier values, released at the scheme's levels."""
    return {q.field: q.levels[scheme[q.field]].label(values[q.field]) for q in QUASI_IDENTIFIERS}


def release_projection(scheme: Scheme) -> dict:
    """The released fields computed from a source document: the same labels generalize() gives."""
    return {**{q.field: q.levels[scheme[q.field]].expression(q.value) for q in QUASI_IDENTIFIERS}, **SENSITIVE}


def allowed(field: str, label: Any, scheme: Scheme) -> bool:
    """Is this a label the scheme releases for this field (a band, a span, a category, "*")?"""
    if field in SENSITIVE_VALUES:
        return label in SENSITIVE_VALUES[field]
    if field not in QI_FIELDS:
        return False
    qi = QUASI_IDENTIFIERS[QI_FIELDS.index(field)]
    return qi.levels[scheme[field]].allows(label)


def view_pipeline(scheme: Scheme, groups: str) -> list[dict]:
    """Allow-listed, generalized fields, of the stays whose group is published according to the
    `groups` collection (a lookup per stay: a list of held-back groups in the pipeline costs
    every stay the whole list, 8 ms a stay for 3,000 groups on the embedded server)."""
    labels = release_projection(scheme)
    key = {"$concat": [part for field in QI_FIELDS for part in ("|", labels[field])][1:]}
    return [{"$project": {"_id": 0, **labels, "_group": key}},
            {"$lookup": {"from": groups, "localField": "_group", "foreignField": "_id", "as": "_release"}},
            {"$match": {"_release.published": True}},
            {"$project": {"_group": 0, "_release": 0}}]


def group_of(released: dict) -> dict:
    """A released document's quasi-identifier group."""
    return {field: released.get(field) for field in QI_FIELDS}


def group_key(group: dict) -> str:
    return "|".join(str(group[field]) for field in QI_FIELDS)


def release_id(record_key: str, key: bytes) -> str:
    """The analysts' copy's _id for a stay: keyed, so it cannot be matched to the source's _id
    (a hash of the row) without the key, and fixed, so publishing a stay twice is a no-op."""
    return hmac.new(key, b"analysts-copy|" + record_key.encode(), hashlib.sha256).hexdigest()[:32]
