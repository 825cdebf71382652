"""anonymized_view: the client's de-identified view, and the copy analysts actually read."""

import hashlib
from collections import Counter

import dagster as dg

from healthcare_assets import audit, privacy
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
    analytics = databases(db.name)["analytics"]
    groups = list(source.aggregate(privacy.group_sizes_pipeline()))
    small = [g for g in groups if g["records"] < privacy.K_ANONYMITY]
    suppressed = [g["_id"] for g in small]
    pipeline = privacy.view_pipeline(suppressed)
    # drop and create: the embedded server accepts collMod on a view but keeps the old pipeline
    db.drop_collection(privacy.VIEW_NAME)
    db.create_collection(privacy.VIEW_NAME, viewOn=source.name, pipeline=pipeline)
    db[privacy.VIEW_NAME].aggregate([{"$out": {"db": analytics, "coll": privacy.COPY_COLLECTION}}])
    copied = db.client[analytics][privacy.COPY_COLLECTION].estimated_document_count()
    audit.record(db, "refresh_anonymized_copy", f"{analytics}.{privacy.COPY_COLLECTION}", copied,
                 groups_suppressed=len(small))
    kept = [g["records"] for g in groups if g["records"] >= privacy.K_ANONYMITY]
    context.log.info(f"{copied:,} anonymized records; {len(small)} small groups suppressed")
    return dg.MaterializeResult(metadata={
        "dagster/row_count": copied,
        "view": f"{db.name}.{privacy.VIEW_NAME}",
        "analyst_copy": f"{analytics}.{privacy.COPY_COLLECTION}",
        "k_required": privacy.K_ANONYMITY,
        "k_reached": min(kept) if kept else 0,
        "groups": len(groups),
        "groups_suppressed": len(small),
        "records_suppressed": sum(g["records"] for g in small),
        "fields": dg.MetadataValue.json(list(privacy.VIEW_FIELDS)),
    })


CHECKS = {
    "view_fields_are_allow_listed": "every view document has exactly the allow-listed fields",
    "no_source_name_in_view": "no patient, doctor or hospital name from the source appears in the view",
    "ages_and_dates_are_banded": "ages and amounts are bands, dates are years",
    "k_anonymity_at_least_11": "every quasi-identifier group has at least 11 records",
    "patient_ids_are_keyed_hashes": "no patient_id is the unkeyed SHA-256 or MD5 of a name (dictionary attack)",
}


@dg.multi_asset_check(specs=[dg.AssetCheckSpec(name, asset=anonymized_view, blocking=True, description=text)
                             for name, text in CHECKS.items()])
def anonymized_view_checks(mongo: MongoResource):
    """All five privacy checks in one pass over the source and one over the view."""
    names, dictionary = set(), set()
    for doc in mongo.hospitalizations().find({}, {"personal_info": 1, "administrative_info": 1}):
        p, a = doc["personal_info"], doc["administrative_info"]
        names |= {p["name"].casefold(), a["doctor"].casefold(), a["hospital"].casefold()}
        for text in {p["name"], p["name"].casefold(), privacy.patient_identity(p["name"], p["gender"], p["blood_type"])}:
            dictionary |= {hashlib.sha256(text.encode()).hexdigest(), hashlib.md5(text.encode()).hexdigest()}

    wrong_fields, not_banded, groups = Counter(), Counter(), Counter()
    leaks = exposed = 0
    for doc in mongo.db()[privacy.VIEW_NAME].find({}):
        for field in set(doc) ^ set(privacy.VIEW_FIELDS):
            wrong_fields[field] += 1
        leaks += sum(1 for v in doc.values() if isinstance(v, str) and v.casefold() in names)
        not_banded["age_range"] += doc.get("age_range") not in privacy.AGE_LABELS
        not_banded["billing_range"] += doc.get("billing_range") not in privacy.BILLING_LABELS
        for field in ("admission_year", "discharge_year"):
            not_banded[field] += not (isinstance(doc.get(field), int) and 1900 <= doc[field] <= 2100)
        groups[tuple(doc.get(q) for q in privacy.QUASI_IDENTIFIERS)] += 1
        exposed += doc.get("patient_id") in dictionary
    smallest = min(groups.values()) if groups else 0

    yield dg.AssetCheckResult(check_name="view_fields_are_allow_listed", passed=not wrong_fields,
                              metadata={"unexpected_or_missing_fields": dict(wrong_fields)})
    yield dg.AssetCheckResult(check_name="no_source_name_in_view", passed=leaks == 0,
                              metadata={"names_checked": len(names), "leaks": leaks})
    yield dg.AssetCheckResult(check_name="ages_and_dates_are_banded", passed=sum(not_banded.values()) == 0,
                              metadata={"not_banded": dict(not_banded)})
    yield dg.AssetCheckResult(check_name="k_anonymity_at_least_11", passed=not groups or smallest >= privacy.K_ANONYMITY,
                              metadata={"k_reached": smallest, "groups": len(groups)})
    yield dg.AssetCheckResult(check_name="patient_ids_are_keyed_hashes", passed=exposed == 0,
                              metadata={"dictionary_size": len(dictionary), "exposed_ids": exposed})
