"""Planning an operation on the analysts' release: what it would change, read and judged before
anything is written.

An operation is planned from its own stays: publishing one loaded file (plan_file), erasing
patients (plan_erasure), or rebuilding the whole release under a scheme chosen again
(plan_rebuild). `observe` sees every stay a plan may release, so the caller's checks judge them.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

from pymongo.collection import Collection

from healthcare_assets.domain import generalization, privacy
from healthcare_assets.domain.deployment_databases import databases
from healthcare_assets.domain.privacy import Scheme
from healthcare_assets.domain.release.bookkeeping import (
    GROUPS,
    ID_BATCH,
    LEDGER,
    REBUILD,
    SCHEME,
    AppliedSources,
    GroupChange,
    Plan,
    Rebuilt,
    Tally,
    add_counts,
    chunks,
    is_published,
    kept,
    totals_after,
)
from healthcare_assets.domain.release.lease import WAIT_S, Lease, utc_now
from healthcare_assets.plumbing import scans

REPLAN_GROWTH = 2


def projection() -> list[dict]:
    """A source document's exact quasi-identifiers and released sensitive fields, plus what the
    checks and the bookkeeping need (none of it written to the copy)."""
    return [{"$project": {
        **privacy.exact_values(), "_id": 1, "_sources": "$metadata.sources",
        "_names": ["$personal_info.name", "$administrative_info.doctor", "$administrative_info.hospital"],
    }}]


def exact(candidate: dict) -> dict:
    """A candidate's exact quasi-identifiers and sensitive fields (generalization.Encoder's input)."""
    return {**candidate["_values"], **{f: candidate[f] for f in privacy.SENSITIVE}}


def released_fields(candidate: dict, scheme: Scheme) -> dict:
    """What a candidate from projection() releases under a scheme: the view's fields."""
    return {**privacy.generalize(candidate["_values"], scheme), **{f: candidate[f] for f in privacy.SENSITIVE}}


Observer = Callable[[dict, dict, Scheme], None]  # (candidate, what it releases, the scheme)


class ReleasePlanner:
    """The release of one hospitalization collection as its plans see it: its bookkeeping, its copy
    and its view, read only (but for the ledger's note that a rebuild is under way)."""

    def __init__(self, source: Collection, key: bytes, log: Callable[[str], None] = lambda _: None):
        self.source, self.key, self.log = source, key, log  # log: progress of whole-collection passes
        self._reported: dict[str, int] = {}
        self.db = source.database
        self.groups, self.ledger, self.schemes = self.db[GROUPS], self.db[LEDGER], self.db[SCHEME]
        self.copy = self.db.client[databases(self.db.name)["analytics"]][privacy.COPY_COLLECTION]

    def lease(self, owner: str, wait_s: float = WAIT_S) -> Lease:
        return Lease(self.db, owner, wait_s)

    def state(self) -> dict | None:
        """The scheme in force and the release's totals (None before the first release)."""
        return self.schemes.find_one({"_id": "current"})

    def _file_candidates(self, sha: str, documents: int) -> Iterator[list[dict]]:
        return scans.batches(self.source, projection(), scans.file_ranges(sha, documents))

    def _current(self, keys: list[str]) -> dict[str, dict]:
        return {d["_id"]: d for batch in chunks(keys, ID_BATCH) for d in self.groups.find({"_id": {"$in": batch}})}

    def plan_file(self, sha: str, documents: int, observe: Observer = lambda *_: None) -> Plan:
        """What publishing one loaded file changes. `observe` sees every stay this file counts
        (the stays the operation may release), so checks judge them before anything is written."""
        plan = Plan(op=sha, kind="publish", documents=documents)
        if self.ledger.find_one({"_id": sha, "state": "applied"}, {"_id": 1}):
            plan.already_applied = True
            return plan
        state = self.state()
        scheme, applied, tally = state["scheme"], AppliedSources(self.ledger), Tally()
        for batch in self._file_candidates(sha, documents):
            for candidate in batch:
                if applied.any(s for s in candidate["_sources"] if s != sha):
                    continue  # counted by an earlier file it also came in
                doc = released_fields(candidate, scheme)
                observe(candidate, doc, scheme)
                tally.add(doc, candidate["_id"])
        current = self._current(list(tally.records))
        for key, added in tally.records.items():
            now = current.get(key, {})
            before, published_before = now.get("records", 0), now.get("published", False)
            after, sensitive = before + added, add_counts(now.get("sensitive", {}), tally.sensitive[key])
            published_after = is_published(after, sensitive)
            members = None
            if published_after and not published_before and before:
                plan.earlier_members += self._members(now, tally.groups[key], scheme, applied)
            elif not published_after:
                earlier = now.get("members") if before else []  # None: too many to keep
                members = None if earlier is None else earlier + tally.members[key]
            plan.groups.append(GroupChange(key, tally.groups[key], before, after, sensitive, published_before,
                                           published_after, kept(members)))
        plan.totals = totals_after(state, plan.groups)
        return plan

    def _members(self, group_doc: dict, group: dict, scheme: Scheme, applied: AppliedSources,
                 excluded: set[str] = frozenset()) -> list[str]:
        """A held-back group's counted stays: kept in its document, or found in the source when
        there were too many to keep."""
        if group_doc.get("members") is not None:
            return [m for m in group_doc["members"] if m not in excluded]
        return self._counted_members(group, scheme, excluded, applied)

    def _counted_members(self, group: dict, scheme: Scheme, excluded: set[str], applied: AppliedSources) -> list[str]:
        """A group's counted stays, found in the source (only when a published group stops
        qualifying, or a huge held-back one starts: rare)."""
        pipeline = [{"$project": {**privacy.release_projection(scheme), "_sources": "$metadata.sources"}},
                    {"$match": group}]
        return [d["_id"] for d in scans.aggregate(self.source, pipeline)
                if d["_id"] not in excluded and applied.any(d["_sources"])]

    def needs_replan(self, plan: Plan) -> bool:
        """Should the scheme be chosen again instead of applying this plan (see
        healthcare_assets.domain.release)?"""
        counted = plan.totals.get("counted", 0)
        return (not plan.already_applied and counted > 0
                and (plan.totals["suppressed"] / counted > privacy.MAX_SUPPRESSED
                     or counted >= REPLAN_GROWTH * self.state()["chosen_on"]))

    def plan_erasure(self, patient_ids: list[str]) -> Plan:
        """What erasing these patients changes: their counted stays leave their groups, and a group
        that no longer qualifies leaves the copy whole."""
        plan = Plan(op=f"erase:{uuid.uuid4().hex}", kind="erase", erased_patients=sorted(patient_ids))
        state = self.state()
        applied, tally = AppliedSources(self.ledger), Tally()
        for batch in chunks(plan.erased_patients, ID_BATCH):
            for candidate in self.source.aggregate([{"$match": {"patient_id": {"$in": batch}}}, *projection()]):
                plan.erased_stays.append(candidate["_id"])
                if state and applied.any(candidate["_sources"]):
                    tally.add(released_fields(candidate, state["scheme"]), candidate["_id"])
        if not state:
            return plan  # nothing released yet: only the source changes
        current, erased = self._current(list(tally.records)), set(plan.erased_stays)
        for key, gone in tally.records.items():
            now = current.get(key, {})
            before, published_before = now.get("records", 0), now.get("published", False)
            after, sensitive = max(before - gone, 0), add_counts(now.get("sensitive", {}), tally.sensitive[key], -1)
            published_after = is_published(after, sensitive)
            members = None
            if not published_after:
                members = self._members(now, tally.groups[key], state["scheme"], applied, erased)
                if published_before:
                    plan.unpublished_members += members
            plan.groups.append(GroupChange(key, tally.groups[key], before, after, sensitive, published_before,
                                           published_after, kept(members)))
        plan.totals = totals_after(state, plan.groups)
        return plan

    def earlier_candidates(self, plan: Plan) -> Iterator[list[dict]]:
        """Stays counted by earlier operations whose group the plan publishes whole."""
        for ids in chunks(plan.earlier_members, ID_BATCH):
            yield list(self.source.aggregate([{"$match": {"_id": {"$in": ids}}}, *projection()]))

    def needs_rebuild(self) -> bool:
        """No scheme yet (a first release, or a copy built whole by an earlier version), or a
        rebuild was interrupted."""
        return self.state() is None or bool(self.ledger.find_one({"_id": REBUILD, "state": "rebuilding"}, {"_id": 1}))

    def plan_rebuild(self, lease: Lease, observe: Observer = lambda *_: None) -> Rebuilt:
        """Choose the scheme for every stay present, then plan every group under it; `observe`
        sees every stay. Nothing is written but the ledger's note that a rebuild is under way."""
        self.ledger.replace_one({"_id": REBUILD}, {"kind": "rebuild", "state": "rebuilding", "started_at": utc_now()},
                                upsert=True)
        encoder = generalization.Encoder()
        for batch in scans.batches(self.source, [{"$project": {"_id": 0, **privacy.exact_values()}}]):
            for values in batch:
                encoder.add({**values.pop("_values"), **values})
            lease.renew()
            self._progress("choosing the generalization", encoder.rows)
        table = encoder.table()
        del encoder
        evaluation, _ = generalization.choose(table)
        rebuilt = Rebuilt(evaluation, table.uniqueness_before(), {}, set(),
                          {d["_id"] for d in self.ledger.find({"state": "loading"}, {"_id": 1})})
        del table
        tally = Tally(members=False)
        for batch in self._settled_candidates(rebuilt):
            for candidate in batch:
                doc = released_fields(candidate, rebuilt.scheme)
                observe(candidate, doc, rebuilt.scheme)
                tally.add(doc, candidate["_id"])
                rebuilt.files.update(set(candidate["_sources"]) - rebuilt.loading)
            lease.renew()
            self._progress("judging every stay", sum(tally.records.values()))
        for key, records in tally.records.items():
            published = is_published(records, tally.sensitive[key])
            rebuilt.groups[key] = GroupChange(key, tally.groups[key], 0, records, tally.sensitive[key], False,
                                              published, None if published else [])
        return rebuilt

    def _progress(self, stage: str, done: int, every: int = 100_000) -> None:
        """A line each time a whole-collection pass passes another `every` stays."""
        if done // every > self._reported.get(stage, 0):
            self._reported[stage] = done // every
            self.log(f"release rebuild, {stage}: {done:,} stays")

    def _settled_candidates(self, rebuilt: Rebuilt) -> Iterator[list[dict]]:
        """Every stay present but those of files still being loaded (as the rebuild began)."""
        for batch in scans.batches(self.source, projection()):
            yield [c for c in batch if not rebuilt.loading.issuperset(c["_sources"])]

