"""The analysts' release, kept in step with the collection one operation at a time.

Rebuilding the analysts' copy on every drop costs the whole collection, and two rebuilds at once
corrupt it. Instead each change to what may be released is an operation, applied one at a time
under a lease: publishing one loaded file, or erasing patients. Its cost follows the stays it
touches, not the collection.

Bookkeeping lives in the main database, which analysts cannot read:

- `release_scheme`: the generalization levels in force (privacy's policy, chosen for the data by
  healthcare_assets.domain.generalization), with the stays counted and held back.
- `release_groups`: one document per quasi-identifier group under that scheme: the stays counted
  in it, how often each sensitive value occurs, whether it is published (at least k stays, at least
  l values of each sensitive field) and, while it is held back, which stays (source _ids), so that
  the group can be published whole the moment it qualifies. The view reads `published` from here.
- `release_ledger`: one document per operation (a file's is its SHA-256): its plan while it is
  being applied, `applied` after. A stay is counted once, by the first applied operation among
  the files it came in (`metadata.sources`).
- `release_lock`: the lease. Dagster's pool serializes the publishing step between runs of one
  deployment; the lease also holds for the CLI, tests and several deployments on one database.

An operation is planned from its own stays (nothing written), judged by the caller's checks, then
written to the ledger and applied: documents into the copy (ids derived from the record key, so a
repeat is a no-op), each touched group set to its planned size, values and members, the ledger
entry marked applied. Whoever takes the lease next first finishes an operation that was
interrupted, from its ledger plan: every step is idempotent.

The scheme is chosen again, and the release rebuilt whole, when there is none yet (the first
release), when the stays counted have doubled since it was chosen (a finer scheme may now keep
k and l), or when an operation would hold back more than privacy.MAX_SUPPRESSED. The rebuild costs
the collection, but doubling makes it rare: its cost per stay, amortized, stays constant. It is
judged like any operation before any of it is written where analysts can read.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import Self

from pymongo import UpdateOne
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import BulkWriteError, DuplicateKeyError

from healthcare_assets.domain import generalization, privacy
from healthcare_assets.domain.access import databases
from healthcare_assets.domain.privacy import Scheme
from healthcare_assets.plumbing import document_counts, scans

GROUPS = "release_groups"
LEDGER = "release_ledger"
LOCK = "release_lock"
SCHEME = "release_scheme"
REBUILD = "rebuild"  # the ledger entry of a whole-collection rebuild
STAGED = "_next"  # suffix of the collections a rebuild writes before they replace the live ones
MEMBERS_KEPT = 10_000  # a held-back group with more stays is looked up in the source when published
REPLAN_GROWTH = 2
LEASE_S = 600  # renewed between batches; a crashed holder's lease runs out after this
WAIT_S = 3600
# $in lists stay short: the embedded server's $in is quadratic (1,000 group keys: 2 s in one
# list, 0.3 s in lists of 100, against 30,000 groups)
ID_BATCH = 100
WRITE_BATCH = 1000  # group updates per bulk write
K = privacy.K_ANONYMITY
L = privacy.L_DIVERSITY
DUPLICATE_KEY = 11000  # the server's error code for a document whose _id is already there


class ReleaseLockError(RuntimeError):
    pass


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def insert_keeping_existing(collection: Collection, documents: list[dict]) -> int:
    """Insert the documents; one whose _id is already there (an interrupted operation redone, or
    written by someone else meanwhile) is kept as it is. Returns how many were given."""
    if not documents:
        return 0
    try:
        collection.insert_many(documents, ordered=False)
    except BulkWriteError as exc:
        if any(e["code"] != DUPLICATE_KEY for e in exc.details["writeErrors"]):
            raise
    return len(documents)


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


@contextmanager
def loading(db: Database, sha: str) -> Iterator[None]:
    """Marks a file as being loaded while it is, in the ledger: a rebuild meanwhile leaves its
    stays to its own run (it would see only some of them). A load that fails stays marked, until
    the file is loaded again."""
    ledger = db[LEDGER]
    ledger.update_one({"_id": sha}, {"$setOnInsert": {"kind": "publish", "state": "loading"}}, upsert=True)
    yield
    ledger.update_one({"_id": sha, "state": "loading"}, {"$set": {"state": "loaded"}})


Sensitive = dict[str, dict[str, int]]  # sensitive field -> value -> stays


def is_published(records: int, sensitive: Sensitive) -> bool:
    """At least k stays, and at least l values of every sensitive field."""
    return records >= K and all(diversity(sensitive, f) >= L for f in privacy.SENSITIVE)


def diversity(sensitive: Sensitive, field: str) -> int:
    return sum(1 for n in sensitive.get(field, {}).values() if n > 0)


def _add(sensitive: Sensitive, counts: Sensitive, sign: int = 1) -> Sensitive:
    out = {f: dict(values) for f, values in sensitive.items()}
    for name, values in counts.items():
        for value, n in values.items():
            out.setdefault(name, {})[value] = max(out.get(name, {}).get(value, 0) + sign * n, 0)
    return out


@dataclass
class GroupChange:
    key: str
    group: dict
    before: int
    after: int
    sensitive: Sensitive  # after the operation
    published_before: bool
    published_after: bool
    members: list[str] | None  # the counted stays while held back (None: published, or too many to keep)


@dataclass
class Plan:
    op: str  # a file's SHA-256, or erase:<uuid>
    kind: str  # publish | erase
    documents: int = 0  # the file's documents (sizes its range pass)
    groups: list[GroupChange] = field(default_factory=list)
    earlier_members: list[str] = field(default_factory=list)  # counted before, published now
    unpublished_members: list[str] = field(default_factory=list)  # their group no longer qualifies
    erased_patients: list[str] = field(default_factory=list)
    erased_stays: list[str] = field(default_factory=list)  # their source _ids
    totals: dict = field(default_factory=dict)  # the release's TOTALS after the operation
    already_applied: bool = False

    @property
    def stays(self) -> int:
        return sum(abs(c.after - c.before) for c in self.groups)

    def published_groups(self) -> set[str]:
        return {c.key for c in self.groups if c.published_after}

    def as_ledger(self) -> dict:
        """The plan as its ledger entry stores it (dataclasses.asdict deep-copies every group's
        counts and members: a tenth of a small drop's release)."""
        return {**{f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("groups", "already_applied")},
                "groups": [vars(change) for change in self.groups]}

    @classmethod
    def from_ledger(cls, entry: dict) -> Plan:
        stored = {k: entry[k] for k in ("op", "kind", "documents", "earlier_members", "unpublished_members",
                                        "erased_patients", "erased_stays", "totals")}
        return cls(**stored, groups=[GroupChange(**g) for g in entry["groups"]])


@dataclass
class Rebuilt:
    """A whole release planned from every stay present: the scheme chosen and every group."""

    evaluation: generalization.Evaluation
    uniqueness_before: list[dict]
    groups: dict[str, GroupChange]
    files: set[str]  # whose stays it counts: marked applied with it
    loading: set[str]  # files being loaded as it began: their runs publish them

    @property
    def scheme(self) -> Scheme:
        return self.evaluation.scheme


def _projection() -> list[dict]:
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
    """What a candidate from _projection() releases under a scheme: the view's fields."""
    return {**privacy.generalize(candidate["_values"], scheme), **{f: candidate[f] for f in privacy.SENSITIVE}}


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


Observer = Callable[[dict, dict, Scheme], None]  # (candidate, what it releases, the scheme)


class _Tally:
    """Stays added to (or taken from) groups during planning; with `members`, which stays (a
    rebuild counts every stay and collects only the held-back groups' members as it writes)."""

    def __init__(self, members: bool = True):
        self.keep_members = members
        self.records: Counter = Counter()
        self.sensitive: dict[str, Sensitive] = {}
        self.groups: dict[str, dict] = {}
        self.members: dict[str, list[str]] = {}

    def add(self, doc: dict, stay: str) -> None:
        group = privacy.group_of(doc)
        key = privacy.group_key(group)
        self.records[key] += 1
        self.groups[key] = group
        counts = self.sensitive.setdefault(key, {})
        for f in privacy.SENSITIVE:
            counts.setdefault(f, {})[doc[f]] = counts.get(f, {}).get(doc[f], 0) + 1
        if self.keep_members:
            _remember(self.members.setdefault(key, []), stay)


class Release:
    """The release of one hospitalization collection: its bookkeeping, its copy and its view."""

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

    # ---- planning: reads only -------------------------------------------------------------

    def _file_candidates(self, sha: str, documents: int) -> Iterator[list[dict]]:
        return scans.batches(self.source, _projection(), scans.file_ranges(sha, documents))

    def _current(self, keys: list[str]) -> dict[str, dict]:
        return {d["_id"]: d for batch in _chunks(keys, ID_BATCH) for d in self.groups.find({"_id": {"$in": batch}})}

    def plan_file(self, sha: str, documents: int, observe: Observer = lambda *_: None) -> Plan:
        """What publishing one loaded file changes. `observe` sees every stay this file counts
        (the stays the operation may release), so checks judge them before anything is written."""
        plan = Plan(op=sha, kind="publish", documents=documents)
        if self.ledger.find_one({"_id": sha, "state": "applied"}, {"_id": 1}):
            plan.already_applied = True
            return plan
        state = self.state()
        scheme, applied, tally = state["scheme"], AppliedSources(self.ledger), _Tally()
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
            after, sensitive = before + added, _add(now.get("sensitive", {}), tally.sensitive[key])
            published_after = is_published(after, sensitive)
            members = None
            if published_after and not published_before and before:
                plan.earlier_members += self._members(now, tally.groups[key], scheme, applied)
            elif not published_after:
                earlier = now.get("members") if before else []  # None: too many to keep
                members = None if earlier is None else earlier + tally.members[key]
            plan.groups.append(GroupChange(key, tally.groups[key], before, after, sensitive, published_before,
                                           published_after, _kept(members)))
        plan.totals = _totals(state, plan.groups)
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
        """Should the scheme be chosen again instead of applying this plan (see the module's doc)?"""
        counted = plan.totals.get("counted", 0)
        return (not plan.already_applied and counted > 0
                and (plan.totals["suppressed"] / counted > privacy.MAX_SUPPRESSED
                     or counted >= REPLAN_GROWTH * self.state()["chosen_on"]))

    def plan_erasure(self, patient_ids: list[str]) -> Plan:
        """What erasing these patients changes: their counted stays leave their groups, and a group
        that no longer qualifies leaves the copy whole."""
        plan = Plan(op=f"erase:{uuid.uuid4().hex}", kind="erase", erased_patients=sorted(patient_ids))
        state = self.state()
        applied, tally = AppliedSources(self.ledger), _Tally()
        for batch in _chunks(plan.erased_patients, ID_BATCH):
            for candidate in self.source.aggregate([{"$match": {"patient_id": {"$in": batch}}}, *_projection()]):
                plan.erased_stays.append(candidate["_id"])
                if state and applied.any(candidate["_sources"]):
                    tally.add(released_fields(candidate, state["scheme"]), candidate["_id"])
        if not state:
            return plan  # nothing released yet: only the source changes
        current, erased = self._current(list(tally.records)), set(plan.erased_stays)
        for key, gone in tally.records.items():
            now = current.get(key, {})
            before, published_before = now.get("records", 0), now.get("published", False)
            after, sensitive = max(before - gone, 0), _add(now.get("sensitive", {}), tally.sensitive[key], -1)
            published_after = is_published(after, sensitive)
            members = None
            if not published_after:
                members = self._members(now, tally.groups[key], state["scheme"], applied, erased)
                if published_before:
                    plan.unpublished_members += members
            plan.groups.append(GroupChange(key, tally.groups[key], before, after, sensitive, published_before,
                                           published_after, _kept(members)))
        plan.totals = _totals(state, plan.groups)
        return plan

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

    def earlier_candidates(self, plan: Plan) -> Iterator[list[dict]]:
        """Stays counted by earlier operations whose group the plan publishes whole."""
        for ids in _chunks(plan.earlier_members, ID_BATCH):
            yield list(self.source.aggregate([{"$match": {"_id": {"$in": ids}}}, *_projection()]))

    # ---- applying: idempotent, from the ledger's plan ------------------------------------------

    def apply(self, plan: Plan, lease: Lease, run_id: str | None = None) -> int:
        """Write the plan; returns the copy's documents published (or, for an erasure, removed)."""
        entry = {**plan.as_ledger(), "state": "applying", "run_id": run_id, "started_at": _now()}
        self.ledger.replace_one({"_id": plan.op}, entry, upsert=True)
        published = self._publish(plan, lease) if plan.kind == "publish" else self._erase(plan)
        for batch in _chunks(plan.groups, WRITE_BATCH):
            self._set_groups(self.groups, batch)
        if plan.groups:
            self.schemes.update_one({"_id": "current"}, {"$set": plan.totals})
        self.ledger.update_one({"_id": plan.op}, {
            "$set": {"state": "applied", "applied_at": _now(), "published": published},
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
        for batch in _chunks(plan.erased_stays + plan.unpublished_members, ID_BATCH):
            removed += self.copy.delete_many({"_id": {"$in": [privacy.release_id(r, self.key) for r in batch]}}).deleted_count
        erased = sum(self.source.delete_many({"patient_id": {"$in": batch}}).deleted_count
                     for batch in _chunks(plan.erased_patients, ID_BATCH))
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

    # ---- the whole collection at once: the first release, a new scheme, a repair -----------------

    def needs_rebuild(self) -> bool:
        """No scheme yet (a first release, or a copy built whole by an earlier version), or a
        rebuild was interrupted."""
        return self.state() is None or bool(self.ledger.find_one({"_id": REBUILD, "state": "rebuilding"}, {"_id": 1}))

    def plan_rebuild(self, lease: Lease, observe: Observer = lambda *_: None) -> Rebuilt:
        """Choose the scheme for every stay present, then plan every group under it; `observe`
        sees every stay. Nothing is written but the ledger's note that a rebuild is under way."""
        self.ledger.replace_one({"_id": REBUILD}, {"kind": "rebuild", "state": "rebuilding", "started_at": _now()},
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
        tally = _Tally(members=False)
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
        for batch in scans.batches(self.source, _projection()):
            yield [c for c in batch if not rebuilt.loading.issuperset(c["_sources"])]

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
                    change.members = _kept(_remember(change.members, candidate["_id"]))
            published += insert_keeping_existing(staged_copy, documents)
            lease.renew()
            self._progress("writing the analysts' copy", published)
        for batch in _chunks(list(rebuilt.groups.values()), WRITE_BATCH):
            self._set_groups(staged_groups, batch)
        staged_groups.rename(GROUPS, dropTarget=True)
        if published:
            staged_copy.rename(privacy.COPY_COLLECTION, dropTarget=True)
        else:
            self.copy.drop()
        totals = _totals({}, list(rebuilt.groups.values()))
        self.schemes.replace_one({"_id": "current"}, {
            "scheme": scheme, "chosen_on": totals["counted"], **totals,
            "evaluation": rebuilt.evaluation.summary(), "chosen_at": _now()}, upsert=True)
        for sha in rebuilt.files:
            self.ledger.update_one({"_id": sha}, {"$set": {"kind": "publish", "state": "applied",
                                                            "applied_at": _now(), "rebuilt": True}}, upsert=True)
        self.refresh_view(scheme)
        self.ledger.update_one({"_id": REBUILD}, {"$set": {"state": "done", "applied_at": _now(), "published": published}})
        return published


TOTALS = ("counted", "suppressed", "groups_released", "groups_held_back")


def _totals(state: dict, changes: list[GroupChange]) -> dict:
    """The release's totals after these group changes: stays counted and held back, groups
    released and held back (kept as they change: counting them would read every group)."""
    totals = {name: state.get(name, 0) for name in TOTALS}
    for c in changes:
        totals["counted"] += c.after - c.before
        totals["suppressed"] += (0 if c.published_after else c.after) - (0 if c.published_before else c.before)
        totals["groups_released"] += int(c.published_after) - int(c.published_before)
        totals["groups_held_back"] += (int(not c.published_after and c.after > 0)
                                       - int(not c.published_before and c.before > 0))
    return totals


def _remember(members: list[str], stay: str) -> list[str]:
    """Add a stay to a group's members, up to one more than are kept (so that _kept sees too many)."""
    if len(members) <= MEMBERS_KEPT:
        members.append(stay)
    return members


def _kept(members: list[str] | None) -> list[str] | None:
    return members if members is not None and len(members) <= MEMBERS_KEPT else None
