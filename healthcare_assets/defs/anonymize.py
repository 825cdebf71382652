"""anonymized_view: the client's de-identified view, and the copy analysts actually read."""

import hashlib
import re
from collections import Counter
from collections.abc import Iterable, Iterator

import dagster as dg
from pymongo.collection import Collection
from pymongo.database import Database

from healthcare_assets import audit, privacy, scans
from healthcare_assets.access import databases
from healthcare_assets.defs.load import mongo_hospitalizations
from healthcare_assets.resources.mongo import MongoResource


@dg.asset(group_name="privacy", kinds={"mongodb"}, deps=[mongo_hospitalizations])
def anonymized_view(context: dg.AssetExecutionContext, mongo: MongoResource) -> dg.MaterializeResult:
    """`patients_anonymized_view` in the hospitalization database (the client's requirement) and
    its materialized copy in `healthcare_analytics.patients_anonymized` (what ANALYST_READONLY can
    read: the embedded server grants per database). Allow-listed fields only, ages and amounts in
    bands, dates as years, keyed patient ids; quasi-identifier groups smaller than k=11 are
    suppressed and counted."""
    source = mongo.hospitalizations()
    db = source.database
    analytics = db.client[databases(db.name)["analytics"]]
    sizes: Counter = Counter()  # quasi-identifier group -> records, summed over the ranges' partial sizes
    for group in scans.aggregate(source, privacy.group_sizes_pipeline()):
        sizes[tuple(group["_id"].items())] += group["records"]
    small = {group: records for group, records in sizes.items() if records < privacy.K_ANONYMITY}
    pipeline = privacy.view_pipeline([dict(group) for group in small])
    # drop and create: the embedded server accepts collMod on a view but keeps the old pipeline
    db.drop_collection(privacy.VIEW_NAME)
    db.create_collection(privacy.VIEW_NAME, viewOn=source.name, pipeline=pipeline)
    # The analysts' copy: the view's pipeline range by range into a fresh collection, swapped in
    # whole by a rename, so readers never see a half-written copy.
    incoming = analytics[privacy.COPY_COLLECTION + "_incoming"]
    incoming.drop()
    analytics.create_collection(incoming.name)
    for documents in scans.batches(source, pipeline):
        if documents:
            incoming.insert_many(documents, ordered=False)
    incoming.rename(privacy.COPY_COLLECTION, dropTarget=True)
    copied = analytics[privacy.COPY_COLLECTION].estimated_document_count()
    audit.record(db, "refresh_anonymized_copy", f"{analytics.name}.{privacy.COPY_COLLECTION}", copied,
                 groups_suppressed=len(small))
    context.log.info(f"{copied:,} anonymized records; {len(small)} small groups suppressed")
    return dg.MaterializeResult(metadata={
        "dagster/row_count": copied,
        "view": f"{db.name}.{privacy.VIEW_NAME}",
        "analyst_copy": f"{analytics.name}.{privacy.COPY_COLLECTION}",
        "k_required": privacy.K_ANONYMITY,
        "k_reached": min((n for n in sizes.values() if n >= privacy.K_ANONYMITY), default=0),
        "groups": len(sizes),
        "groups_suppressed": len(small),
        "records_suppressed": sum(small.values()),
        "fields": dg.MetadataValue.json(list(privacy.VIEW_FIELDS)),
    })


CHECKS = {
    "view_fields_are_allow_listed": "every view document has exactly the allow-listed fields",
    "no_source_name_in_view": "no patient, doctor or hospital name from the source appears in the view",
    "ages_and_dates_are_banded": "ages and amounts are bands, dates are years",
    "k_anonymity_at_least_11": "every quasi-identifier group has at least 11 records",
    "patient_ids_are_keyed_hashes": "no patient_id is the unkeyed SHA-256 or MD5 of its patient's name "
                                    "or identity (dictionary attack)",
}
KEYED_ID = re.compile(r"[0-9a-f]{64}")  # an HMAC-SHA256 hex digest


def _plain_hashes(person: dict) -> set[str]:
    """What a dictionary attack tries: unkeyed SHA-256 and MD5 of the name and the identity."""
    texts = {person["name"], person["name"].casefold(),
             privacy.patient_identity(person["name"], person["gender"], person["blood_type"])}
    return {h(t.encode()).hexdigest() for t in texts for h in (hashlib.sha256, hashlib.md5)}


def view_documents(db: Database) -> Iterator[dict]:
    """What the view serves, from its stored definition run range by range on its source (a find on
    the view would have the embedded server build the whole view in memory first)."""
    spec = next(db.list_collections(filter={"name": privacy.VIEW_NAME}))["options"]
    return scans.aggregate(db[spec["viewOn"]], spec["pipeline"])


def view_findings(source: Collection, view: Iterable[dict]) -> dict:
    """What the five checks need, in one pass over the view and one over the source, in memory that
    does not grow with the collection: set aside the keyed ids, the view's texts are a few bands and
    categories, so each source name is looked up among them (not every name kept); and each source
    document's id, which the view projects as stored, is compared with its own patient's plain hashes."""
    wrong_fields, not_banded, groups, texts = Counter(), Counter(), Counter(), Counter()
    for doc in view:
        for field in set(doc) ^ set(privacy.VIEW_FIELDS):
            wrong_fields[field] += 1
        for field, value in doc.items():
            if isinstance(value, str) and not (field == "patient_id" and KEYED_ID.fullmatch(value)):
                texts[value.casefold()] += 1
        not_banded["age_range"] += doc.get("age_range") not in privacy.AGE_LABELS
        not_banded["billing_range"] += doc.get("billing_range") not in privacy.BILLING_LABELS
        for field in ("admission_year", "discharge_year"):
            not_banded[field] += not (isinstance(doc.get(field), int) and 1900 <= doc[field] <= 2100)
        groups[tuple(doc.get(q) for q in privacy.QUASI_IDENTIFIERS)] += 1

    leaked: set[str] = set()
    names = exposed = 0
    fields = {"patient_id": 1, "personal_info": 1, "administrative_info.doctor": 1, "administrative_info.hospital": 1}
    for doc in scans.aggregate(source, [{"$project": fields}]):
        person, admin = doc["personal_info"], doc["administrative_info"]
        for name in (person["name"], admin["doctor"], admin["hospital"]):
            names += 1
            if name.casefold() in texts:
                leaked.add(name.casefold())
        exposed += doc.get("patient_id") in _plain_hashes(person)
    return {"wrong_fields": dict(wrong_fields), "not_banded": {k: v for k, v in not_banded.items() if v},
            "k_reached": min(groups.values()) if groups else 0, "groups": len(groups),
            "names_checked": names, "leaks": sum(texts[name] for name in leaked), "exposed_ids": exposed}


@dg.multi_asset_check(specs=[dg.AssetCheckSpec(name, asset=anonymized_view, blocking=True, description=text)
                             for name, text in CHECKS.items()])
def anonymized_view_checks(mongo: MongoResource):
    """All five privacy checks from one pass over the view and one over the source."""
    found = view_findings(mongo.hospitalizations(), view_documents(mongo.db()))
    yield dg.AssetCheckResult(check_name="view_fields_are_allow_listed", passed=not found["wrong_fields"],
                              metadata={"unexpected_or_missing_fields": found["wrong_fields"]})
    yield dg.AssetCheckResult(check_name="no_source_name_in_view", passed=found["leaks"] == 0,
                              metadata={"names_checked": found["names_checked"], "leaks": found["leaks"]})
    yield dg.AssetCheckResult(check_name="ages_and_dates_are_banded", passed=not found["not_banded"],
                              metadata={"not_banded": found["not_banded"]})
    yield dg.AssetCheckResult(check_name="k_anonymity_at_least_11",
                              passed=not found["groups"] or found["k_reached"] >= privacy.K_ANONYMITY,
                              metadata={"k_reached": found["k_reached"], "groups": found["groups"]})
    yield dg.AssetCheckResult(check_name="patient_ids_are_keyed_hashes", passed=found["exposed_ids"] == 0,
                              metadata={"exposed_ids": found["exposed_ids"]})
