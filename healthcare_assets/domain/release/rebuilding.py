"""Rebuilding the release under a scheme chosen again, judged with every earlier release.

An analyst who kept the copy under the old scheme and reads it under the new one can join the two
on what they share: a stay released both times sits in the intersection of its old and new group.
So the stays released before are tallied per cell (the groups they fell in under each earlier
scheme, and the new group): a cell that does not qualify is withheld from the new release (its
stays are withdrawn under the new scheme, never to be released in it), and the stays the live copy
holds that the new release would not, taken per earlier group, must qualify too, or the rebuild
is refused and the live release stays in place.
"""

from __future__ import annotations

import secrets
from collections import defaultdict
from collections.abc import Iterator

from healthcare_assets.domain import generalization, privacy
from healthcare_assets.domain.release.bookkeeping import ID_BATCH, REBUILD, Rebuilt, Tally, chunks
from healthcare_assets.domain.release.lease import Lease, utc_now
from healthcare_assets.domain.release.planning import (
    Observer,
    ReleasePlanner,
    projection,
    released_fields,
)
from healthcare_assets.plumbing import scans


def earlier_key(candidate: dict, seen: list[int], history: list[privacy.Scheme]) -> str:
    """The groups a stay fell in under every earlier scheme whose copy held it ("" if none)."""
    return "||".join(f"{g}:{privacy.group_key(privacy.generalize(candidate['_values'], history[g]))}" for g in seen)


class Rebuilding(ReleasePlanner):
    def history(self) -> list[privacy.Scheme]:
        """The scheme of every generation so far (none for a release kept by an earlier version)."""
        state = self.state() or {}
        return state.get("history", []) if "generation" in state else []

    def settled(self, loading: set[str], generations: int,
                files: set[str] | None = None) -> Iterator[list[tuple[dict, list[int], bool]]]:
        """Every stay present but those of files still being loaded as the rebuild began (and, when
        `files` is given, only stays of those files), each with the generations whose copies held
        it and whether the live copy does."""
        for batch in scans.batches(self.source, projection()):
            batch = [c for c in batch if not loading.issuperset(c["_sources"])
                     and (files is None or files.intersection(c["_sources"]))]
            known = {}
            if generations:
                for ids in chunks([c["_id"] for c in batch], ID_BATCH):
                    known.update({d["_id"]: d for d in self.stays.find({"_id": {"$in": ids}}, {"seen": 1, "live": 1})})
            yield [(c, [g for g in known.get(c["_id"], {}).get("seen", []) if g < generations],
                    bool(known.get(c["_id"], {}).get("live"))) for c in batch]

    def plan_rebuild(self, lease: Lease, observe: Observer = lambda *_: None) -> Rebuilt:
        """Choose the scheme for every stay present, then plan every group under it and judge its
        join with the earlier releases; `observe` sees every stay. Nothing is written but the
        ledger's note that a rebuild is under way."""
        self.ledger.replace_one({"_id": REBUILD}, {"kind": "rebuild", "state": "rebuilding", "started_at": utc_now()},
                                upsert=True)
        history = self.history()
        loading = {d["_id"] for d in self.ledger.find({"state": "loading"}, {"_id": 1})}
        encoder = generalization.Encoder()
        for batch in scans.batches(self.source, [{"$project": {"_id": 0, **privacy.exact_values()}}]):
            for values in batch:
                encoder.add({**values.pop("_values"), **values})
            lease.renew()
            self._progress("choosing the generalization", encoder.rows)
        table = encoder.table()
        del encoder
        evaluation, _ = generalization.choose(table)
        rebuilt = Rebuilt(evaluation, table.uniqueness_before(), len(history), secrets.token_hex(16), loading=loading)
        del table
        groups, labels = defaultdict(Tally), {}
        cells, live_cells = defaultdict(Tally), defaultdict(Tally)  # (earlier, new) -> stays released before
        for batch in self.settled(loading, len(history)):
            for candidate, seen, live in batch:
                doc = released_fields(candidate, rebuilt.scheme)
                observe(candidate, doc, rebuilt.scheme)
                key = privacy.group_key(group := privacy.group_of(doc))
                labels[key] = group
                values = {f: candidate[f] for f in privacy.SENSITIVE}
                groups[key].add(candidate[privacy.PERSON], values)
                if seen:
                    cell = (earlier_key(candidate, seen, history), key)
                    cells[cell].add(candidate[privacy.PERSON], values)
                    if live:
                        live_cells[cell].add(candidate[privacy.PERSON], values)
                rebuilt.files.update(set(candidate["_sources"]) - loading)
            lease.renew()
            self._progress("judging every stay", sum(t.stays for t in groups.values()))
        self._judge(rebuilt, groups, cells, live_cells)
        return rebuilt

    @staticmethod
    def _judge(rebuilt: Rebuilt, groups: dict[str, Tally], cells: dict, live_cells: dict) -> None:
        """Which groups the new release publishes and which cells of the join it withholds; refused
        when the live stays it would take away do not qualify as a change."""
        published = {key for key, tally in groups.items() if tally.qualifies()}
        rebuilt.withheld_cells = {cell for cell, tally in cells.items() if cell[1] in published and not tally.qualifies()}
        remaining = {key: Tally() for key in published}
        for key in published:
            remaining[key].merge(groups[key])
        for cell in rebuilt.withheld_cells:
            remaining[cell[1]].merge(cells[cell], -1)
        rebuilt.released = {key: tally for key, tally in remaining.items() if tally.qualifies()}
        rebuilt.withheld_cells = {cell for cell in rebuilt.withheld_cells if cell[1] in rebuilt.released}
        leaving = defaultdict(Tally)  # earlier groups -> live stays the new release takes away
        for cell, tally in live_cells.items():
            if cell[1] not in rebuilt.released or cell in rebuilt.withheld_cells:
                leaving[cell[0]].merge(tally)
        failing = sum(1 for tally in leaving.values() if tally.stays and not tally.qualifies())
        if failing:
            rebuilt.refused = (f"{failing} earlier groups would lose stays that do not qualify as a change "
                               f"(fewer than {privacy.K_ANONYMITY} patients, or a sensitive value over "
                               f"{privacy.MAX_SHARE:.0%})")
