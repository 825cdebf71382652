"""Writing a planned release operation: documents into the analysts' copy, groups and ledger."""

from __future__ import annotations

from collections.abc import Iterator

from pymongo import UpdateOne
from pymongo.collection import Collection

from healthcare_assets.domain import privacy
from healthcare_assets.domain.privacy import Scheme
from healthcare_assets.domain.release.bookkeeping import (
    GROUPS,
    ID_BATCH,
    REBUILD,
    WRITE_BATCH,
    AppliedSources,
    GroupChange,
    Plan,
    Rebuilt,
    chunks,
    kept,
    remember,
    totals_after,
)
from healthcare_assets.domain.release.lease import Lease, utc_now
from healthcare_assets.domain.release.planning import ReleasePlanner, released_fields
from healthcare_assets.plumbing import document_counts, scans
from healthcare_assets.plumbing.idempotent_inserts import insert_keeping_existing

# importers of this module find these here: the load marks its file (loading) and recognizes a
# repeated insert (DUPLICATE_KEY); runs and tests name the bookkeeping's collections

STAGED = "_next"  # suffix of the collections a rebuild writes before they replace the live ones


class Release(ReleasePlanner):
    """The release of one hospitalization collection: its plans (ReleasePlanner) written to its
    bookkeeping, its copy and its view."""

    def _documents_to_publish(self, plan: Plan, scheme: Scheme) -> Iterator[list[dict]]:
        """The copy's documents for the stays the plan releases, batch by batch."""
        if plan.kind == "publish":
            published, applied = plan.published_groups(), AppliedSources(self.ledger)
            for batch in self._file_candidates(plan.op, plan.documents):
                yield [self._copy_document(c, doc) for c in batch
                       if privacy.group_key(doc := released_fields(c, scheme)) in published
                       and not applied.any(s for s in c["_sources"] if s != plan.op)]
        for batch in self.earlier_candidates(plan):
            yield [self._copy_document(c, released_fields(c, scheme)) for c in batch]

    # ---- applying: idempotent, from the ledger's plan ------------------------------------------

    def apply(self, plan: Plan, lease: Lease, run_id: str | None = None) -> int:
        """Write the plan; returns the copy's documents published (or, for an erasure, removed)."""
        entry = {**plan.as_ledger(), "state": "applying", "run_id": run_id, "started_at": utc_now()}
        self.ledger.replace_one({"_id": plan.op}, entry, upsert=True)
        published = self._publish(plan, lease) if plan.kind == "publish" else self._erase(plan)
        for batch in chunks(plan.groups, WRITE_BATCH):
            self._set_groups(self.groups, batch)
        if plan.groups:
            self.schemes.update_one({"_id": "current"}, {"$set": plan.totals})
        self.ledger.update_one({"_id": plan.op}, {
            "$set": {"state": "applied", "applied_at": utc_now(), "published": published},
            # an applied plan keeps its counts only: the erased patients' keyed ids are kept in the
            # erasure list alone, where erasure records them on purpose
            "$unset": {"groups": "", "earlier_members": "", "unpublished_members": "", "erased_stays": "",
                       "erased_patients": ""}})
        return published

    def _publish(self, plan: Plan, lease: Lease) -> int:
        published = 0
        for documents in self._documents_to_publish(plan, self.state()["scheme"]):
            published += insert_keeping_existing(self.copy, documents)
            lease.renew()
        return published

    def _copy_document(self, candidate: dict, released: dict) -> dict:
        """The analysts' copy's document for a candidate, given what it releases."""
        return {"_id": privacy.release_id(candidate["_id"], self.key), **released}

    def _erase(self, plan: Plan) -> int:
        """The patients' stays leave the source and the copy, and so do the other stays of groups
        that no longer qualify; returns the copy's documents removed."""
        removed = 0
        for batch in chunks(plan.erased_stays + plan.unpublished_members, ID_BATCH):
            removed += self.copy.delete_many({"_id": {"$in": [privacy.release_id(r, self.key) for r in batch]}}).deleted_count
        erased = sum(self.source.delete_many({"patient_id": {"$in": batch}}).deleted_count
                     for batch in chunks(plan.erased_patients, ID_BATCH))
        document_counts.adjust(self.source, -erased)
        return removed

    @staticmethod
    def _set_groups(groups: Collection, changes: list[GroupChange]) -> None:
        """Each group to its planned size, values and members: one round trip for the batch."""
        requests = []
        for change in changes:
            update = {"group": change.group, "records": change.after, "sensitive": change.sensitive,
                      "published": change.published_after}
            requests.append(UpdateOne({"_id": change.key},
                                      {"$set": {**update, "members": change.members}} if change.members is not None
                                      else {"$set": update, "$unset": {"members": ""}}, upsert=True))
        if requests:
            groups.bulk_write(requests, ordered=False)

    def refresh_view(self, scheme: Scheme) -> None:
        # drop and create: the embedded server accepts collMod on a view but keeps the old pipeline
        self.db.drop_collection(privacy.VIEW_NAME)
        self.db.create_collection(privacy.VIEW_NAME, viewOn=self.source.name,
                                  pipeline=privacy.view_pipeline(scheme, GROUPS))

    def finish_interrupted(self, lease: Lease) -> list[str]:
        """Apply, from their ledger plans, operations a crashed holder left half done."""
        done = []
        for entry in self.ledger.find({"state": "applying"}):
            self.apply(Plan.from_ledger(entry), lease, entry.get("run_id"))
            done.append(entry["_id"])
        return done

    def erase(self, patient_ids: list[str], owner: str) -> tuple[Plan, int]:
        """Erase patients from the source and the release, as one operation; returns the plan and
        the copy's documents removed."""
        with self.lease(owner) as lease:
            self.finish_interrupted(lease)
            plan = self.plan_erasure(patient_ids)
            return plan, self.apply(plan, lease, owner)

    def apply_rebuild(self, rebuilt: Rebuilt, lease: Lease) -> int:
        """Write a judged rebuild: the new copy and groups beside the live ones, then in their place."""
        staged_copy, staged_groups = (c.database[c.name + STAGED] for c in (self.copy, self.groups))
        staged_copy.drop()
        staged_groups.drop()
        staged_copy.create_index(scans.COPY_INDEX)
        published, scheme = 0, rebuilt.scheme
        held_back = {k: change for k, change in rebuilt.groups.items() if not change.published_after}
        for batch in self._settled_candidates(rebuilt):
            documents = []
            for candidate in batch:
                doc = released_fields(candidate, scheme)
                if (change := held_back.get(privacy.group_key(doc))) is None:
                    documents.append(self._copy_document(candidate, doc))
                elif change.members is not None:
                    change.members = kept(remember(change.members, candidate["_id"]))
            published += insert_keeping_existing(staged_copy, documents)
            lease.renew()
            self._progress("writing the analysts' copy", published)
        for batch in chunks(list(rebuilt.groups.values()), WRITE_BATCH):
            self._set_groups(staged_groups, batch)
        staged_groups.rename(GROUPS, dropTarget=True)
        if published:
            staged_copy.rename(privacy.COPY_COLLECTION, dropTarget=True)
        else:
            self.copy.drop()
        totals = totals_after({}, list(rebuilt.groups.values()))
        self.schemes.replace_one({"_id": "current"}, {
            "scheme": scheme, "chosen_on": totals["counted"], **totals,
            "evaluation": rebuilt.evaluation.summary(), "chosen_at": utc_now()}, upsert=True)
        for sha in rebuilt.files:
            self.ledger.update_one({"_id": sha}, {"$set": {"kind": "publish", "state": "applied",
                                                            "applied_at": utc_now(), "rebuilt": True}}, upsert=True)
        self.refresh_view(scheme)
        self.ledger.update_one({"_id": REBUILD}, {"$set": {"state": "done", "applied_at": utc_now(), "published": published}})
        return published

