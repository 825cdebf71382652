"""The CSV schema versions, the cleaned-row columns and the MongoDB document model, in one place: a new
export version or a new field is a change to this file only."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from bson.binary import Binary

# Canonical field name -> header in the client's current (v2) export, in export order.
CSV_COLUMNS: dict[str, str] = {
    "name": "Name", "age": "Age", "gender": "Gender", "blood_type": "Blood Type",
    "medical_condition": "Medical Condition", "date_of_admission": "Date of Admission", "doctor": "Doctor",
    "hospital": "Hospital", "insurance_provider": "Insurance Provider", "billing_amount": "Billing Amount",
    "room_number": "Room Number", "admission_type": "Admission Type", "discharge_date": "Discharge Date",
    "medication": "Medication", "test_results": "Test Results"}
FIELDS: tuple[str, ...] = tuple(CSV_COLUMNS)

# Closed value sets of the categorical columns (the original export's, exactly).
GENDERS = ("Female", "Male")
BLOOD_TYPES = ("A+", "A-", "AB+", "AB-", "B+", "B-", "O+", "O-")
CONDITIONS = ("Arthritis", "Asthma", "Cancer", "Diabetes", "Hypertension", "Obesity")
MEDICATIONS = ("Aspirin", "Ibuprofen", "Lipitor", "Paracetamol", "Penicillin")
INSURERS = ("Aetna", "Blue Cross", "Cigna", "Medicare", "UnitedHealthcare")
ADMISSION_TYPES = ("Elective", "Emergency", "Urgent")
TEST_RESULTS = ("Abnormal", "Inconclusive", "Normal")

CATEGORIES: dict[str, tuple[str, ...]] = {
    "gender": GENDERS, "blood_type": BLOOD_TYPES, "medical_condition": CONDITIONS, "medication": MEDICATIONS,
    "insurance_provider": INSURERS, "admission_type": ADMISSION_TYPES, "test_results": TEST_RESULTS}

# The client's room plan: a room outside it passes cleaning (it is a valid number) but fails the
# quality gate, because it means the export changed and someone should look before loading.
ROOM_NUMBERS = tuple(range(101, 501))

# Hard limits: a value outside them is quarantined, never loaded.
AGE_RANGE = (0, 120)
ROOM_RANGE = (1, 9999)
BILLING_MAX = 10_000_000.0
STAY_DAYS_MAX = 365
DATE_FORMAT = "%Y-%m-%d"

CLEANED_DTYPES: dict[str, str] = {
    "record_key": "str", "patient_id": "str", "line_number": "int64", "name": "str", "age": "int64",
    "gender": "str", "blood_type": "str", "medical_condition": "str", "date_of_admission": "datetime64[ms]",
    "doctor": "str", "hospital": "str", "insurance_provider": "str", "billing_amount": "float64",
    "room_number": "int64", "admission_type": "str", "discharge_date": "datetime64[ms]", "medication": "str",
    "test_results": "str", "duration_days": "int64"}
CLEANED_COLUMNS = tuple(CLEANED_DTYPES)


@dataclass(frozen=True)
class SchemaVersion:
    """One known export layout: which headers it has and what missing fields default to."""

    name: str
    headers: dict[str, str]  # canonical field -> CSV header
    defaults: dict[str, str]  # canonical field -> raw value when the export lacks the column
    description: str


SCHEMA_VERSIONS: tuple[SchemaVersion, ...] = (
    SchemaVersion("v2", dict(CSV_COLUMNS), {}, "current export, 15 columns"),
    SchemaVersion("v1-no-test-results", {k: v for k, v in CSV_COLUMNS.items() if k != "test_results"},
                  {"test_results": ""}, "older export without the Test Results column"),
)


class UnknownSchemaError(ValueError):
    """The header matches no known export version."""


SHOWN_COLUMNS, SHOWN_CHARS = 20, 40


def shown_columns(names: list[str]) -> list[str]:
    """A header may be any file's first line (`NAME=value`): few names, printable, cut, none with '='."""
    shown = []
    for name in names[:SHOWN_COLUMNS]:
        printable = "".join(c for c in name if c.isprintable())
        shown.append("<withheld>" if "=" in printable else
                     printable[:SHOWN_CHARS] + ("..." if len(printable) > SHOWN_CHARS else ""))
    if len(names) > SHOWN_COLUMNS:
        shown.append(f"... {len(names) - SHOWN_COLUMNS:,} more")
    return shown


def detect_schema_version(header: list[str], source: str = "<csv>") -> SchemaVersion:
    found = [h.strip() for h in header]
    for version in SCHEMA_VERSIONS:
        if sorted(found) == sorted(version.headers.values()):
            return version
    expected = list(CSV_COLUMNS.values())
    counts, known = Counter(found), set(expected)  # linear: a header may be wide
    missing = [c for c in expected if c not in counts]
    extra = [c for c in found if c not in known]
    duplicated = sorted(c for c, n in counts.items() if n > 1)
    parts = [f"{source}: the header matches no known export version"]
    if missing:
        parts.append(f"missing columns {missing}")
    if extra:
        parts.append(f"unexpected columns {shown_columns(extra)}")
    if duplicated:
        parts.append(f"repeated columns {shown_columns(duplicated)}")
    parts.append(f"expected (v2) {expected}")
    raise UnknownSchemaError("; ".join(parts))


# 2: the _id is the keyed record key; 1: the unkeyed SHA-256 of the row (migration.rekey_deployment)
MIGRATION_VERSION = 2

# The direct identifiers, stored encrypted. The other fields single out no one alone (the hospital names an
# organization, shared by many stays); the quasi-identifiers among them are generalized for the analysts instead.
ENCRYPTED_FIELDS = (("personal_info", "name"), ("administrative_info", "doctor"))


def _as_datetime(value) -> dt.datetime:
    # pandas Timestamps and numpy datetimes both become naive UTC datetimes (BSON dates).
    if hasattr(value, "to_pydatetime"):
        value = value.to_pydatetime()
    return dt.datetime(value.year, value.month, value.day)


def document_body(row: dict) -> dict:
    return {
        "personal_info": {"name": row["name"], "age": int(row["age"]), "gender": row["gender"],
                          "blood_type": row["blood_type"]},
        "medical_info": {"condition": row["medical_condition"], "medication": row["medication"],
                         "test_results": [row["test_results"]] if row["test_results"] else []},
        "admission_info": {"date_admission": _as_datetime(row["date_of_admission"]),
                           "date_discharge": _as_datetime(row["discharge_date"]),
                           "duration_days": int(row["duration_days"]), "admission_type": row["admission_type"],
                           "room_number": int(row["room_number"])},
        "administrative_info": {"doctor": row["doctor"], "hospital": row["hospital"],
                                "insurance_provider": row["insurance_provider"],
                                "billing_amount": float(row["billing_amount"])},
    }


def to_document(row: dict, source: dict, created_at: dt.datetime) -> dict:
    """The direct identifiers still in clear: the load encrypts them before it validates and writes."""
    return {"_id": row["record_key"], "patient_id": row["patient_id"], **document_body(row),
            "metadata": {"created_at": created_at, "source": source, "sources": [source["sha256"]],
                         "source_line": int(row["line_number"]), "migration_version": MIGRATION_VERSION}}


def _string(enum: tuple[str, ...] | None = None) -> dict:
    return {"bsonType": "string", "enum": list(enum)} if enum else {"bsonType": "string"}


def _object(properties: dict) -> dict:
    return {"bsonType": "object", "required": list(properties), "properties": properties}


DOCUMENT_JSON_SCHEMA: dict = _object({
    "_id": _string(),
    "patient_id": _string(),
    "personal_info": _object({
        "name": {"bsonType": "binData"},
        "age": {"bsonType": ["int", "long"], "minimum": AGE_RANGE[0], "maximum": AGE_RANGE[1]},
        "gender": _string(GENDERS), "blood_type": _string(BLOOD_TYPES)}),
    "medical_info": _object({
        "condition": _string(CONDITIONS), "medication": _string(MEDICATIONS),
        "test_results": {"bsonType": "array", "items": _string(TEST_RESULTS)}}),
    "admission_info": _object({
        "date_admission": {"bsonType": "date"}, "date_discharge": {"bsonType": "date"},
        "duration_days": {"bsonType": ["int", "long"], "minimum": 0, "maximum": STAY_DAYS_MAX},
        "admission_type": _string(ADMISSION_TYPES),
        "room_number": {"bsonType": ["int", "long"], "minimum": ROOM_RANGE[0], "maximum": ROOM_RANGE[1]},
    }),
    "administrative_info": _object({
        "doctor": {"bsonType": "binData"}, "hospital": _string(), "insurance_provider": _string(INSURERS),
        "billing_amount": {"bsonType": "double", "minimum": 0, "maximum": BILLING_MAX},
    }),
    "metadata": {
        "bsonType": "object", "required": ["created_at", "source", "sources", "migration_version"],
        "properties": {"created_at": {"bsonType": "date"}, "sources": {"bsonType": "array", "items": _string()},
                       "migration_version": {"bsonType": ["int", "long"]}}},
})


_BSON_TYPES = {"binData": (Binary, bytes), "string": (str,), "object": (dict,), "array": (list,),
               "date": (dt.datetime,), "double": (float,), "int": (int,), "long": (int,)}


def _validator(rule: dict) -> Callable[[object], list[str]]:
    """A rule compiled once into a closure, whose problems carry paths relative to the value, built only if any."""
    names = [rule["bsonType"]] if isinstance(rule.get("bsonType"), str) else list(rule.get("bsonType", ()))
    classes, allowed = tuple(c for name in names for c in _BSON_TYPES[name]), rule.get("enum")
    low, high, required = rule.get("minimum"), rule.get("maximum"), rule.get("required", ())
    properties = [(name, _validator(sub)) for name, sub in rule.get("properties", {}).items()]
    items = _validator(rule["items"]) if "items" in rule else None

    def problems(value) -> list[str]:
        if classes and (isinstance(value, bool) or not isinstance(value, classes)):
            return [f": expected {' or '.join(names)}, found {type(value).__name__}"]
        if allowed is not None and value not in allowed:
            return [f": {value!r} is not one of {len(allowed)} allowed values"]
        if low is not None and value < low or high is not None and value > high:
            return [f": {value!r} outside {low}..{high}"]
        found = [f".{name}: missing" for name in required if name not in value] if isinstance(value, dict) else []
        for name, check in properties if isinstance(value, dict) else ():
            if name in value and (inner := check(value[name])):
                found += [f".{name}{p}" for p in inner]
        for i, item in enumerate(value) if isinstance(value, list) and items else ():
            if inner := items(item):
                found += [f"[{i}]{p}" for p in inner]
        return found

    return problems


_DOCUMENT_PROBLEMS = _validator(DOCUMENT_JSON_SCHEMA)


def schema_violations(document) -> list[str]:
    """What in a document breaks the $jsonSchema above (the keywords it uses: bsonType, required, properties, enum,
    minimum, maximum, items). The load validates before it writes and its check what it reads back, so the server's
    own validation, a third of the load's cost on the embedded server, is bypassed. A test holds this to the server."""
    return [f"document{p}" for p in _DOCUMENT_PROBLEMS(document)]
