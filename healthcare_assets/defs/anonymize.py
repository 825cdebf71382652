"""anonymized_view: its checks judge what a run releases before anything is written to the analysts' copy."""

import dataclasses
import json
from dataclasses import dataclass

import dagster as dg

from healthcare_assets.defs import verdicts
from healthcare_assets.defs.previews import check_specs
from healthcare_assets.defs.release_checks import CHECKS, Outcome, check_results, k_and_share
from healthcare_assets.domain import audit, encryption, generalization, privacy
from healthcare_assets.domain.master_keys import MasterKeys
from healthcare_assets.domain.release.bookkeeping import Plan, Rebuilt
from healthcare_assets.domain.release.findings import (
    Findings,
    ReleaseReport,
    increments,
    release_report,
    weakest,
)
from healthcare_assets.domain.release.lease import Lease
from healthcare_assets.domain.release.planning import released_fields
from healthcare_assets.domain.release.publishing import Release
from healthcare_assets.domain.release_audit import bookkeeping_audit, copy_findings
from healthcare_assets.plumbing import settings
from healthcare_assets.plumbing.keys import KeysResource
from healthcare_assets.plumbing.mongo import MongoResource

RELEASE_POOL = "analysts_release"  # one publishing step at a time per deployment (see dagster.yaml)


def judge_plan(findings: Findings, plan: Plan, release: Release, page: verdicts.RunPage) -> list[dg.AssetCheckResult]:
    """Every increment the plan releases; earlier stays it releases must be in the source as remembered."""
    scheme = release.state()["scheme"]
    remembered = {e["s"]: e for c in plan.increments() for e in c.increment}
    earlier = plan.earlier()
    found = 0
    for candidate in release.candidates(earlier):
        findings.add_candidate(candidate, released_fields(candidate, scheme), scheme)
        e = remembered[candidate["_id"]]
        found += e["p"] == candidate[privacy.PERSON] and all(e["v"][f] == candidate[f] for f in privacy.SENSITIVE)
    k, share = weakest(increments(plan))
    k_check, share_check = k_and_share(k, share, len(plan.increments()), {
        "groups_touched": len(plan.groups), "stays_pending": plan.totals.get("pending", 0),
        "earlier_stays_released": len(earlier), "earlier_stays_not_as_remembered": len(earlier) - found})
    return check_results(findings, Outcome(k_check.passed and found == len(earlier), k_check.metadata), share_check, page)


def judge_rebuild(findings: Findings, rebuilt: Rebuilt, page: verdicts.RunPage) -> list[dg.AssetCheckResult]:
    k, share = weakest(rebuilt.released.values())
    return check_results(findings, *k_and_share(k, share, len(rebuilt.released), {
        "cells_withheld_from_join": len(rebuilt.withheld_cells)}), page)


@dataclass
class Operation:
    """What a run publishes, judged: its file's plan, or (plan None) the whole release rebuilt."""

    plan: Plan | None
    rebuilt: Rebuilt | None
    results: list[dg.AssetCheckResult]
    before: list[dict]  # the uniqueness table of the stays judged, as released before this policy

    @property
    def released(self) -> list[tuple[dict, int]]:
        if self.plan is None:
            return [(privacy.group_from_key(key), tally.stays) for key, tally in self.rebuilt.released.items()]
        return [(c.group, c.released) for c in self.plan.groups if c.released]


def judged_operation(context: dg.AssetExecutionContext, release: Release, keys: MasterKeys, lease: Lease,
                     loaded: dict) -> Operation:
    """This file's plan, or the whole release rebuilt (no scheme yet, or the plan calls for a new one)."""
    sha, rows = loaded["source_sha256"], loaded["rows_loaded"]
    names = encryption.cipher(release.source, keys)
    page = verdicts.RunPage(context.run_id)  # the run's quality page, written by quality_report

    def file_operation() -> Operation:
        findings = Findings(names.decrypt)
        plan = release.plan_file(sha, rows, observe=findings.add_candidate)
        return Operation(plan, None, judge_plan(findings, plan, release, page), findings.uniqueness_before())

    if not release.needs_rebuild():
        operation = file_operation()
        if not release.needs_replan(operation.plan):
            return operation
        totals = operation.plan.totals
        context.log.warning(f"choosing the generalization again ({totals['counted']:,} stays, "
                            f"{totals['held_back'] + totals['withdrawn']:,} would be held back): rebuilding the release")
    if release.read_first_from(sha, rows, loaded["cleaned_path"]):
        context.log.info("the first release: read from this run's staged file, which the collection holds alone")
    findings = Findings(names.decrypt, keep_exact=False)  # the rebuild measures "before" on its own table
    rebuilt = release.plan_rebuild(lease, observe=findings.add_candidate)
    if rebuilt.refused:
        release.refuse_rebuild(rebuilt)
        context.log.warning(f"the new scheme is not published: {rebuilt.refused}; this file goes out under the "
                            f"scheme in force")
        return file_operation()
    return Operation(None, rebuilt, judge_rebuild(findings, rebuilt, page), rebuilt.uniqueness_before)


def publish(release: Release, lease: Lease, operation: Operation, run_id: str) -> int:
    if operation.plan is None:
        return release.apply_rebuild(operation.rebuilt, lease)
    return 0 if operation.plan.already_applied else release.apply(operation.plan, lease, run_id)


@dg.asset(group_name="privacy", kinds={"mongodb"}, pool=RELEASE_POOL, check_specs=check_specs("anonymized_view", CHECKS))
def anonymized_view(context: dg.AssetExecutionContext, mongo_hospitalizations: dict, mongo: MongoResource,
                    keys: KeysResource):
    """`patients_anonymized_view` in the hospitalization database (the client's requirement) and
    its materialized copy `healthcare_analytics.patients_anonymized` (what ANALYST_READONLY reads).
    Quasi-identifiers generalized; groups, and every change to them, of at least 11 patients with no
    sensitive value in over half of the stays; no linkable id. Releases this file's increments that
    qualify, after its checks pass."""
    source, installation = mongo.hospitalizations(), MasterKeys.of(keys)
    release = Release(source, installation.pseudonym_key(), log=context.log.info)
    sha = mongo_hospitalizations["source_sha256"]
    with release.lease(context.run_id) as lease:
        for op in release.finish_interrupted(lease):
            context.log.warning(f"finished the interrupted release operation {op[:16]}")
        operation = judged_operation(context, release, installation, lease, mongo_hospitalizations)
        yield from operation.results
        if failed := [r.check_name for r in operation.results if not r.passed]:
            raise dg.Failure(description=f"nothing published: {', '.join(failed)} failed", allow_retries=False)
        published = publish(release, lease, operation, context.run_id)
    report = release_report(release, operation.before, operation.released)
    path = settings.write_owner_only(settings.reports_dir() / "release_report.json", json.dumps(
        {"source_sha256": sha, "run_id": context.run_id, **dataclasses.asdict(report)}, indent=2))
    rebuilt = operation.plan is None
    audit.record(source.database, "publish_anonymized", release.copy.full_name, published, source_sha256=sha,
                 rebuilt=rebuilt)
    context.log.info(f"{published:,} stays published" + (" (release rebuilt)" if rebuilt else "")
                     + f"; {report.stays_pending:,} pending in released groups, {report.stays_held_back:,} held back")
    yield dg.MaterializeResult(metadata=_metadata(release, operation, report, published, sha, str(path)))


def _metadata(release: Release, operation: Operation, report: ReleaseReport, published: int, sha: str,
              path: str) -> dict:
    plan = operation.plan
    return {
        "dagster/row_count": report.stays_released,  # what the copy holds
        "view": f"{release.db.name}.{privacy.VIEW_NAME}", "analyst_copy": release.copy.full_name,
        "source_sha256": sha, "rebuilt": plan is None, "already_published": bool(plan and plan.already_applied),
        "read_staged_file": release.staged_file is not None,
        "stays_added": plan.stays if plan else operation.rebuilt.evaluation.stays, "stays_published": published,
        **{k: dg.MetadataValue.json(v) if isinstance(v, list | dict) else v
           for k, v in dataclasses.asdict(report).items() if not k.startswith("uniqueness")},
        "uniqueness": dg.MetadataValue.md(generalization.uniqueness_markdown(report.uniqueness_before,
                                                                             report.uniqueness_released)),
        **verdicts.links("report", path), "fields": dg.MetadataValue.json(list(privacy.VIEW_FIELDS)),
    }

AUDIT_CHECKS = {
    "released_copy_is_anonymous": "the whole analysts' copy: allow-listed, generalized fields, no source name, "
                                  "k (pycanon) and the largest share of a sensitive value (pandas) on the full "
                                  "quasi-identifier set",
    "release_bookkeeping_matches_source": "group sizes kept by the releases equal a recount of the source, every "
                                          "released group holds at least 11 patients, and the copy holds exactly "
                                          "the stays released",
}


@dg.multi_asset_check(specs=check_specs(anonymized_view, AUDIT_CHECKS, blocking=False))
def analysts_release_audit(mongo: MongoResource, keys: KeysResource):
    """Whole-collection audit (costs the collection; scheduled, never part of a drop's run)."""
    release = Release(mongo.hospitalizations(), b"")
    state = release.state()
    scheme = state["scheme"] if state else privacy.FINEST
    found, (k, l_div, share) = copy_findings(release, MasterKeys.of(keys), scheme)
    failures = [r.check_name for r in check_results(found, *k_and_share(k, share, len(found.groups), {}))
                if not r.passed]
    yield dg.AssetCheckResult(check_name="released_copy_is_anonymous", passed=not failures,
                              metadata={"failed": dg.MetadataValue.json(failures), "released": sum(found.groups.values()),
                                        "groups": len(found.groups), "k_pycanon_stays": k, "l_pycanon": l_div,
                                        "largest_share": round(share, 4), "leaks": found.leaks})
    passed, metadata = bookkeeping_audit(release, scheme)
    yield dg.AssetCheckResult(check_name="release_bookkeeping_matches_source", passed=passed, metadata=metadata)
