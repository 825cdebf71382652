"""The analysts' release as a stream of drops, simulated without a database (nor erasures, nor a new scheme)."""

import secrets
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from healthcare_assets.domain import generalization, privacy, schema
from healthcare_assets.domain.cleaning import ChunkCleaner
from healthcare_assets.domain.hierarchies import Hidden
from healthcare_assets.domain.release import bookkeeping, planning
from healthcare_assets.domain.release.bookkeeping import GroupChange, entry
from healthcare_assets.domain.release.findings import wait_percentile
from healthcare_assets.domain.sources import RawCsvReader
from healthcare_assets.plumbing import staging
from healthcare_assets.tooling.bench.exports import generated

DROPS, DROP_ROWS = 100, 1_000
FIRST_DROP_SEED = 1_001  # drop i is generated with seed FIRST_DROP_SEED + i: new to every export of the bench
# The analyses the copy serves (privacy.py) and the quasi-identifiers each needs released.
ANALYSES = {"counts by condition and age band per year": ("medical_condition", "age_range", "admission_year"),
            "lengths of stay": ("length_of_stay",),
            "test results by condition and age band": ("medical_condition", "age_range"),
            "medication by condition and age band": ("medical_condition", "age_range")}


def candidates(path: str | Path, key: bytes) -> Iterator[dict]:
    """The stays of one export, cleaned, as the release reads them (planning.projection())."""
    project, cleaner = planning.compile_projection(privacy.exact_values()), ChunkCleaner(key)
    with open(path, "rb") as stream:
        for raw in RawCsvReader(stream, Path(path).name, staging.CHUNK_ROWS).chunks():
            cleaned = cleaner.clean(raw).cleaned
            columns = list(cleaned.columns)
            for values in zip(*(cleaned[c].tolist() for c in columns), strict=True):
                row = dict(zip(columns, values, strict=True))
                document = {"_id": row["record_key"], privacy.PERSON: row["patient_id"], **schema.document_body(row)}
                yield {"_id": row["record_key"], **project(document)}


def drop_files(folder: Path, drops: int, rows: int) -> Iterator[str]:
    """The drops, generated when first asked for (and kept in `folder` for the next size)."""
    for i in range(drops):
        yield generated(rows, FIRST_DROP_SEED + i, folder)


class Stays:
    """The base export's counted stays, four bytes a value; stays[i] as planning.projection() gives it."""

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
    increments: list[tuple[int, str, list[bookkeeping.Entry]]] | None = None  # when traced: (drop, group key, its stays)


def group_key(candidate: dict, scheme: privacy.Scheme) -> str:
    return privacy.group_key(privacy.group_of(planning.released_fields(candidate, scheme)))


def first_release(stays: Stays, trace: bool = False) -> Stream:
    """Choose the scheme on the stays, release every group whose stays qualify, hold back the rest."""
    stream = Stream(*generalization.choose(stays.encoder.table()), increments=[] if trace else None)
    members = defaultdict(list)
    for i in range(len(stays)):
        members[group_key(stays[i], stream.evaluation.scheme)].append(i)
    for key, indexes in members.items():
        entries = [entry(stays[i], 0) for i in indexes]
        released = bookkeeping.qualifies(entries)
        change = GroupChange(key, privacy.group_from_key(key), {}, len(entries) if released else 0, 0, {},
                             [] if released else entries)
        stream.totals = bookkeeping.totals_after(stream.totals, [change])
        stream.groups[key] = change.as_group()
        if trace and released:
            stream.increments.append((0, key, entries))
    stream.first = dict(stream.totals)
    return stream


def simulate(stays: Stays, drops: Iterable[list[dict]], trace: bool = False) -> Stream:
    stream, seen = first_release(stays, trace), stays.seen
    scheme, chosen_on = stream.evaluation.scheme, stream.first["counted"]
    for drop, candidates_ in enumerate(drops, start=1):
        arrived = defaultdict(list)
        for candidate in candidates_:
            if candidate["_id"] not in seen:  # counted by an earlier file it also came in
                seen.add(candidate["_id"])
                arrived[group_key(candidate, scheme)].append(entry(candidate, drop))
        changes = []
        for key, new in arrived.items():
            now = stream.groups.get(key, {})
            increment, pending = bookkeeping.next_increment(now.get("pending", []), new)
            changes.append(GroupChange(key, privacy.group_from_key(key), bookkeeping.figures(now),
                                       now.get("released", 0) + len(increment), now.get("withdrawn", 0), {},
                                       pending, increment))
        stream.totals = bookkeeping.totals_after(stream.totals, changes, drop)
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


def snapshot(totals: dict) -> dict:
    counted = totals["counted"]
    names = ("released", "pending", "held_back")
    return {"counted": counted, **{n: totals[n] for n in names},
            **{f"{n}_share": round(totals[n] / counted, 4) if counted else 0.0 for n in names},
            **{n: totals[n] for n in ("groups_released", "groups_held_back", "waiting_for_patients",
                                      "waiting_for_diversity")}}


def figures_of(stream: Stream, size: int, drops: int, drop_rows: int) -> dict:
    scheme, waits, last = stream.evaluation.scheme, stream.totals["waits"], stream.totals["drops"]
    # drops waited so far by the stays still pending or held back (the released stays' waits leave them out)
    unreleased = {str(w): n for w, n in sorted(Counter(last - e["t"] for g in stream.groups.values()
                                                       for e in g["pending"]).items())}
    shown = {q.field for q in privacy.QUASI_IDENTIFIERS if not isinstance(q.levels[scheme[q.field]], Hidden)}
    return {"size": size, "drops": drops, "drop_rows": drop_rows,
            "generalization": {q.field: q.levels[scheme[q.field]].describe() for q in privacy.QUASI_IDENTIFIERS},
            "generalization_loss": round(stream.evaluation.generalization, 4), "schemes_tried": stream.tried,
            "chosen_held_back": stream.evaluation.suppressed, "first_release": snapshot(stream.first),
            "after_drops": snapshot(stream.totals), "drop_stays": stream.drop_stays,
            "drop_stays_released": stream.drop_released,
            "drop_released_share": round(stream.drop_released / stream.drop_stays, 4) if stream.drop_stays else 0.0,
            "held_back_released_by_drops": stream.held_back_released,
            "median_drops_waited": wait_percentile(waits, 0.5), "p90_drops_waited": wait_percentile(waits, 0.9),
            "waits": dict(sorted(waits.items(), key=lambda w: int(w[0]))),
            "median_drops_unreleased": wait_percentile(unreleased, 0.5), "unreleased_waits": unreleased,
            "analyses": {analysis: shown.issuperset(needed) for analysis, needed in ANALYSES.items()},
            "replan_at_drop": stream.replan[0] if stream.replan else None,
            "replan_reason": stream.replan[1] if stream.replan else None}


def run_stream(size: int, csv: str, folder: Path, drops: int = DROPS, drop_rows: int = DROP_ROWS) -> dict:
    """The base export `csv` of `size` rows, then `drops` files of `drop_rows` rows, in this process."""
    from healthcare_assets.tooling.bench.one_size import peak_rss_mb

    started, key = time.perf_counter(), secrets.token_bytes(32)
    stays = Stays()
    for candidate in candidates(csv, key):
        stays.add(candidate)
    stream = simulate(stays, (list(candidates(path, key)) for path in drop_files(folder, drops, drop_rows)))
    return figures_of(stream, size, drops, drop_rows) | {"seconds": round(time.perf_counter() - started, 1),
                                                          "peak_rss_mb": peak_rss_mb()}
