"""anonymized_view: the client's de-identified view, and the copy analysts actually read.

Each run publishes its own file's stays (healthcare_assets.release): the privacy checks judge
exactly what the run is about to release, inside the step and before anything is written, so a
failing check leaves the analysts' copy untouched. The whole-collection audit of the copy is a
separate, scheduled job that never gates a drop.
"""

import hashlib
import re
from collections import Counter
from collections.abc import Iterable

import dagster as dg
from pymongo.collection import Collection
from pymongo.database import Database

from healthcare_assets import audit, privacy, scans
from healthcare_assets.defs.metadata import check_specs
from healthcare_assets.release import AppliedSources, Plan, Release, released_fields
from healthcare_assets.resources.mongo import MongoResource

RELEASE_POOL = "analysts_release"  # one publishing step at a time per deployment (see dagster.yaml)
CHECKS = {
    "view_fields_are_allow_listed": "every released document has exactly the allow-listed fields",
    "no_source_name_in_view": "no patient, doctor or hospital name from the source appears in what is released",
    "ages_and_dates_are_banded": "ages and amounts are bands, dates are years",
    "k_anonymity_at_least_11": "every quasi-identifier group in the copy has at least 11 stays after this release",
    "patient_ids_are_keyed_hashes": "no patient_id is the unkeyed SHA-256 or MD5 of its patient's name "
                                    "or identity (dictionary attack)",
}
KEYED_ID = re.compile(r"[0-9a-f]{64}")  # an HMAC-SHA256 hex digest


def _plain_hashes(person: dict) -> set[str]:
    """What a dictionary attack tries: unkeyed SHA-256 and MD5 of the name and the identity."""
    texts = {person["name"], person["name"].casefold(),
             privacy.patient_identity(person["name"], person["gender"], person["blood_type"])}
    return {h(t.encode()).hexdigest() for t in texts for h in (hashlib.sha256, hashlib.md5)}


def _texts(doc: dict) -> Iterable[str]:
    """A released document's text values, keyed ids set aside."""
    for name, value in doc.items():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str) and not (name == "patient_id" and KEYED_ID.fullmatch(item)):
                yield item.casefold()


class Findings:
    """What the five privacy checks count, fed one released document and one source person at a time
    (memory does not grow with the documents: texts are a few bands and categories)."""

    def __init__(self):
        self.wrong_fields, self.not_banded, self.groups, self.texts = Counter(), Counter(), Counter(), Counter()
        self.names_checked = self.exposed_ids = 0
        self.leaked: set[str] = set()  # source names found among released texts (none, unless broken)

    def add_released(self, doc: dict) -> None:
        for name in set(doc) ^ set(privacy.VIEW_FIELDS):
            self.wrong_fields[name] += 1
        self.texts.update(_texts(doc))
        self.not_banded["age_range"] += doc.get("age_range") not in privacy.AGE_LABELS
        self.not_banded["billing_range"] += doc.get("billing_range") not in privacy.BILLING_LABELS
        for name in ("admission_year", "discharge_year"):
            self.not_banded[name] += not (isinstance(doc.get(name), int) and 1900 <= doc[name] <= 2100)
        self.groups[privacy.group_key(privacy.group_of(doc))] += 1

    def add_person(self, person: dict, staff: list[str], patient_id: str | None, texts: Counter | None = None) -> None:
        """One source stay: are its names among the released texts, is its id a plain hash?"""
        texts = self.texts if texts is None else texts
        for name in (person["name"], *staff):
            self.names_checked += 1
            if texts[name.casefold()]:
                self.leaked.add(name.casefold())
        self.exposed_ids += patient_id in _plain_hashes(person)

    def add_candidate(self, candidate: dict) -> None:
        """A stay about to be released, judged against its own source names."""
        doc = released_fields(candidate)
        self.add_released(doc)
        self.add_person(candidate["_person"], candidate["_staff"], candidate.get("patient_id"), Counter(_texts(doc)))

    @property
    def leaks(self) -> int:
        """Released values that are a source name."""
        return sum(self.texts[name] for name in self.leaked)

    def results(self, k_passed: bool, k_metadata: dict) -> list[dg.AssetCheckResult]:
        not_banded = {k: v for k, v in self.not_banded.items() if v}
        return [
            dg.AssetCheckResult(check_name="view_fields_are_allow_listed", passed=not self.wrong_fields,
                                metadata={"unexpected_or_missing_fields": dict(self.wrong_fields)}),
            dg.AssetCheckResult(check_name="no_source_name_in_view", passed=self.leaks == 0,
                                metadata={"names_checked": self.names_checked, "leaks": self.leaks}),
            dg.AssetCheckResult(check_name="ages_and_dates_are_banded", passed=not not_banded,
                                metadata={"not_banded": not_banded}),
            dg.AssetCheckResult(check_name="k_anonymity_at_least_11", passed=k_passed, metadata=k_metadata),
            dg.AssetCheckResult(check_name="patient_ids_are_keyed_hashes", passed=self.exposed_ids == 0,
                                metadata={"exposed_ids": self.exposed_ids}),
        ]


def judge_plan(findings: Findings, plan: Plan, release: Release) -> list[dg.AssetCheckResult]:
    """The checks on one operation. Groups published whole now (they reached k) bring stays counted
    earlier: those are judged too, and must be exactly as many as the group was counted with."""
    published = [c for c in plan.groups if c.after >= privacy.K_ANONYMITY]
    crossing = {c.key: c.before for c in published if c.before < privacy.K_ANONYMITY}
    earlier: Counter = Counter()
    for batch in release.earlier_candidates(plan):
        for candidate in batch:
            findings.add_candidate(candidate)
            earlier[privacy.group_key(privacy.group_of(candidate))] += 1
    inconsistent = sorted(key for key, before in crossing.items() if earlier[key] != before)
    k_reached = min((c.after for c in published), default=0)
    return findings.results((k_reached >= privacy.K_ANONYMITY or not published) and not inconsistent, {
        "k_reached": k_reached, "groups_touched": len(plan.groups), "groups_published_whole": len(crossing),
        "groups_still_under_k": len(plan.groups) - len(published),
        "groups_with_wrong_bookkeeping": dg.MetadataValue.json(inconsistent[:20])})


@dg.asset(
    group_name="privacy",
    kinds={"mongodb"},
    pool=RELEASE_POOL,
    check_specs=check_specs("anonymized_view", CHECKS),
)
def anonymized_view(context: dg.AssetExecutionContext, mongo_hospitalizations: dict, mongo: MongoResource):
    """`patients_anonymized_view` in the hospitalization database (the client's requirement) and
    its materialized copy `healthcare_analytics.patients_anonymized` (what ANALYST_READONLY can
    read: the embedded server grants per database). Allow-listed fields only, ages and amounts in
    bands, dates as years, keyed patient ids; quasi-identifier groups under k = 11 are held back
    until they reach k. This run publishes its own file's stays, after its checks pass."""
    source = mongo.hospitalizations()
    release = Release(source, privacy.pseudonym_key())
    sha = mongo_hospitalizations["source_sha256"]
    with release.lease(context.run_id) as lease:
        for op in release.finish_interrupted(lease):
            context.log.warning(f"finished the interrupted release operation {op[:16]}")
        if release.needs_rebuild():
            context.log.warning("the analysts' copy predates incremental releases: rebuilding it once")
            release.rebuild(lease)
        findings = Findings()
        plan = release.plan_file(sha, mongo_hospitalizations["rows_loaded"], observe=findings.add_candidate)
        results = judge_plan(findings, plan, release)
        yield from results
        failed = [r.check_name for r in results if not r.passed]
        if failed:
            raise dg.Failure(description=f"nothing published: {', '.join(failed)} failed for this file's stays",
                             allow_retries=False)
        published = 0 if plan.already_applied else release.apply(plan, lease, context.run_id)
    copy = release.copy
    audit.record(source.database, "publish_anonymized", copy.full_name, published, source_sha256=sha,
                 groups_touched=len(plan.groups))
    context.log.info(f"{published:,} stays published; {plan.stays:,} counted; "
                     f"{sum(c.after < privacy.K_ANONYMITY for c in plan.groups)} touched groups still under k")
    yield dg.MaterializeResult(metadata={
        "dagster/row_count": copy.estimated_document_count(),
        "view": f"{source.database.name}.{privacy.VIEW_NAME}",
        "analyst_copy": copy.full_name,
        "k_required": privacy.K_ANONYMITY,
        "source_sha256": sha,
        "already_published": plan.already_applied,
        "stays_counted": plan.stays,
        "stays_published": published,
        "groups_touched": len(plan.groups),
        "groups_suppressed": len(release.small_groups()),
        "fields": dg.MetadataValue.json(list(privacy.VIEW_FIELDS)),
    })


# ---- the whole-collection audit: scheduled, never part of a drop ------------------------------

def view_documents(db: Database):
    """What the view serves, from its stored definition run range by range on its source (a find on
    the view would have the embedded server build the whole view in memory first)."""
    spec = next(db.list_collections(filter={"name": privacy.VIEW_NAME}))["options"]
    return scans.aggregate(db[spec["viewOn"]], spec["pipeline"])


def view_findings(source: Collection, view: Iterable[dict]) -> Findings:
    """The five checks over everything released: one pass over the released documents (collecting
    their few texts), one over the source (each name looked up among them)."""
    findings = Findings()
    for doc in view:
        findings.add_released(doc)
    fields = {"patient_id": 1, "personal_info": 1, "administrative_info.doctor": 1, "administrative_info.hospital": 1}
    for doc in scans.aggregate(source, [{"$project": fields}]):
        admin = doc["administrative_info"]
        findings.add_person(doc["personal_info"], [admin["doctor"], admin["hospital"]], doc.get("patient_id"))
    return findings


def counted_group_sizes(release: Release) -> Counter:
    """Group sizes recounted from the source: the stays of files whose publication is applied."""
    applied, sizes = AppliedSources(release.ledger), Counter()
    pipeline = [{"$project": {**privacy.release_projection(), "metadata.sources": 1}}]
    for doc in scans.aggregate(release.source, pipeline):
        if applied.any(doc["metadata"]["sources"]):
            sizes[privacy.group_key(privacy.group_of(doc))] += 1
    return sizes


AUDIT_CHECKS = {
    "released_copy_is_anonymous": "the whole analysts' copy: allow-listed fields, bands, no source name, "
                                  "keyed ids, every group at least k",
    "release_bookkeeping_matches_source": "group sizes kept by the releases equal a recount of the source, "
                                          "and the copy holds exactly the stays of the groups of at least k",
}


@dg.multi_asset_check(specs=check_specs(anonymized_view, AUDIT_CHECKS, blocking=False))
def analysts_release_audit(mongo: MongoResource):
    """Whole-collection audit (costs the collection; scheduled, never part of a drop's run)."""
    release = Release(mongo.hospitalizations(), b"")
    found = view_findings(release.source, scans.aggregate(release.copy, [{"$project": {"_id": 0}}]))
    k_reached = min(found.groups.values(), default=0)
    failures = [r.check_name for r in found.results(not found.groups or k_reached >= privacy.K_ANONYMITY, {})
                if not r.passed]
    yield dg.AssetCheckResult(check_name="released_copy_is_anonymous", passed=not failures,
                              metadata={"failed": dg.MetadataValue.json(failures), "released": sum(found.groups.values()),
                                        "groups": len(found.groups), "k_reached": k_reached, "leaks": found.leaks})
    recount = counted_group_sizes(release)
    kept = {d["_id"]: d["records"] for d in release.groups.find({}, {"records": 1}) if d["records"]}
    differing = sorted(set(recount.items()) ^ set(kept.items()))
    expected_copy = sum(n for n in kept.values() if n >= privacy.K_ANONYMITY)
    copy_count = release.copy.count_documents({})
    yield dg.AssetCheckResult(check_name="release_bookkeeping_matches_source",
                              passed=not differing and copy_count == expected_copy,
                              metadata={"groups_differing": len({k for k, _ in differing}), "copy_documents": copy_count,
                                        "expected_copy_documents": expected_copy})
