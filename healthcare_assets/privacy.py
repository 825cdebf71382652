"""De-identification: keyed pseudonyms, bands, and the anonymized view's definition.

The patient_id is an HMAC-SHA256 computed at load time with HEALTHCARE_PSEUDONYM_KEY and stored
on the source document, never computed inside the view: a view's pipeline is readable by anyone
who can list collections, and a plain or salted hash of a name falls to a dictionary attack.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import os
import secrets
import warnings

import pandas as pd

from healthcare_assets.resources import settings

K_ANONYMITY = 11  # the CMS small-cell rule
VIEW_NAME = "patients_anonymized_view"
COPY_COLLECTION = "patients_anonymized"  # in the analytics database (access.databases)
QUASI_IDENTIFIERS = ("age_range", "gender", "blood_type", "medical_condition")

# (lower bound, label); ages are banded in decades, everyone over 89 in "90+" (HIPAA Safe Harbor)
AGE_BANDS = ((0, "0-17"), (18, "18-29"), (30, "30-39"), (40, "40-49"), (50, "50-59"),
             (60, "60-69"), (70, "70-79"), (80, "80-89"), (90, "90+"))
BILLING_BANDS = ((0, "0-10K"), (10_000, "10K-25K"), (25_000, "25K-50K"), (50_000, "50K+"))

VIEW_FIELDS = ("patient_id", "age_range", "gender", "blood_type", "medical_condition", "medication",
               "test_results", "admission_type", "insurance_provider", "length_of_stay_days",
               "admission_year", "discharge_year", "billing_range")


def pseudonym_key() -> bytes:
    """HEALTHCARE_PSEUDONYM_KEY, or a per-installation key generated once into
    $HEALTHCARE_DATA_DIR/secrets.env (with a warning): never a key written in the code."""
    key = os.environ.get("HEALTHCARE_PSEUDONYM_KEY")
    if key:
        return key.encode()
    path = settings.data_dir() / "secrets.env"
    stored = dict(line.partition("=")[::2] for line in path.read_text().splitlines()) if path.exists() else {}
    if not stored.get("HEALTHCARE_PSEUDONYM_KEY"):
        stored["HEALTHCARE_PSEUDONYM_KEY"] = secrets.token_hex(32)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text("".join(f"{k}={v}\n" for k, v in stored.items()))
    warnings.warn(f"HEALTHCARE_PSEUDONYM_KEY is not set: using the development key in {path}", stacklevel=2)
    return stored["HEALTHCARE_PSEUDONYM_KEY"].encode()


def patient_identity(name: str, gender: str, blood_type: str) -> str:
    # The export has no patient number: a person is a cleaned name with gender and blood type.
    return f"{name.casefold()}|{gender}|{blood_type}"


def patient_ids(frame: pd.DataFrame, key: bytes) -> pd.Series:
    identities = frame["name"].str.casefold() + "|" + frame["gender"] + "|" + frame["blood_type"]
    return identities.map(lambda text: hmac.new(key, text.encode(), hashlib.sha256).hexdigest())


def patient_id(name: str, gender: str, blood_type: str, key: bytes) -> str:
    return hmac.new(key, patient_identity(name, gender, blood_type).encode(), hashlib.sha256).hexdigest()


def _band_expression(field: str, bands: tuple) -> dict:
    """A MongoDB $switch that puts a number in its band, from the same table Python uses."""
    branches = [{"case": {"$lt": [field, upper]}, "then": label}
                for (_, label), (upper, _) in itertools.pairwise(bands)]
    return {"$switch": {"branches": branches, "default": bands[-1][1]}}


def band(value: float, bands: tuple) -> str:
    label = bands[0][1]
    for lower, name in bands:
        if value >= lower:
            label = name
    return label


AGE_LABELS = tuple(label for _, label in AGE_BANDS)
BILLING_LABELS = tuple(label for _, label in BILLING_BANDS)

_QUASI_IDENTIFIER_SOURCES = {
    "age_range": _band_expression("$personal_info.age", AGE_BANDS),
    "gender": "$personal_info.gender",
    "blood_type": "$personal_info.blood_type",
    "medical_condition": "$medical_info.condition",
}


def release_projection() -> dict:
    """The view's fields, computed from a source document: allow-listed, banded, keyed ids only."""
    return {
        "patient_id": 1,
        **_QUASI_IDENTIFIER_SOURCES,
        "medication": "$medical_info.medication",
        "test_results": "$medical_info.test_results",
        "admission_type": "$admission_info.admission_type",
        "insurance_provider": "$administrative_info.insurance_provider",
        "length_of_stay_days": "$admission_info.duration_days",
        "admission_year": {"$year": "$admission_info.date_admission"},
        "discharge_year": {"$year": "$admission_info.date_discharge"},
        "billing_range": _band_expression("$administrative_info.billing_amount", BILLING_BANDS),
    }


def view_pipeline(suppressed_groups: list[dict]) -> list[dict]:
    """Allow-listed, banded fields; the groups known to be smaller than K_ANONYMITY left out."""
    stages: list[dict] = [{"$project": {"_id": 0, **release_projection()}}]
    if suppressed_groups:
        stages.append({"$match": {"$nor": suppressed_groups}})
    return stages


def group_of(released: dict) -> dict:
    """A released document's quasi-identifier group."""
    return {q: released.get(q) for q in QUASI_IDENTIFIERS}


def group_key(group: dict) -> str:
    return "|".join(str(group[q]) for q in QUASI_IDENTIFIERS)


def source_filter(group: dict) -> dict:
    """The source documents that fall in a group (the inverse of the projection above)."""
    lowers = [lower for lower, _ in AGE_BANDS]
    position = AGE_LABELS.index(group["age_range"])
    age = {"$gte": lowers[position]} | ({"$lt": lowers[position + 1]} if position + 1 < len(lowers) else {})
    return {"personal_info.age": age, "personal_info.gender": group["gender"],
            "personal_info.blood_type": group["blood_type"], "medical_info.condition": group["medical_condition"]}


def release_id(record_key: str, key: bytes) -> str:
    """The analysts' copy's _id for a stay: keyed, so it cannot be matched to the source's _id
    (a hash of the row) without the key, and fixed, so publishing a stay twice is a no-op."""
    return hmac.new(key, b"analysts-copy|" + record_key.encode(), hashlib.sha256).hexdigest()[:32]
