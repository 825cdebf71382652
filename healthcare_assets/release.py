"""The analysts' release, kept in step with the collection one operation at a time.

Rebuilding the analysts' copy on every drop costs the whole collection, and two rebuilds at once
corrupt it. Instead each change to what may be released is an operation, applied one at a time
under a lease: publishing one loaded file, or erasing patients. Its cost follows the stays it
touches, not the collection.

Bookkeeping lives in the main database, which analysts cannot read:

- `release_groups`: one document per quasi-identifier group: the stays counted in it and, while
  it is under k, which ones (source _ids, at most k - 1), so that the group can be published whole
  the moment it reaches k.
- `release_ledger`: one document per operation (a file's is its SHA-256): its plan while it is
  being applied, `applied` after. A stay is counted once, by the first applied operation among
  the files it came in (`metadata.sources`).
- `release_lock`: the lease. Dagster's pool serializes the publishing step between runs of one
  deployment; the lease also holds for the CLI, tests and several deployments on one database.

An operation is planned from its own stays (nothing written), judged by the caller's checks, then
written to the ledger and applied: documents into the copy (ids derived from the record key, so a
repeat is a no-op), each touched group set to its planned size and members, the view re-created
with the new list of small groups, the ledger entry marked applied. Whoever takes the lease next
first finishes an operation that was interrupted, from its ledger plan: every step is idempotent.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Self

from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import BulkWriteError, DuplicateKeyError

from healthcare_assets import privacy, scans
from healthcare_assets.access import databases

GROUPS = "release_groups"
LEDGER = "release_ledger"
LOCK = "release_lock"
REBUILD = "rebuild"  # the ledger entry of a whole-collection rebuild
LEASE_S = 600  # renewed between batches; a crashed holder's lease runs out after this
WAIT_S = 3600
ID_BATCH = 1000  # $in lists stay short: the embedded server's $in is quadratic
K = privacy.K_ANONYMITY


class ReleaseLockError(RuntimeError):
    pass


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class Lease:
    """An exclusive, expiring lease on the release, held by one run (or command) at a time."""

    def __init__(self, db: Database, owner: str, wait_s: float = WAIT_S):
        self.locks, self.owner, self.wait_s = db[LOCK], owner, wait_s

    def __enter__(self) -> Self:
        deadline = time.monotonic() + self.wait_s
        while True:
            now = _now()
            try:
                self.locks.find_one_and_update(
                    {"_id": "release", "$or": [{"expires_at": {"$lt": now}}, {"owner": self.owner}]},
                    {"$set": {"owner": self.owner, "expires_at": now + dt.timedelta(seconds=LEASE_S)}},
                    upsert=True)
                return self
            except DuplicateKeyError:  # held by another owner, whose lease has not run out
                if time.monotonic() > deadline:
                    holder = self.locks.find_one({"_id": "release"}) or {}
                    raise ReleaseLockError(f"the analysts' release is still held by {holder.get('owner')} "
                                           f"after {self.wait_s:.0f} s") from None
                time.sleep(0.5)

    def renew(self) -> None:
        expires = _now() + dt.timedelta(seconds=LEASE_S)
        if not self.locks.update_one({"_id": "release", "owner": self.owner},
                                     {"$set": {"expires_at": expires}}).matched_count:
            raise ReleaseLockError(f"{self.owner} lost the analysts' release lease (held past {LEASE_S} s)")

    def __exit__(self, *exc) -> None:
        self.locks.delete_one({"_id": "release", "owner": self.owner})


@dataclass
class GroupChange:
    key: str
    group: dict
    before: int
    after: int
    members: list[str] | None  # the group's counted stays after the operation, while under k


@dataclass
class Plan:
    op: str  # a file's SHA-256, or erase:<uuid>
    kind: str  # publish | erase
    documents: int = 0  # the file's documents (sizes its range pass)
    groups: list[GroupChange] = field(default_factory=list)
    earlier_members: list[str] = field(default_factory=list)  # counted before, published now
    unpublished_members: list[str] = field(default_factory=list)  # their group fell under k
    erased_patients: list[str] = field(default_factory=list)
    erased_stays: list[str] = field(default_factory=list)  # their source _ids
    already_applied: bool = False

    @property
    def stays(self) -> int:
        return sum(abs(c.after - c.before) for c in self.groups)

    def published_groups(self) -> set[str]:
        return {c.key for c in self.groups if c.after >= K}

    @classmethod
    def from_ledger(cls, entry: dict) -> Plan:
        fields = {k: entry[k] for k in ("op", "kind", "documents", "earlier_members", "unpublished_members",
                                        "erased_patients", "erased_stays")}
        return cls(**fields, groups=[GroupChange(**g) for g in entry["groups"]])


def _projection() -> list[dict]:
    """What a source document releases, plus what the checks and the bookkeeping need (dropped
    before anything is written to the copy)."""
    return [{"$project": {
        **privacy.release_projection(), "_id": 1, "_sources": "$metadata.sources",
        "_person": {"name": "$personal_info.name", "gender": "$personal_info.gender",
                    "blood_type": "$personal_info.blood_type"},
        "_staff": ["$administrative_info.doctor", "$administrative_info.hospital"],
    }}]


def released_fields(candidate: dict) -> dict:
    """What a candidate from _projection() releases: the view's fields."""
    return {f: candidate[f] for f in privacy.VIEW_FIELDS if f in candidate}


def released(candidate: dict, key: bytes) -> dict:
    """The analysts' copy's document for a candidate."""
    return {"_id": privacy.release_id(candidate["_id"], key), **released_fields(candidate)}


class AppliedSources:
    """Which files' operations are applied, looked up once per file."""

    def __init__(self, ledger: Collection):
        self.ledger, self.known = ledger, {}

    def any(self, shas: Iterable[str]) -> bool:
        shas = set(shas)
        unknown = [s for s in shas if s not in self.known]
        if unknown:
            applied = {d["_id"] for d in self.ledger.find({"_id": {"$in": unknown}, "state": "applied"}, {"_id": 1})}
            self.known.update({s: s in applied for s in unknown})
        return any(self.known[s] for s in shas)


class Release:
    """The release of one hospitalization collection: its bookkeeping, its copy and its view."""

    def __init__(self, source: Collection, key: bytes):
        self.source, self.key = source, key
        self.db = source.database
        self.groups, self.ledger = self.db[GROUPS], self.db[LEDGER]
        self.copy = self.db.client[databases(self.db.name)["analytics"]][privacy.COPY_COLLECTION]

    def lease(self, owner: str, wait_s: float = WAIT_S) -> Lease:
        return Lease(self.db, owner, wait_s)

    # ---- planning: reads only -------------------------------------------------------------

    def _file_candidates(self, sha: str, documents: int) -> Iterator[list[dict]]:
        return scans.batches(self.source, _projection(), scans.file_ranges(sha, documents))

    def _current(self, keys: list[str]) -> dict[str, dict]:
        return {d["_id"]: d for batch in _chunks(keys, ID_BATCH) for d in self.groups.find({"_id": {"$in": batch}})}

    def plan_file(self, sha: str, documents: int, observe: Callable[[dict], None] = lambda _: None) -> Plan:
        """What publishing one loaded file changes. `observe` sees every stay this file counts
        (the stays the operation may release), so checks judge them before anything is written."""
        plan = Plan(op=sha, kind="publish", documents=documents)
        if self.ledger.find_one({"_id": sha, "state": "applied"}, {"_id": 1}):
            plan.already_applied = True
            return plan
        applied = AppliedSources(self.ledger)
        deltas: Counter = Counter()
        groups: dict[str, dict] = {}
        members: dict[str, list[str]] = {}
        for batch in self._file_candidates(sha, documents):
            for candidate in batch:
                if applied.any(s for s in candidate["_sources"] if s != sha):
                    continue  # counted by an earlier file it also came in
                observe(candidate)
                group = privacy.group_of(candidate)
                key = privacy.group_key(group)
                deltas[key] += 1
                groups[key] = group
                if deltas[key] < K:
                    members.setdefault(key, []).append(candidate["_id"])
        current = self._current(list(deltas))
        for key, added in deltas.items():
            before = current.get(key, {}).get("records", 0)
            earlier = current.get(key, {}).get("members") or []
            after = before + added
            plan.groups.append(GroupChange(key, groups[key], before, after,
                                           earlier + members.get(key, []) if after < K else None))
            if before < K <= after:
                plan.earlier_members += earlier
        return plan

    def plan_erasure(self, patient_ids: list[str]) -> Plan:
        """What erasing these patients changes: their counted stays leave their groups, and a group
        that falls under k leaves the copy whole."""
        plan = Plan(op=f"erase:{uuid.uuid4().hex}", kind="erase", erased_patients=sorted(patient_ids))
        applied = AppliedSources(self.ledger)
        removed: Counter = Counter()
        groups: dict[str, dict] = {}
        for batch in _chunks(plan.erased_patients, ID_BATCH):
            for candidate in self.source.aggregate([{"$match": {"patient_id": {"$in": batch}}}, *_projection()]):
                plan.erased_stays.append(candidate["_id"])
                if applied.any(candidate["_sources"]):
                    key = privacy.group_key(group := privacy.group_of(candidate))
                    removed[key] += 1
                    groups[key] = group
        current, erased_ids = self._current(list(removed)), set(plan.erased_stays)
        for key, gone in removed.items():
            before = current.get(key, {}).get("records", 0)
            after = max(before - gone, 0)
            members = None
            if after < K:
                members = ([m for m in current.get(key, {}).get("members") or [] if m not in erased_ids] if before < K
                           else self._counted_members(groups[key], erased_ids, applied))
                if before >= K:
                    plan.unpublished_members += members
            plan.groups.append(GroupChange(key, groups[key], before, after, members))
        return plan

    def _counted_members(self, group: dict, excluded: set[str], applied: AppliedSources) -> list[str]:
        """A group's counted stays, found in the source (only when a group falls under k: rare)."""
        pipeline = [{"$match": privacy.source_filter(group)}, {"$project": {"_id": 1, "metadata.sources": 1}}]
        return [d["_id"] for d in scans.aggregate(self.source, pipeline)
                if d["_id"] not in excluded and applied.any(d["metadata"]["sources"])]

    def candidates_to_publish(self, plan: Plan) -> Iterator[list[dict]]:
        """The stays the plan releases, batch by batch, as _projection() candidates."""
        if plan.kind == "publish":
            published, applied = plan.published_groups(), AppliedSources(self.ledger)
            for batch in self._file_candidates(plan.op, plan.documents):
                yield [c for c in batch if privacy.group_key(privacy.group_of(c)) in published
                       and not applied.any(s for s in c["_sources"] if s != plan.op)]
        yield from self.earlier_candidates(plan)

    def earlier_candidates(self, plan: Plan) -> Iterator[list[dict]]:
        """Stays counted by earlier operations whose group the plan publishes whole."""
        for ids in _chunks(plan.earlier_members, ID_BATCH):
            yield list(self.source.aggregate([{"$match": {"_id": {"$in": ids}}}, *_projection()]))

    # ---- applying: idempotent, from the ledger's plan ------------------------------------------

    def apply(self, plan: Plan, lease: Lease, run_id: str | None = None) -> int:
        """Write the plan; returns the copy's documents published (or, for an erasure, removed)."""
        entry = {**asdict(plan), "state": "applying", "run_id": run_id, "started_at": _now()}
        entry.pop("already_applied")
        self.ledger.replace_one({"_id": plan.op}, entry, upsert=True)
        published = self._publish(plan, lease) if plan.kind == "publish" else self._erase(plan)
        for batch in _chunks(plan.groups, ID_BATCH):
            self._set_groups(batch)
        self.refresh_view()
        self.ledger.update_one({"_id": plan.op}, {
            "$set": {"state": "applied", "applied_at": _now(), "published": published},
            "$unset": {"groups": "", "earlier_members": "", "unpublished_members": "", "erased_stays": ""}})
        return published

    def _publish(self, plan: Plan, lease: Lease) -> int:
        published = 0
        for batch in self.candidates_to_publish(plan):
            published += self._insert([released(c, self.key) for c in batch])
            lease.renew()
        return published

    def _insert(self, documents: list[dict]) -> int:
        """Insert into the copy; a document already there (an interrupted operation redone) is kept."""
        if not documents:
            return 0
        try:
            self.copy.insert_many(documents, ordered=False)
        except BulkWriteError as exc:
            if any(e["code"] != 11000 for e in exc.details["writeErrors"]):
                raise
        return len(documents)

    def _erase(self, plan: Plan) -> int:
        """The patients' stays leave the source and the copy, and so do the other stays of groups
        that fell under k; returns the copy's documents removed."""
        removed = 0
        for batch in _chunks(plan.erased_stays + plan.unpublished_members, ID_BATCH):
            removed += self.copy.delete_many({"_id": {"$in": [privacy.release_id(r, self.key) for r in batch]}}).deleted_count
        for batch in _chunks(plan.erased_patients, ID_BATCH):
            self.source.delete_many({"patient_id": {"$in": batch}})
        return removed

    def _set_groups(self, changes: list[GroupChange]) -> None:
        for change in changes:
            update = {"group": change.group, "records": change.after}
            self.groups.update_one({"_id": change.key},
                                   {"$set": {**update, "members": change.members}} if change.members is not None
                                   else {"$set": update, "$unset": {"members": ""}}, upsert=True)

    def small_groups(self) -> list[dict]:
        return [d["group"] for d in self.groups.find({"records": {"$gt": 0, "$lt": K}}, {"group": 1}).sort("_id", 1)]

    def refresh_view(self) -> None:
        # drop and create: the embedded server accepts collMod on a view but keeps the old pipeline
        self.db.drop_collection(privacy.VIEW_NAME)
        self.db.create_collection(privacy.VIEW_NAME, viewOn=self.source.name,
                                  pipeline=privacy.view_pipeline(self.small_groups()))

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
            if self.needs_rebuild():
                self.rebuild(lease)
            plan = self.plan_erasure(patient_ids)
            return plan, self.apply(plan, lease, owner)

    # ---- the whole collection at once: first use on a collection loaded before -------------------

    def needs_rebuild(self) -> bool:
        """A copy exists but no operation was ever recorded: it was built whole, by an earlier version."""
        if self.ledger.find_one({"_id": REBUILD, "state": "rebuilding"}, {"_id": 1}):
            return True  # one was interrupted
        return self.ledger.estimated_document_count() == 0 and self.copy.estimated_document_count() > 0

    def rebuild(self, lease: Lease) -> int:
        """Count every stay present, publish every group of at least k, mark every file applied.
        Costs the whole collection: for a collection whose copy predates the bookkeeping, or a repair."""
        self.ledger.replace_one({"_id": REBUILD}, {"kind": "rebuild", "state": "rebuilding", "started_at": _now()},
                                upsert=True)
        sizes: Counter = Counter()
        members: dict[str, list[str]] = {}
        groups: dict[str, dict] = {}
        files: set[str] = set()
        for batch in scans.batches(self.source, _projection()):
            for candidate in batch:
                key = privacy.group_key(group := privacy.group_of(candidate))
                sizes[key] += 1
                groups[key] = group
                files.update(candidate["_sources"])
                if sizes[key] < K:
                    members.setdefault(key, []).append(candidate["_id"])
            lease.renew()
        self.copy.drop()
        self.groups.drop()
        published = 0
        for batch in scans.batches(self.source, _projection()):
            published += self._insert([released(c, self.key) for c in batch
                                       if sizes[privacy.group_key(privacy.group_of(c))] >= K])
            lease.renew()
        self._set_groups([GroupChange(k, groups[k], 0, n, members[k] if n < K else None) for k, n in sizes.items()])
        for sha in files:
            self.ledger.update_one({"_id": sha}, {"$set": {"kind": "publish", "state": "applied",
                                                            "applied_at": _now(), "rebuilt": True}}, upsert=True)
        self.refresh_view()
        self.ledger.update_one({"_id": REBUILD}, {"$set": {"state": "done", "applied_at": _now(), "published": published}})
        return published
