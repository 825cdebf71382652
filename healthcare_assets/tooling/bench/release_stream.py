"""The analysts' release as a stream of drops, simulated without a database through the release
policy's own code: how many stays are published, pending and held back after the first release
and after a stream of drops, and how many drops a stay waits.

    python -m healthcare_assets.tooling.bench --release-stream [--sizes 55500,1000000] [--drops 100] [--drop-rows 1000]

(`make bench` runs it at every size too, into bench.json.) The stays are those the pipeline would
count (healthcare_assets.tooling.bench.stream_files: the exports read and cleaned by the
pipeline's own code). The first release chooses the scheme on the base export
(generalization.Table, choose) and releases whole every group whose stays qualify
(bookkeeping.qualifies); the others are held back. Then each drop's stays that no earlier file
brought join their group's pending stays, and bookkeeping.next_increment releases them together
when they qualify together, as ReleasePlanner.plan_file does; the totals are bookkeeping's
(figures, totals_after), each released stay's wait is the drop that released it minus the drop
that brought it (0: the base export). Not simulated: erasures, and the scheme chosen again (the
stream keeps the first one and says after which drop the pipeline would have chosen again).
What is reported, and the targets: healthcare_assets.tooling.bench.stream_figures, targets.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from healthcare_assets.domain import generalization, privacy
from healthcare_assets.domain.release import bookkeeping, planning
from healthcare_assets.domain.release.bookkeeping import (
    Entry,
    GroupChange,
    entry,
    figures,
    next_increment,
    totals_after,
)


class Stays:
    """The base export's counted stays, four bytes a value (generalization.Encoder); stays[i] is
    the i-th as planning.projection() gives it. A stay already counted is not added again."""

    def __init__(self) -> None:
        self.encoder, self.ids, self.seen, self._values = generalization.Encoder(), [], set(), None

    def add(self, candidate: dict) -> None:
        if candidate["_id"] not in self.seen:
            self.seen.add(candidate["_id"])
            self.ids.append(candidate["_id"])
            self.encoder.add(planning.exact(candidate))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        if self._values is None:
            self._values = {f: list(known) for f, known in self.encoder.known.items()}
        value = {f: self._values[f][self.encoder.codes[f][i]] for f in self.encoder.fields}
        return {"_id": self.ids[i], "_values": {f: value[f] for f in privacy.QI_FIELDS},
                **{f: value[f] for f in (*privacy.SENSITIVE, privacy.PERSON)}}


@dataclass
class Stream:
    evaluation: generalization.Evaluation
    tried: int
    groups: dict[str, dict] = field(default_factory=dict)  # group key -> its bookkeeping (GroupChange.as_group)
    totals: dict = field(default_factory=lambda: {**dict.fromkeys(bookkeeping.TOTALS, 0), "drops": 0, "waits": {}})
    first: dict = field(default_factory=dict)  # the totals after the first release
    drop_stays: int = 0
    drop_released: int = 0
    held_back_released: int = 0
    replan: tuple[int, str] | None = None
    increments: list[tuple[int, str, list[Entry]]] | None = None  # when traced: (drop, group key, its stays)


def group_key(candidate: dict, scheme: privacy.Scheme) -> str:
    return privacy.group_key(privacy.group_of(planning.released_fields(candidate, scheme)))


def first_release(stays: Stays, trace: bool = False) -> Stream:
    """Choose the scheme on the stays, release every group whose stays qualify, hold back the rest."""
    stream = Stream(*generalization.choose(stays.encoder.table()), increments=[] if trace else None)
    keys: dict[str, int] = {}
    codes = np.array([keys.setdefault(group_key(stays[i], stream.evaluation.scheme), len(keys))
                      for i in range(len(stays))], dtype=np.int64)
    names, order = list(keys), np.argsort(codes, kind="stable")
    for members in np.split(order, np.flatnonzero(np.diff(codes[order])) + 1) if len(stays) else []:
        key, entries = names[codes[members[0]]], [entry(stays[i], 0) for i in members]
        released = bookkeeping.qualifies(entries)
        change = GroupChange(key, privacy.group_from_key(key), {}, len(entries) if released else 0, 0, {},
                             [] if released else entries)
        stream.totals = totals_after(stream.totals, [change])
        stream.groups[key] = change.as_group()
        if trace and released:
            stream.increments.append((0, key, entries))
    stream.first = dict(stream.totals)
    return stream


def stream_drops(stream: Stream, drops: Iterable[list[dict]], seen: set[str]) -> Stream:
    """Each drop's new stays join their groups' pending ones; next_increment says what goes out."""
    scheme, chosen_on = stream.evaluation.scheme, stream.first["counted"]
    for drop, candidates in enumerate(drops, start=1):
        arrived = defaultdict(list)
        for candidate in candidates:
            if candidate["_id"] not in seen:  # counted by an earlier file it also came in
                seen.add(candidate["_id"])
                arrived[group_key(candidate, scheme)].append(entry(candidate, drop))
        changes = []
        for key, new in arrived.items():
            now = stream.groups.get(key, {})
            increment, pending = next_increment(now.get("pending", []), new)
            changes.append(GroupChange(key, privacy.group_from_key(key), figures(now),
                                       now.get("released", 0) + len(increment), now.get("withdrawn", 0), {},
                                       pending, increment))
        stream.totals = totals_after(stream.totals, changes, drop)
        for change in changes:
            stream.groups[change.key] = change.as_group()
            stream.drop_released += sum(1 for e in change.increment if e["t"] > 0)
            stream.held_back_released += sum(1 for e in change.increment if e["t"] == 0)
            if stream.increments is not None and change.increment:
                stream.increments.append((drop, change.key, change.increment))
        stream.drop_stays += sum(len(new) for new in arrived.values())
        if stream.replan is None and (reason := planning.replan_reason(stream.totals, chosen_on)):
            stream.replan = (drop, reason)
    return stream


def simulate(stays: Stays, drops: Iterable[list[dict]], trace: bool = False) -> Stream:
    return stream_drops(first_release(stays, trace), drops, stays.seen)
