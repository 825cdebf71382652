"""What the release stream (healthcare_assets.tooling.bench.release_stream) reports: the stays
released, pending and held back after the first release and after the drops, the drops a stay
waited, and whether the analysts' analyses can be done on the release."""

from __future__ import annotations

from collections import Counter

from healthcare_assets.domain import privacy
from healthcare_assets.domain.hierarchies import Hidden
from healthcare_assets.domain.release.findings import median_wait
from healthcare_assets.tooling.bench.figures import ReleaseStreamFigures, StreamSnapshot
from healthcare_assets.tooling.bench.release_stream import Stream

# The analyses the copy serves (privacy.py) and the quasi-identifiers each needs released (the
# sensitive fields always are).
ANALYSES = {"counts by condition and age band per year": ("medical_condition", "age_range", "admission_year"),
            "lengths of stay": ("length_of_stay",),
            "test results by condition and age band": ("medical_condition", "age_range"),
            "medication by condition and age band": ("medical_condition", "age_range")}


def snapshot(totals: dict) -> StreamSnapshot:
    counted = totals["counted"]

    def share(name: str) -> float:
        return round(totals[name] / counted, 4) if counted else 0.0

    return StreamSnapshot(counted, totals["released"], totals["pending"], totals["held_back"], share("released"),
                          share("pending"), share("held_back"), totals["groups_released"], totals["groups_held_back"],
                          totals["waiting_for_patients"], totals["waiting_for_diversity"])


def wait_percentile(waits: dict[str, int], q: float) -> float | None:
    """The least wait that at least a share q of the released stays waited no longer than."""
    ordered, seen = sorted((int(w), n) for w, n in waits.items()), 0
    total = sum(n for _, n in ordered)
    for wait, n in ordered:
        seen += n
        if seen >= q * total:
            return float(wait)
    return None


def answerable(scheme: privacy.Scheme) -> dict[str, bool]:
    shown = {q.field for q in privacy.QUASI_IDENTIFIERS if not isinstance(q.levels[scheme[q.field]], Hidden)}
    return {analysis: shown.issuperset(needed) for analysis, needed in ANALYSES.items()}


def unreleased_waits(stream: Stream) -> dict[str, int]:
    """Drops waited so far by the stays still pending or held back after the last drop (their wait
    is at least that: the released stays' waits alone would leave them out)."""
    last = stream.totals["drops"]
    return {str(w): n for w, n in sorted(Counter(last - e["t"] for g in stream.groups.values()
                                                  for e in g["pending"]).items())}


def figures_of(stream: Stream, size: int, drops: int, drop_rows: int) -> ReleaseStreamFigures:
    scheme, waits, unreleased = stream.evaluation.scheme, stream.totals["waits"], unreleased_waits(stream)
    return ReleaseStreamFigures(
        size=size, drops=drops, drop_rows=drop_rows,
        generalization={q.field: q.levels[scheme[q.field]].describe() for q in privacy.QUASI_IDENTIFIERS},
        generalization_loss=round(stream.evaluation.generalization, 4), schemes_tried=stream.tried,
        chosen_held_back=stream.evaluation.suppressed, first_release=snapshot(stream.first),
        after_drops=snapshot(stream.totals), drop_stays=stream.drop_stays, drop_stays_released=stream.drop_released,
        drop_released_share=round(stream.drop_released / stream.drop_stays, 4) if stream.drop_stays else 0.0,
        held_back_released_by_drops=stream.held_back_released, median_drops_waited=median_wait(waits),
        p90_drops_waited=wait_percentile(waits, 0.9), waits=dict(sorted(waits.items(), key=lambda w: int(w[0]))),
        median_drops_unreleased=median_wait(unreleased), unreleased_waits=unreleased,
        analyses=answerable(scheme), replan_at_drop=stream.replan[0] if stream.replan else None,
        replan_reason=stream.replan[1] if stream.replan else None)
