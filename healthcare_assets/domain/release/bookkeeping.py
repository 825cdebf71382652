"""The release's bookkeeping, in the main database (which analysts cannot read), and its arithmetic.

- `release_scheme`: the generalization levels in force, with the stays counted and held back.
- `release_groups`: one document per quasi-identifier group under that scheme: the stays counted
  in it, how often each sensitive value occurs, whether it is published (at least k stays, at least
  l values of each sensitive field) and, while it is held back, which stays (source _ids).
- `release_ledger`: one document per operation (a file's is its SHA-256): its plan while it is
  being applied, `applied` after. A stay is counted once, by the first applied operation among
  the files it came in (`metadata.sources`).

A plan (Plan, Rebuilt) says how each touched group changes (GroupChange); the module
healthcare_assets.domain.release.planning makes plans, healthcare_assets.domain.release writes them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields

from pymongo.collection import Collection
from pymongo.database import Database

from healthcare_assets.domain import generalization, privacy
from healthcare_assets.domain.privacy import Scheme

GROUPS = "release_groups"
LEDGER = "release_ledger"
SCHEME = "release_scheme"
REBUILD = "rebuild"  # the ledger entry of a whole-collection rebuild
MEMBERS_KEPT = 10_000  # a held-back group with more stays is looked up in the source when published
# $in lists stay short: the embedded server's $in is quadratic (1,000 group keys: 2 s in one
# list, 0.3 s in lists of 100, against 30,000 groups)
ID_BATCH = 100
WRITE_BATCH = 1000  # group updates per bulk write
K = privacy.K_ANONYMITY
L = privacy.L_DIVERSITY


def chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


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


def add_counts(sensitive: Sensitive, counts: Sensitive, sign: int = 1) -> Sensitive:
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



class Tally:
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
            remember(self.members.setdefault(key, []), stay)


TOTALS = ("counted", "suppressed", "groups_released", "groups_held_back")


def totals_after(state: dict, changes: list[GroupChange]) -> dict:
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


def remember(members: list[str], stay: str) -> list[str]:
    """Add a stay to a group's members, up to one more than are kept (so that kept() sees too many)."""
    if len(members) <= MEMBERS_KEPT:
        members.append(stay)
    return members


def kept(members: list[str] | None) -> list[str] | None:
    return members if members is not None and len(members) <= MEMBERS_KEPT else None
