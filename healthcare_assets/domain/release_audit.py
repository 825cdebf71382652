"""The whole-collection audit of the analysts' release: everything released, and the release's
bookkeeping, measured again from the source (scheduled, never part of a drop)."""

from collections import Counter
from collections.abc import Iterable

from pymongo.collection import Collection
from pymongo.database import Database

from healthcare_assets.domain import encryption, generalization, privacy
from healthcare_assets.domain.collection_definitions import copy_ranges, stays_ranges
from healthcare_assets.domain.master_keys import MasterKeys
from healthcare_assets.domain.release.bookkeeping import AppliedSources
from healthcare_assets.domain.release.findings import Findings
from healthcare_assets.domain.release.publishing import Release
from healthcare_assets.plumbing import scans


def view_documents(db: Database):
    """Its definition run range by range (a find on the view has the embedded server build it all in memory first)."""
    spec = next(db.list_collections(filter={"name": privacy.VIEW_NAME}))["options"]
    source = db[spec["viewOn"]]
    return scans.aggregate(source, spec["pipeline"], stays_ranges(source))


def view_findings(source: Collection, keys: MasterKeys, view: Iterable[dict], scheme: privacy.Scheme) -> Findings:
    """One pass over the released documents, one over the source (each name decrypted and looked up among them)."""
    findings = Findings(encryption.cipher(source, keys).decrypt)
    for doc in view:
        findings.add_released(doc, scheme)
    fields = {"personal_info.name": 1, "administrative_info.doctor": 1, "administrative_info.hospital": 1}
    for doc in scans.aggregate(source, [{"$project": fields}], stays_ranges(source)):
        admin = doc["administrative_info"]
        findings.add_person([doc["personal_info"]["name"], admin["doctor"], admin["hospital"]])
    return findings


def copy_findings(release: Release, keys: MasterKeys, scheme: privacy.Scheme) -> tuple[Findings, tuple[int, int, float]]:
    """The checks over the analysts' copy, and its k, l and largest share measured independently."""
    frame = generalization.Encoder(privacy.VIEW_FIELDS)

    def released():
        for doc in scans.aggregate(release.copy, [{"$project": {"_id": 0}}], copy_ranges(release.copy)):
            frame.add({f: doc.get(f) for f in privacy.VIEW_FIELDS})
            yield doc

    found = view_findings(release.source, keys, released(), scheme)
    return found, generalization.independent_measures(frame.frame())


def recount(release: Release, scheme: privacy.Scheme) -> Counter:
    """Each group's counted stays, recounted from the source: the stays of files whose publication is applied."""
    applied, groups = AppliedSources(release.ledger), Counter()
    pipeline = [{"$project": {**privacy.release_projection(scheme), "metadata.sources": 1}}]
    for doc in scans.aggregate(release.source, pipeline, stays_ranges(release.source)):
        if applied.any(doc["metadata"]["sources"]):
            groups[privacy.group_key(doc)] += 1
    return groups


def live_stays(release: Release) -> tuple[Counter, dict[str, set]]:
    stays, patients = Counter(), {}
    for doc in release.stays.find({"live": True}, {"g": 1, "p": 1}):
        stays[doc["g"]] += 1
        patients.setdefault(doc["g"], set()).add(doc["p"])
    return stays, patients


def bookkeeping_audit(release: Release, scheme: privacy.Scheme) -> tuple[bool, dict]:
    """Group sizes equal a recount, every released group holds k patients, the copy exactly the stays released."""
    counted = recount(release, scheme)
    kept = Counter({d["_id"]: d["records"] for d in release.groups.find({"records": {"$gt": 0}}, {"records": 1})})
    differing = sum(1 for key in counted.keys() | kept.keys() if counted[key] != kept[key])
    stays, patients = live_stays(release)
    released_kept = Counter({d["_id"]: d["released"] for d in release.groups.find({"released": {"$gt": 0}}, {"released": 1})})
    few_patients = sum(1 for people in patients.values() if len(people) < privacy.K_ANONYMITY)
    copy_count = release.copy.count_documents({})
    passed = not differing and stays == released_kept and not few_patients and copy_count == sum(stays.values())
    return passed, {"groups_differing": differing, "groups_under_11_patients": few_patients,
                    "released_groups_differing": sum(1 for key in stays.keys() | released_kept.keys()
                                                     if stays[key] != released_kept[key]),
                    "copy_documents": copy_count, "expected_copy_documents": sum(stays.values())}
