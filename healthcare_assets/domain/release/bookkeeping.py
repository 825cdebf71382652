"""The release's bookkeeping in the main database (which analysts cannot read; docs/operations.md): `release_scheme`,
`release_groups`, `release_stays` (group, increment, `live`, the generations that held it) and `release_ledger`
(each operation's plan while applied); a stay counts once, by the first applied file it came in."""

from __future__ import annotations

import datetime as dt
import itertools
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields

from pymongo.collection import Collection
from pymongo.database import Database

from healthcare_assets.domain import generalization, privacy

GROUPS = "release_groups"
LEDGER = "release_ledger"
SCHEME = "release_scheme"
STAYS = "release_stays"
REBUILD = "rebuild"  # the ledger entry of a whole-collection rebuild
ID_BATCH = 100  # $in lists stay short: the embedded server's $in is quadratic (docs/operations.md)
WRITE_BATCH = 1000  # group updates per bulk write

Sensitive = dict[str, dict[str, int]]  # sensitive field -> value -> stays
Entry = dict  # a counted stay not (yet) released: {"s": source _id, "p": patient_id, "v": {field: value}, "t": drop}


def chunks(items: Iterable, size: int) -> Iterator[list]:
    """Lists of `size` items, the last shorter; a generator's items are drawn only as each list is asked for."""
    items = iter(items)
    while batch := list(itertools.islice(items, size)):
        yield batch


def request_rebuild(db: Database, requested_by: str, reason: str) -> None:
    """Make the next publication rebuild the release whole, for changes that bypass the operations."""
    db[LEDGER].update_one({"_id": REBUILD}, {"$set": {
        "kind": "rebuild", "state": "rebuilding", "requested_by": requested_by, "reason": reason,
        "requested_at": dt.datetime.now(dt.UTC).replace(tzinfo=None)}}, upsert=True)


@contextmanager
def loading(db: Database, sha: str) -> Iterator[None]:
    """A rebuild meanwhile leaves the file's stays to its run (it would see only some); a failed load stays marked."""
    ledger = db[LEDGER]
    ledger.update_one({"_id": sha}, {"$setOnInsert": {"kind": "publish", "state": "loading"}}, upsert=True)
    yield
    ledger.update_one({"_id": sha, "state": "loading"}, {"$set": {"state": "loaded"}})


def entry(candidate: dict, drop: int) -> Entry:
    return {"s": candidate["_id"], "p": candidate[privacy.PERSON],
            "v": {f: candidate[f] for f in privacy.SENSITIVE}, "t": drop}


def counts(entries: Iterable[Entry]) -> Sensitive:
    found: dict[str, Counter] = {f: Counter() for f in privacy.SENSITIVE}
    for e in entries:
        for f in privacy.SENSITIVE:
            found[f][e["v"][f]] += 1
    return {f: dict(c) for f, c in found.items()}


def qualifies(entries: list[Entry]) -> bool:
    return privacy.qualifies(len({e["p"] for e in entries}), counts(entries), len(entries))


def next_increment(pending: list[Entry], arrived: list[Entry]) -> tuple[list[Entry], list[Entry]]:
    """Arrivals join the pending stays, released as one increment once they qualify: (increment, waiting)."""
    waiting = pending + arrived
    return (waiting, []) if qualifies(waiting) else ([], waiting)


def waiting_for(entries: list[Entry]) -> str | None:
    if not entries:
        return None
    return "patients" if len({e["p"] for e in entries}) < privacy.K_ANONYMITY else "diversity"


def add_counts(sensitive: Sensitive, more: Sensitive, sign: int = 1) -> Sensitive:
    out = {f: dict(values) for f, values in sensitive.items()}
    for name, values in more.items():
        for value, n in values.items():
            out.setdefault(name, {})[value] = max(out.get(name, {}).get(value, 0) + sign * n, 0)
    return out


@dataclass
class GroupChange:
    key: str
    group: dict
    before: dict  # the group's figures (see figures()) before the operation
    released: int  # stays the copy holds after it
    withdrawn: int  # stays withdrawn after it: never released again under this scheme
    sensitive: Sensitive  # the released stays' values after it
    pending: list[Entry]  # after it
    increment: list[Entry] = field(default_factory=list)  # released now, as one increment
    leaving: list[str] = field(default_factory=list)  # source _ids of stays leaving the copy now

    @property
    def records(self) -> int:
        return self.released + self.withdrawn + len(self.pending)

    def as_group(self) -> dict:
        return {"group": self.group, "records": self.records, "released": self.released,
                "withdrawn": self.withdrawn, "sensitive": self.sensitive, "pending": self.pending,
                "published": self.released > 0, "waiting_for": waiting_for(self.pending)}


def figures(group_doc: dict) -> dict:
    pending, released = len(group_doc.get("pending", [])), group_doc.get("released", 0)
    waiting = group_doc.get("waiting_for")
    return {"counted": group_doc.get("records", 0), "released": released,
            "pending": pending if released else 0, "held_back": 0 if released else pending,
            "withdrawn": group_doc.get("withdrawn", 0), "groups_released": int(released > 0),
            "groups_held_back": int(not released and pending > 0),
            "waiting_for_patients": pending if waiting == "patients" else 0,
            "waiting_for_diversity": pending if waiting == "diversity" else 0}


TOTALS = tuple(figures({}))


def arrivals(group_doc: dict) -> Counter:
    return Counter(str(e["t"]) for e in group_doc.get("pending", []))


def totals_after(state: dict, changes: list[GroupChange], drop: int | None = None) -> dict:
    """The release's totals after these changes (kept as they change: counting would read every group)."""
    totals = {name: state.get(name, 0) for name in TOTALS}
    waits, waiting = Counter(state.get("waits", {})), Counter(state.get("waiting_since", {}))
    for c in changes:
        after = c.as_group()
        for name, value in figures(after).items():
            totals[name] += value - c.before.get(name, 0)
        waiting.update(arrivals(after))
        waiting.subtract(c.before.get("arrivals", {}))
        if drop is not None:
            waits.update(str(drop - e["t"]) for e in c.increment)
    return {**totals, "waits": dict(waits), "waiting_since": {t: n for t, n in waiting.items() if n > 0},
            "drops": state.get("drops", 0) if drop is None else drop}


def before(group_doc: dict) -> dict:
    return {**figures(group_doc), "arrivals": dict(arrivals(group_doc))}


@dataclass
class Plan:
    op: str  # a file's SHA-256, or erase:<uuid>
    kind: str  # publish | erase
    documents: int = 0  # the file's documents (sizes its range pass)
    groups: list[GroupChange] = field(default_factory=list)
    erased_patients: list[str] = field(default_factory=list)
    erased_stays: list[str] = field(default_factory=list)  # their source _ids
    totals: dict = field(default_factory=dict)  # the release's TOTALS after the operation
    already_applied: bool = False

    @property
    def stays(self) -> int:
        return sum(abs(c.records - c.before.get("counted", 0)) for c in self.groups)

    def increments(self) -> list[GroupChange]:
        return [c for c in self.groups if c.increment]

    def earlier(self) -> list[str]:
        return [e["s"] for c in self.groups for e in c.increment if e["t"] != self.totals.get("drops")]

    def as_ledger(self) -> dict:
        return {**{f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("groups", "already_applied")},
                "groups": [vars(change) for change in self.groups]}

    @classmethod
    def from_ledger(cls, entry: dict) -> Plan:
        stored = {k: entry[k] for k in ("op", "kind", "documents", "erased_patients", "erased_stays", "totals")}
        return cls(**stored, groups=[GroupChange(**g) for g in entry["groups"]])


@dataclass
class StayTally:

    stays: int = 0
    patients: Counter = field(default_factory=Counter)  # by privacy.counted_person
    sensitive: dict = field(default_factory=lambda: {f: Counter() for f in privacy.SENSITIVE})

    def add(self, patient: str, values: dict, sign: int = 1) -> None:
        self.stays += sign
        self.patients[privacy.counted_person(patient)] += sign
        for f in privacy.SENSITIVE:
            self.sensitive[f][values[f]] += sign

    def merge(self, other: StayTally, sign: int = 1) -> None:
        self.stays += sign * other.stays
        self.patients.update({p: sign * n for p, n in other.patients.items()})
        for f in privacy.SENSITIVE:
            self.sensitive[f].update({v: sign * n for v, n in other.sensitive[f].items()})

    def qualifies(self) -> bool:
        people = sum(1 for n in self.patients.values() if n > 0)
        return privacy.qualifies(people, {f: dict(c) for f, c in self.sensitive.items()}, self.stays)


@dataclass
class Rebuilt:

    evaluation: generalization.Evaluation
    uniqueness_before: list[dict]
    generation: int
    epoch: str
    released: dict[str, StayTally] = field(default_factory=dict)  # group -> the stays it releases
    withheld_cells: set[tuple[str, str]] = field(default_factory=set)  # (earlier groups, new group)
    files: set[str] = field(default_factory=set)  # whose stays it counts: marked applied with it
    loading: set[str] = field(default_factory=set)  # files being loaded as it began: their runs publish them
    refused: str | None = None  # why the live release stays in place

    @property
    def scheme(self) -> privacy.Scheme:
        return self.evaluation.scheme


class AppliedSources:

    def __init__(self, ledger: Collection):
        self.ledger, self.known = ledger, {}

    def any(self, shas: Iterable[str]) -> bool:
        shas = set(shas)
        if unknown := [s for s in shas if s not in self.known]:
            applied = {d["_id"] for d in self.ledger.find({"_id": {"$in": unknown}, "state": "applied"}, {"_id": 1})}
            self.known.update({s: s in applied for s in unknown})
        return any(self.known[s] for s in shas)
