"""The client's seven indexes and their questions, asked of MongoDB and answered from the raw CSV with pandas."""

import datetime as dt
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import pandas as pd
from pymongo.collection import Collection

from healthcare_assets.domain.cleaning import normalize_hospitals, normalize_names
from healthcare_assets.domain.schema import DATE_FORMAT

# The client's indexes, by name. Everything else (queries, check, report) refers to these names.
INDEXES: dict[str, list[tuple[str, int]]] = {
    "patient_name": [("personal_info.name", 1)], "patient_age": [("personal_info.age", 1)],
    "condition": [("medical_info.condition", 1)], "admission_date": [("admission_info.date_admission", 1)],
    "hospital": [("administrative_info.hospital", 1)], "billing_amount": [("administrative_info.billing_amount", 1)],
    "gender_age": [("personal_info.gender", 1), ("personal_info.age", 1)]}

NATURAL = {"$natural": 1}  # forces a collection scan
REDACTED = "[redacted]"


@dataclass(frozen=True)
class Query:
    name: str
    question: str
    index: str  # the INDEXES entry that should serve it
    filter: dict
    group: dict | None = None  # set: an aggregation, $match on filter then $group
    projection: dict | None = None
    sort: list | None = None

    def run(self, collection: Collection, hint: dict | None = None) -> int:
        # counted, not kept: memory stays flat
        options = {"hint": hint} if hint else {}
        if self.group:
            cursor = collection.aggregate(self.pipeline(), **options)
        else:
            cursor = collection.find(self.filter, self.projection, sort=self.sort, **options)
        return sum(1 for _ in cursor)

    def pipeline(self) -> list[dict]:
        return [{"$match": self.filter}, {"$group": self.group}, {"$sort": {"_id": 1}}]

    def command(self, collection: Collection, hint: dict | None = None) -> dict:
        if self.group:
            command = {"aggregate": collection.name, "pipeline": self.pipeline(), "cursor": {}}
        else:
            command = {"find": collection.name, "filter": self.filter}
            if self.projection:
                command["projection"] = self.projection
            if self.sort:
                command["sort"] = dict(self.sort)
        return {**command, "hint": hint} if hint else command

    def public(self) -> dict:
        """The spec with the patient's name left out (reports and metadata are not for PII)."""
        spec = asdict(self)
        if "personal_info.name" in spec["filter"]:
            spec["filter"] = {**spec["filter"], "personal_info.name": REDACTED}
        return spec


@dataclass(frozen=True)
class CsvQuestion:
    columns: list[str]  # canonical field names it reads
    mask: Callable[[pd.DataFrame], pd.Series]
    finish: Callable[[pd.DataFrame], pd.DataFrame] = field(default=lambda rows: rows)


def _number(column: pd.Series) -> pd.Series:
    return pd.to_numeric(column, errors="coerce")


def _same_text(column: pd.Series, value: str) -> pd.Series:
    return column.str.strip().str.casefold() == value.casefold()


def _admitted(c: pd.DataFrame) -> pd.Series:
    return pd.to_datetime(c["date_of_admission"], format=DATE_FORMAT, errors="coerce")


def _by_age(rows: pd.DataFrame) -> pd.DataFrame:
    rows = rows.assign(age=_number(rows["age"]), billing=_number(rows["billing_amount"]).abs())
    return rows.groupby("age").agg(stays=("age", "size"), mean_billing=("billing", "mean"))


def query_suite(sample: dict, clear_name: str | None = None) -> list[tuple[Query, CsvQuestion]]:
    """The fixed suite, its parameters from one loaded document so every value exists: the name as stored
    (deterministically encrypted, so its index serves) for MongoDB, `clear_name` for the CSV."""
    person, admin, admission = sample["personal_info"], sample["administrative_info"], sample["admission_info"]
    name, hospital, condition, gender = person["name"], admin["hospital"], sample["medical_info"]["condition"], person["gender"]
    age_low, age_high = person["age"], person["age"] + 4
    decade = person["age"] // 10 * 10
    day = admission["date_admission"]
    billing_low = float(round(admin["billing_amount"], -2))
    billing_high = billing_low + 500
    export_fields = ["admission_info", "medical_info.condition", "administrative_info.billing_amount"]
    return [
        (Query("patient_by_name", "stays of one patient, by name", "patient_name", {"personal_info.name": name}),
         CsvQuestion(["name"], lambda c: normalize_names(c["name"]) == (clear_name or name))),
        (Query("age_range", f"patients aged {age_low}-{age_high}", "patient_age",
               {"personal_info.age": {"$gte": age_low, "$lte": age_high}}),
         CsvQuestion(["age"], lambda c: _number(c["age"]).between(age_low, age_high))),
        (Query("condition", f"stays for {condition}", "condition", {"medical_info.condition": condition}),
         CsvQuestion(["medical_condition"], lambda c: _same_text(c["medical_condition"], condition))),
        (Query("admission_date_range", f"admissions in the 31 days from {day:%Y-%m-%d}", "admission_date",
               {"admission_info.date_admission": {"$gte": day, "$lt": day + dt.timedelta(days=31)}}),
         CsvQuestion(["date_of_admission"],
                     lambda c: (_admitted(c) >= day) & (_admitted(c) < day + dt.timedelta(days=31)))),
        (Query("hospital", "stays at one hospital", "hospital", {"administrative_info.hospital": hospital}),
         CsvQuestion(["hospital"], lambda c: normalize_hospitals(c["hospital"]) == hospital)),
        (Query("billing_range", f"bills from {billing_low:,.0f} to {billing_high:,.0f}", "billing_amount",
               {"administrative_info.billing_amount": {"$gte": billing_low, "$lt": billing_high}}),
         CsvQuestion(["billing_amount"],
                     lambda c: _number(c["billing_amount"]).abs().between(billing_low, billing_high, inclusive="left"))),
        (Query("demographics", f"stays and mean bill by age, {gender}, aged {decade}-{decade + 9}", "gender_age",
               {"personal_info.gender": gender, "personal_info.age": {"$gte": decade, "$lte": decade + 9}},
               group={"_id": "$personal_info.age", "stays": {"$sum": 1},
                      "mean_billing": {"$avg": "$administrative_info.billing_amount"}}),
         CsvQuestion(["gender", "age", "billing_amount"],
                     lambda c: _same_text(c["gender"], gender) & _number(c["age"]).between(decade, decade + 9),
                     _by_age)),
        (Query("hospital_report", "one hospital's stays for export, by admission date", "hospital",
               {"administrative_info.hospital": hospital},
               projection={f: 1 for f in export_fields} | {"_id": 0},
               sort=[("admission_info.date_admission", 1)]),
         CsvQuestion(["hospital", "date_of_admission", "discharge_date", "medical_condition", "admission_type",
                      "room_number", "billing_amount"],
                     lambda c: normalize_hospitals(c["hospital"]) == hospital,
                     lambda rows: rows.sort_values("date_of_admission"))),
    ]
