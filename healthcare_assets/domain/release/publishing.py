"""Writing a planned release operation; the copy in keyed id order, which says nothing of patients or files."""

from __future__ import annotations

import contextlib
import hashlib
from collections import Counter, defaultdict
from collections.abc import Iterable

from pymongo import DeleteOne, IndexModel, UpdateOne
from pymongo.collection import Collection

from healthcare_assets.domain import privacy
from healthcare_assets.domain.collection_definitions import COPY_INDEXES, RELEASE_STAY_INDEXES
from healthcare_assets.domain.release import bookkeeping
from healthcare_assets.domain.release.bookkeeping import ID_BATCH, WRITE_BATCH, chunks
from healthcare_assets.domain.release.lease import Lease, utc_now
from healthcare_assets.domain.release.planning import released_fields
from healthcare_assets.domain.release.rebuilding import Rebuilding, earlier_key
from healthcare_assets.plumbing import document_counts, settings
from healthcare_assets.plumbing.idempotent_inserts import insert_keeping_existing
from healthcare_assets.plumbing.sorted_spill import SortedSpill

STAGED = "_next"  # suffix of the collections a rebuild writes before they replace the live ones
STAGED_COPY = f"{privacy.COPY_COLLECTION}{STAGED}"  # in the main database
COPY_BATCH = 5000


class Release(Rebuilding):

    def copy_document(self, candidate: dict, scheme: privacy.Scheme, epoch: str) -> dict:
        return {"_id": privacy.release_id(candidate["_id"], self.key, epoch), **released_fields(candidate, scheme)}

    def _write_copy(self, copy: Collection, documents: Iterable[dict], lease: Lease) -> int:
        """In keyed id order (sorted by the caller), which says nothing of patients or files."""
        written = 0
        for batch in chunks(documents, COPY_BATCH):
            insert_keeping_existing(copy, batch)
            written += len(batch)
            lease.renew()
        return written

    def _spill(self) -> SortedSpill:
        """A rebuild's copy, one folder per database (the lease makes one rebuild at a time per database)."""
        name = hashlib.sha256(self.db.name.encode()).hexdigest()[:16]
        return SortedSpill(settings.data_dir() / "release_spill" / name)

    def apply(self, plan: bookkeeping.Plan, lease: Lease, run_id: str | None = None) -> int:
        entry_doc = {**plan.as_ledger(), "state": "applying", "run_id": run_id, "started_at": utc_now()}
        self.ledger.replace_one({"_id": plan.op}, entry_doc, upsert=True)
        state = self.state()
        changed = self._publish(plan, state, lease) if plan.kind == "publish" else self._erase(plan, state)
        for batch in chunks(plan.groups, WRITE_BATCH):
            self._set_groups(self.groups, batch)
        if plan.groups or plan.kind == "publish":
            self.schemes.update_one({"_id": "current"}, {"$set": plan.totals})
        self.ledger.update_one({"_id": plan.op}, {
            "$set": {"state": "applied", "applied_at": utc_now(), "published": changed},
            # an applied plan keeps its counts only: erased patients' keyed ids are kept in the erasure list alone
            "$unset": {"groups": "", "erased_stays": "", "erased_patients": ""}})
        return changed

    def _publish(self, plan: bookkeeping.Plan, state: dict, lease: Lease) -> int:
        increments = plan.increments()
        if not increments:
            return 0
        generation, scheme, epoch = state["generation"], state["scheme"], state["epoch"]
        documents, records = [], []
        by_id = {e["s"]: (c.key, e) for c in increments for e in c.increment}
        for candidate in self.candidates(list(by_id)):
            key, e = by_id[candidate["_id"]]
            documents.append(self.copy_document(candidate, scheme, epoch))
            records.append(UpdateOne({"_id": e["s"]}, {
                "$set": {"g": key, "inc": f"{plan.op[:16]}:{key}", "live": True, "v": e["v"], "p": e["p"]},
                "$addToSet": {"seen": generation}}, upsert=True))
        for batch in chunks(records, WRITE_BATCH):
            self.stays.bulk_write(batch, ordered=False)
        return self._write_copy(self.copy, sorted(documents, key=lambda d: d["_id"]), lease)

    def _erase(self, plan: bookkeeping.Plan, state: dict | None) -> int:
        removed = 0
        if state:
            leaving = [s for c in plan.groups for s in c.leaving]
            for batch in chunks(leaving, ID_BATCH):
                ids = [privacy.release_id(s, self.key, state["epoch"]) for s in batch]
                removed += self.copy.delete_many({"_id": {"$in": ids}}).deleted_count
            erased = set(plan.erased_stays)
            records = [DeleteOne({"_id": s}) if s in erased else UpdateOne({"_id": s}, {"$set": {"live": False}})
                       for s in dict.fromkeys([*leaving, *plan.erased_stays])]
            for batch in chunks(records, WRITE_BATCH):
                self.stays.bulk_write(batch, ordered=False)
        erased_docs = sum(self.source.delete_many({"patient_id": {"$in": batch}}).deleted_count
                          for batch in chunks(plan.erased_patients, ID_BATCH))
        document_counts.adjust(self.source, -erased_docs)
        return removed

    @staticmethod
    def _set_groups(groups: Collection, changes: list[bookkeeping.GroupChange]) -> None:
        requests = [UpdateOne({"_id": c.key}, {"$set": c.as_group()}, upsert=True) for c in changes]
        if requests:
            groups.bulk_write(requests, ordered=False)

    def refresh_view(self, scheme: privacy.Scheme) -> None:
        # drop and create: the embedded server accepts collMod on a view but keeps the old pipeline
        self.db.drop_collection(privacy.VIEW_NAME)
        self.db.create_collection(privacy.VIEW_NAME, viewOn=self.source.name,
                                  pipeline=privacy.view_pipeline(scheme, bookkeeping.STAYS))

    def finish_interrupted(self, lease: Lease) -> list[str]:
        done = []
        for entry_doc in self.ledger.find({"state": "applying"}):
            self.apply(bookkeeping.Plan.from_ledger(entry_doc), lease, entry_doc.get("run_id"))
            done.append(entry_doc["_id"])
        return done

    def erase(self, patient_ids: list[str], owner: str) -> tuple[bookkeeping.Plan, int]:
        with self.lease(owner) as lease:
            self.finish_interrupted(lease)
            self.drop_interrupted_rebuild()
            plan = self.plan_erasure(patient_ids)
            return plan, self.apply(plan, lease, owner)

    def drop_interrupted_rebuild(self) -> None:
        """What a rebuild interrupted before its swap staged (under the lease, no rebuild is running): its next run
        starts over, and an erasure leaves no copy of the erased behind."""
        for collection in (self.db[STAGED_COPY], *self._staged_bookkeeping(self.state() or {}).values()):
            collection.drop()
        self._spill().close()

    def _staged_bookkeeping(self, state: dict) -> dict[str, Collection]:
        """Where a rebuild writes the bookkeeping: beside the live one, but in place before the first scheme (nothing
        reads it then, and the lease keeps erasures out)."""
        first = "generation" not in state
        return {name: self.db[name if first else name + STAGED] for name in (bookkeeping.GROUPS, bookkeeping.STAYS)}

    def refuse_rebuild(self, rebuilt: bookkeeping.Rebuilt) -> None:
        self.schemes.update_one({"_id": "current"}, {"$set": {"attempted_on": rebuilt.evaluation.stays,
                                                               "refused": rebuilt.refused}})
        self.ledger.update_one({"_id": bookkeeping.REBUILD}, {"$set": {"state": "refused", "refused": rebuilt.refused}})

    def _stage_stays(self, rebuilt: bookkeeping.Rebuilt, staged_stays: Collection, spill: SortedSpill, state: dict,
                     history: list[privacy.Scheme], lease: Lease) -> tuple[dict, dict]:
        """Every stay's record into the staged bookkeeping and, if released, its copy document into the spill."""
        labels: dict[str, dict] = {}
        scheme, generation, epoch = rebuilt.scheme, rebuilt.generation, rebuilt.epoch
        groups = defaultdict(lambda: {"released": 0, "withdrawn": 0, "pending": [],
                                      "sensitive": {f: Counter() for f in privacy.SENSITIVE}})
        for batch in self.settled(rebuilt.loading, len(history), rebuilt.files):
            records, documents = [], []
            for candidate, seen, _ in batch:
                doc = released_fields(candidate, scheme)
                key = privacy.group_key(group := privacy.group_of(doc))
                labels[key], figures = group, groups[key]
                record = {"_id": candidate["_id"], "g": key, "v": {f: doc[f] for f in privacy.SENSITIVE},
                          "p": candidate[privacy.PERSON]}
                if key in rebuilt.released and (not seen or (earlier_key(candidate, seen, history), key)
                                                not in rebuilt.withheld_cells):
                    documents.append(self.copy_document(candidate, scheme, epoch))
                    records.append({**record, "inc": f"{generation}:{key}", "live": True, "seen": [*seen, generation]})
                    figures["released"] += 1
                    for f in privacy.SENSITIVE:
                        figures["sensitive"][f][record["v"][f]] += 1
                elif seen:  # released before, not now: never under this scheme
                    records.append({**record, "inc": None, "live": False, "seen": seen})
                    figures["withdrawn"] += 1
                else:
                    figures["pending"].append(bookkeeping.entry(candidate, state.get("drops", 0)))
            insert_keeping_existing(staged_stays, records)
            spill.add(documents)
            lease.renew()
            self._progress("writing the bookkeeping", sum(g["released"] for g in groups.values()))
        return groups, labels

    def apply_rebuild(self, rebuilt: bookkeeping.Rebuilt, lease: Lease) -> int:
        state, history = self.state() or {}, self.history()
        staged = self._staged_bookkeeping(state)
        # the copy is staged in the main database, which analysts cannot read: part of a release is no release
        staged_copy = self.db[STAGED_COPY]
        for collection in (staged_copy, *staged.values()):
            collection.drop()
        with contextlib.closing(self._spill()) as spill:
            groups, labels = self._stage_stays(rebuilt, staged[bookkeeping.STAYS], spill, state, history, lease)
            published = self._write_copy(staged_copy, spill.in_order(), lease)
        # indexes after the inserts: built once, not maintained insert by insert
        staged_copy.create_indexes([IndexModel(keys) for keys in COPY_INDEXES])
        staged[bookkeeping.STAYS].create_indexes([IndexModel(keys) for keys in RELEASE_STAY_INDEXES])
        changes = [bookkeeping.GroupChange(key, labels[key], {}, g["released"], g["withdrawn"],
                                           {f: dict(c) for f, c in g["sensitive"].items()}, g["pending"])
                   for key, g in groups.items()]
        for batch in chunks(changes, WRITE_BATCH):
            self._set_groups(staged[bookkeeping.GROUPS], batch)
        if published:  # the copy first: a crash before the rest is redone whole, with a new epoch
            # across databases: MongoDB copies the documents, as the embedded server does for any rename
            self.db.client.admin.command("renameCollection", staged_copy.full_name, to=self.copy.full_name,
                                         dropTarget=True)
        else:
            self.copy.drop()
        for name, collection in staged.items():
            if collection.name != name:
                collection.rename(name, dropTarget=True)
        totals = bookkeeping.totals_after({"drops": state.get("drops", 0), "waits": state.get("waits", {})}, changes)
        self.schemes.replace_one({"_id": "current"}, {
            "scheme": rebuilt.scheme, "generation": rebuilt.generation, "epoch": rebuilt.epoch,
            "history": [*history, rebuilt.scheme],
            "chosen_on": totals["counted"], "attempted_on": totals["counted"], **totals,
            "withheld_cells": len(rebuilt.withheld_cells), "evaluation": rebuilt.evaluation.summary(),
            "chosen_at": utc_now()}, upsert=True)
        for sha in rebuilt.files:
            self.ledger.update_one({"_id": sha}, {"$set": {"kind": "publish", "state": "applied",
                                                            "applied_at": utc_now(), "rebuilt": True}}, upsert=True)
        self.refresh_view(rebuilt.scheme)
        self.ledger.update_one({"_id": bookkeeping.REBUILD},
                               {"$set": {"state": "done", "applied_at": utc_now(), "published": published}})
        return published

