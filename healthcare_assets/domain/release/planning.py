"""Planning a release operation: read and judged (`observe` sees every stay) before anything is written."""

from __future__ import annotations

import functools
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pymongo.collection import Collection

from healthcare_assets.domain import audit, privacy, schema
from healthcare_assets.domain.collection_definitions import file_ranges
from healthcare_assets.domain.deployment_databases import databases
from healthcare_assets.domain.privacy import Scheme
from healthcare_assets.domain.release import bookkeeping
from healthcare_assets.domain.release.bookkeeping import ID_BATCH, chunks
from healthcare_assets.domain.release.lease import WAIT_S, Lease
from healthcare_assets.plumbing import document_counts, scans, staging

REPLAN_GROWTH = 2
RETRY_GROWTH = 1.1  # too much held back: choose again once the stays counted grew this much since the last try


def replan_reason(totals: dict, last_attempt: int) -> str | None:
    """Why the scheme should be chosen again, given the totals after an operation and when last tried."""
    counted, held = totals.get("counted", 0), totals.get("held_back", 0) + totals.get("withdrawn", 0)
    if counted and counted >= REPLAN_GROWTH * last_attempt:
        return f"the stays counted grew {REPLAN_GROWTH}x since the scheme was last chosen"
    if counted and held / counted > privacy.MAX_SUPPRESSED and counted >= RETRY_GROWTH * last_attempt:
        return f"over {privacy.MAX_SUPPRESSED:.0%} of the stays counted are held back"
    return None


def projection() -> list[dict]:
    """A source document's exact values, plus what the checks and the bookkeeping need (never copied)."""
    return [{"$project": {
        **privacy.exact_values(), "_id": 1, "_sources": "$metadata.sources",
        "_names": ["$personal_info.name", "$administrative_info.doctor", "$administrative_info.hospital"],
    }}]


def compile_projection(expression) -> Callable[[dict], Any]:
    """A $project expression of the release's (a path, a literal, $year, $ifNull, $arrayElemAt) as a function of a
    document that evaluates it as the server does; any other operator is refused."""
    if isinstance(expression, list):
        parts = [compile_projection(e) for e in expression]
        return lambda doc: [part(doc) for part in parts]
    if isinstance(expression, str) and expression.startswith("$"):
        path = expression[1:].split(".")

        def value(doc):
            for name in path:
                doc = doc.get(name) if isinstance(doc, dict) else None
            return doc
        return value
    if not isinstance(expression, dict):
        return lambda doc: expression
    if not next(iter(expression), "").startswith("$"):
        fields = {name: compile_projection(e) for name, e in expression.items()}
        return lambda doc: {name: field(doc) for name, field in fields.items()}
    [(operator, argument)] = expression.items()
    if operator == "$year":
        date = compile_projection(argument)
        return lambda doc: date(doc).year
    if operator == "$ifNull":
        found, otherwise = map(compile_projection, argument)
        return lambda doc: otherwise(doc) if (value := found(doc)) is None else value
    if operator == "$arrayElemAt":
        items, at = compile_projection(argument[0]), argument[1]
        return lambda doc: _element(items(doc), at)
    raise ValueError(f"{operator} is not evaluated here")


def _element(items: list | None, at: int):
    return items[at] if items and -len(items) <= at < len(items) else None


@functools.cache
def candidate_of() -> Callable[[dict], dict]:
    """What projection() makes of a source document, made here: a first release reads its staged file."""
    return compile_projection({name: f"${name}" if e == 1 else e for name, e in projection()[0]["$project"].items()})


def staged_candidates(path: str, sha: str, erased: set[str]) -> Iterator[list[dict]]:
    """The candidates of a staged file's rows, as the load wrote them (names in clear, erased patients left out)."""
    source, candidate = {"sha256": sha}, candidate_of()  # the sha: all a candidate reads of the metadata
    for rows in staging.row_batches(path, scans.RANGE_DOCUMENTS):
        yield [candidate(schema.to_document(row, source, None)) for row in rows if row["patient_id"] not in erased]


def exact(candidate: dict) -> dict:
    return {**candidate["_values"], **{f: candidate[f] for f in (*privacy.SENSITIVE, privacy.PERSON)}}


def released_fields(candidate: dict, scheme: Scheme) -> dict:
    return {**privacy.generalize(candidate["_values"], scheme), **{f: candidate[f] for f in privacy.SENSITIVE}}


Observer = Callable[[dict, dict, Scheme], None]  # (candidate, what it releases, the scheme)


class ReleasePlanner:
    """The release as its plans see it, read only (but for the ledger's note that a rebuild is under way)."""

    def __init__(self, source: Collection, key: bytes, log: Callable[[str], None] = lambda _: None):
        self.source, self.key, self.log = source, key, log  # log: progress of whole-collection passes
        self._reported: dict[str, int] = {}
        self.db = source.database
        self.groups, self.ledger = self.db[bookkeeping.GROUPS], self.db[bookkeeping.LEDGER]
        self.schemes, self.stays = self.db[bookkeeping.SCHEME], self.db[bookkeeping.STAYS]
        self.copy = self.db.client[databases(self.db.name)["analytics"]][privacy.COPY_COLLECTION]
        self.staged_file: Callable[[], Iterator[list[dict]]] | None = None  # see read_first_from

    def read_first_from(self, sha: str, documents: int, path: str) -> bool:
        """A first release reads the run's staged file instead of the collection when the collection holds that
        file's documents alone: no pass of the server's, no name to decrypt. Says whether it will."""
        if ("generation" in (self.state() or {}) or not Path(path).is_file()
                or document_counts.known(self.source) != documents
                or self.ledger.find_one({"kind": "publish", "_id": {"$ne": sha}}, {"_id": 1})):
            return False
        erased = audit.erased_patient_ids(self.db)
        self.staged_file = lambda: staged_candidates(path, sha, erased)
        return True

    def lease(self, owner: str, wait_s: float = WAIT_S) -> Lease:
        return Lease(self.db, owner, wait_s)

    def state(self) -> dict | None:
        return self.schemes.find_one({"_id": "current"})

    def _file_candidates(self, sha: str, documents: int) -> Iterator[list[dict]]:
        return scans.batches(self.source, projection(), file_ranges(sha, documents))

    def candidates(self, ids: list[str]) -> Iterator[dict]:
        for batch in chunks(ids, ID_BATCH):
            yield from self.source.aggregate([{"$match": {"_id": {"$in": batch}}}, *projection()])

    def _current(self, keys: list[str]) -> dict[str, dict]:
        return {d["_id"]: d for batch in chunks(keys, ID_BATCH) for d in self.groups.find({"_id": {"$in": batch}})}

    def plan_file(self, sha: str, documents: int, observe: Observer = lambda *_: None) -> bookkeeping.Plan:
        plan = bookkeeping.Plan(op=sha, kind="publish", documents=documents)
        if self.ledger.find_one({"_id": sha, "state": "applied"}, {"_id": 1}):
            plan.already_applied = True
            return plan
        state = self.state()
        scheme, applied, drop = state["scheme"], bookkeeping.AppliedSources(self.ledger), state.get("drops", 0) + 1
        arrived, groups = defaultdict(list), {}
        for batch in self._file_candidates(sha, documents):
            for candidate in batch:
                if applied.any(s for s in candidate["_sources"] if s != sha):
                    continue  # counted by an earlier file it also came in
                doc = released_fields(candidate, scheme)
                observe(candidate, doc, scheme)
                key = privacy.group_key(group := privacy.group_of(doc))
                arrived[key].append(bookkeeping.entry(candidate, drop))
                groups[key] = group
        current = self._current(list(arrived))
        for key, new in arrived.items():
            now = current.get(key, {})
            increment, pending = bookkeeping.next_increment(now.get("pending", []), new)
            sensitive = bookkeeping.add_counts(now.get("sensitive", {}), bookkeeping.counts(increment))
            plan.groups.append(bookkeeping.GroupChange(key, groups[key], bookkeeping.before(now),
                                                       now.get("released", 0) + len(increment), now.get("withdrawn", 0),
                                                       sensitive, pending, increment))
        plan.totals = bookkeeping.totals_after(state, plan.groups, drop)
        return plan

    def needs_replan(self, plan: bookkeeping.Plan) -> bool:
        return not plan.already_applied and replan_reason(plan.totals, self.state()["attempted_on"]) is not None

    def plan_erasure(self, patient_ids: list[str]) -> bookkeeping.Plan:
        """Stays found in the bookkeeping too: a restore may have left them out of the source already."""
        plan = bookkeeping.Plan(op=f"erase:{uuid.uuid4().hex}", kind="erase", erased_patients=sorted(patient_ids))
        erased = set(plan.erased_patients)
        for batch in chunks(plan.erased_patients, ID_BATCH):
            plan.erased_stays += [d["_id"] for d in self.source.find({"patient_id": {"$in": batch}}, {"_id": 1})]
        state = self.state()
        if not state:
            return plan  # nothing released yet: only the source changes
        records = [d for batch in chunks(plan.erased_patients, ID_BATCH) for d in self.stays.find({"p": {"$in": batch}})]
        plan.erased_stays = sorted(set(plan.erased_stays) | {d["_id"] for d in records})
        increments = sorted({d["inc"] for d in records if d.get("live")})
        leaving = defaultdict(list)  # group -> stays leaving the copy
        for batch in chunks(increments, ID_BATCH):
            for d in self.stays.find({"inc": {"$in": batch}, "live": True}):
                leaving[d["g"]].append(d)
        touched = {d["g"] for d in records} | set(leaving) | {
            d["_id"] for batch in chunks(plan.erased_patients, ID_BATCH)
            for d in self.groups.find({"pending.p": {"$in": batch}}, {"_id": 1})}
        current = self._current(sorted(touched))
        for key in sorted(touched):
            now = current[key]
            out = leaving.get(key, [])
            withdrawn_erased = sum(1 for d in records if d["g"] == key and not d.get("live"))
            plan.groups.append(bookkeeping.GroupChange(
                key, now["group"], bookkeeping.before(now), now.get("released", 0) - len(out),
                now.get("withdrawn", 0) + sum(1 for d in out if d["p"] not in erased) - withdrawn_erased,
                bookkeeping.add_counts(now.get("sensitive", {}), bookkeeping.counts({"v": d["v"]} for d in out), -1),
                [e for e in now.get("pending", []) if e["p"] not in erased], leaving=[d["_id"] for d in out]))
        plan.totals = bookkeeping.totals_after(state, plan.groups)
        return plan

    def needs_rebuild(self) -> bool:
        state = self.state()
        return (state is None or "generation" not in state
                or bool(self.ledger.find_one({"_id": bookkeeping.REBUILD, "state": "rebuilding"}, {"_id": 1})))

    def _progress(self, stage: str, done: int, every: int = 100_000) -> None:
        if done // every > self._reported.get(stage, 0):
            self._reported[stage] = done // every
            self.log(f"release rebuild, {stage}: {done:,} stays")
