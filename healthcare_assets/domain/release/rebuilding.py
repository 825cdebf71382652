"""Rebuilding under a new scheme: two releases join on a stay's groups, so cells (earlier, new group) are judged."""

from __future__ import annotations

import secrets
from collections import defaultdict
from collections.abc import Iterator

from healthcare_assets.domain import generalization, privacy
from healthcare_assets.domain.collection_definitions import stays_ranges
from healthcare_assets.domain.release import bookkeeping, planning
from healthcare_assets.domain.release.bookkeeping import Rebuilt, StayTally
from healthcare_assets.domain.release.lease import Lease, utc_now
from healthcare_assets.plumbing import scans


def earlier_key(candidate: dict, seen: list[int], history: list[privacy.Scheme]) -> str:
    return "||".join(f"{g}:{privacy.group_key(privacy.generalize(candidate['_values'], history[g]))}" for g in seen)


class Rebuilding(planning.ReleasePlanner):
    def history(self) -> list[privacy.Scheme]:
        state = self.state() or {}
        return state.get("history", []) if "generation" in state else []

    def settled(self, loading: set[str], generations: int,
                files: set[str] | None = None) -> Iterator[list[tuple[dict, list[int], bool]]]:
        """Every stay but of files loading, with the generations whose copies held it, and if the live one does."""
        candidates = self.staged_file() if self.staged_file else scans.batches(
            self.source, planning.projection(), stays_ranges(self.source))
        for batch in candidates:
            batch = [c for c in batch if not loading.issuperset(c["_sources"])
                     and (files is None or files.intersection(c["_sources"]))]
            known = {}
            if generations:
                for ids in bookkeeping.chunks([c["_id"] for c in batch], bookkeeping.ID_BATCH):
                    known.update({d["_id"]: d for d in self.stays.find({"_id": {"$in": ids}}, {"seen": 1, "live": 1})})
            yield [(c, [g for g in known.get(c["_id"], {}).get("seen", []) if g < generations],
                    bool(known.get(c["_id"], {}).get("live"))) for c in batch]

    def _exact_values(self) -> Iterator[list[dict]]:
        if self.staged_file:
            yield from ([planning.exact(c) for c in batch] for batch in self.staged_file())
            return
        for batch in scans.batches(self.source, [{"$project": {"_id": 0, **privacy.exact_values()}}],
                                   stays_ranges(self.source)):
            yield [{**values.pop("_values"), **values} for values in batch]

    def plan_rebuild(self, lease: Lease, observe: planning.Observer = lambda *_: None) -> Rebuilt:
        """Nothing is written but the ledger's note that a rebuild is under way."""
        self.ledger.replace_one({"_id": bookkeeping.REBUILD},
                                {"kind": "rebuild", "state": "rebuilding", "started_at": utc_now()}, upsert=True)
        history = self.history()
        loading = {d["_id"] for d in self.ledger.find({"state": "loading"}, {"_id": 1})}
        encoder = generalization.Encoder()
        for batch in self._exact_values():
            for values in batch:
                encoder.add(values)
            lease.renew()
            self._progress("choosing the generalization", encoder.rows)
        table = encoder.table()
        del encoder
        evaluation, _ = generalization.choose(table)
        rebuilt = Rebuilt(evaluation, table.uniqueness_before(), len(history), secrets.token_hex(16), loading=loading)
        del table
        groups = defaultdict(StayTally)
        cells, live = defaultdict(StayTally), set()  # (earlier groups, new group) -> stays released before
        for batch in self.settled(loading, len(history)):
            for candidate, seen, is_live in batch:
                doc = planning.released_fields(candidate, rebuilt.scheme)
                observe(candidate, doc, rebuilt.scheme)
                key = privacy.group_key(privacy.group_of(doc))
                values = {f: candidate[f] for f in privacy.SENSITIVE}
                groups[key].add(candidate[privacy.PERSON], values)
                if seen:
                    cell = (earlier_key(candidate, seen, history), key)
                    cells[cell].add(candidate[privacy.PERSON], values)
                    if is_live:
                        live.add(cell)
                rebuilt.files.update(set(candidate["_sources"]) - loading)
            lease.renew()
            self._progress("judging every stay", sum(t.stays for t in groups.values()))
        judge(rebuilt, groups, cells, live, len(history))
        return rebuilt


def live_group(earlier: str, generation: int) -> str | None:
    last = earlier.rsplit("||", 1)[-1]
    return last.split(":", 1)[1] if last.startswith(f"{generation - 1}:") else None


def judge(rebuilt: Rebuilt, groups: dict[str, StayTally], cells: dict[tuple[str, str], StayTally],
          live: set[tuple[str, str]], generation: int) -> None:
    """A cell that does not qualify is withheld; a live group losing some stays loses all (whole groups, unions of
    increments, qualify). Withholding may take a new group under the bar, an unreleased one takes its stays out
    of the live copy: repeated until nothing changes. Released short of 1 - MAX_SUPPRESSED: refused."""
    unreleased = {key for key, tally in groups.items() if not tally.qualifies()}
    withheld: set[tuple[str, str]] = set()
    leaving: set[str] = set()  # live groups whose stays all leave
    changed = True
    while changed:
        before = (len(unreleased), len(withheld), len(leaving))
        withheld |= {c for c, tally in cells.items() if c[1] not in unreleased and not tally.qualifies()}
        leaving |= {live_group(c[0], generation) for c in live if c[1] in unreleased or c in withheld} - {None}
        withheld |= {c for c in cells if live_group(c[0], generation) in leaving}
        withheld_in = defaultdict(list)  # new group -> its withheld cells
        for c in withheld:
            withheld_in[c[1]].append(c)
        for key in groups.keys() - unreleased:
            remaining = groups[key]
            if withheld_in[key]:  # a copy to take them from (most groups have none: no copy of every patient)
                remaining = StayTally()
                remaining.merge(groups[key])
            for c in withheld_in[key]:
                remaining.merge(cells[c], -1)
            if not remaining.qualifies():
                unreleased.add(key)
            else:
                rebuilt.released[key] = remaining
        changed = before != (len(unreleased), len(withheld), len(leaving))
    rebuilt.released = {key: tally for key, tally in rebuilt.released.items() if key not in unreleased}
    rebuilt.withheld_cells = {c for c in withheld if c[1] not in unreleased}
    stays = sum(t.stays for t in groups.values())
    released = sum(t.stays for t in rebuilt.released.values())
    if live and stays and released < (1 - privacy.MAX_SUPPRESSED) * stays:
        rebuilt.refused = (f"judged with the release it would replace, it would release {released:,} of "
                           f"{stays:,} stays ({len(leaving)} live groups would leave whole); more than "
                           f"{privacy.MAX_SUPPRESSED:.0%} held back")
