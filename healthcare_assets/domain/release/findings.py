"""What the release's checks count, and the release report; defs.anonymize turns them into verdicts."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any

from healthcare_assets.domain import generalization, privacy
from healthcare_assets.domain.release.bookkeeping import Plan, StayTally
from healthcare_assets.domain.release.planning import exact
from healthcare_assets.domain.release.publishing import Release


def _texts(value, reveal: Callable[[Any], Any]) -> list[str]:
    """Text values, decrypted: a deterministic ciphertext of a name links to the source as the name would."""
    return [item.casefold() for item in map(reveal, value if isinstance(value, list) else [value])
            if isinstance(item, str)]


_VIEW_FIELDS = set(privacy.VIEW_FIELDS)


class Findings:
    """Fed one document at a time; memory grows with the distinct values released (a few bands and categories),
    each measured once."""

    def __init__(self, reveal: Callable[[Any], str], keep_exact: bool = True):
        self.reveal = reveal  # an encrypted name in clear, anything else as it is
        self.wrong_fields, self.not_generalized, self.groups, self.texts = Counter(), Counter(), Counter(), Counter()
        self.names_checked = 0
        self.leaked: set[str] = set()  # source names found among released texts (none, unless broken)
        self.exact = generalization.Encoder() if keep_exact else None  # for the uniqueness table "before"
        self._measured: dict[tuple, tuple[list[str], bool]] = {}  # (scheme, field, value) -> texts, not generalized

    def _measure(self, name: str, value, scheme: privacy.Scheme) -> tuple[list[str], bool]:
        return _texts(value, self.reveal), name in _VIEW_FIELDS and not privacy.allowed(name, value, scheme)

    def add_released(self, doc: dict, scheme: privacy.Scheme) -> list[str]:
        """Its texts, casefolded and decrypted."""
        if doc.keys() != _VIEW_FIELDS:
            self.wrong_fields.update(set(doc) ^ _VIEW_FIELDS)
        texts, levels = [], tuple(scheme.items())
        for name, value in doc.items():
            try:
                measured = self._measured[levels, name, value]
            except KeyError:
                measured = self._measured[levels, name, value] = self._measure(name, value, scheme)
            except TypeError:  # not a label (a list, a document): measured alone, not kept
                measured = self._measure(name, value, scheme)
            texts += measured[0]
            self.not_generalized[name] += measured[1]
        self.groups[privacy.group_key(privacy.group_of(doc))] += 1
        self.texts.update(texts)
        return texts

    def add_person(self, names: Iterable[str], texts: Collection[str] | None = None) -> None:
        texts = self.texts if texts is None else texts
        for name in map(self.reveal, names):
            self.names_checked += 1
            if name.casefold() in texts:
                self.leaked.add(name.casefold())

    def add_candidate(self, candidate: dict, doc: dict, scheme: privacy.Scheme) -> None:
        self.add_person(candidate["_names"], self.add_released(doc, scheme))
        if self.exact is not None:
            self.exact.add(exact(candidate))

    def uniqueness_before(self) -> list[dict]:
        return self.exact.table().uniqueness_before()

    @property
    def leaks(self) -> int:
        return sum(self.texts[name] for name in self.leaked)


def weakest(released: Iterable[StayTally]) -> tuple[int, float]:
    """The fewest patients and the largest share of one sensitive value (0, 0 when there are none)."""
    released = [t for t in released if t.stays]
    k = min((sum(1 for n in t.patients.values() if n > 0) for t in released), default=0)
    share = max((max(c.values(), default=0) / t.stays for t in released for c in t.sensitive.values()), default=0.0)
    return k, share


def increments(plan: Plan) -> list[StayTally]:
    out = []
    for change in plan.increments():
        tally = StayTally()
        for e in change.increment:
            tally.add(e["p"], e["v"])
        out.append(tally)
    return out


def wait_percentile(waits: dict[str, int], q: float) -> float | None:
    """The least number of drops that at least a share q of the released stays waited no longer than (q=0.5:
    the median); None before any was released by a drop."""
    ordered = sorted((int(w), n) for w, n in waits.items())
    total, seen = sum(n for _, n in ordered), 0
    for wait, n in ordered:
        seen += n
        if seen >= q * total:
            return float(wait)
    return None


@dataclass(frozen=True)
class ReleaseReport:
    """The release as a whole (reports/release_report.json and the asset's metadata)."""

    quasi_identifiers: list[str]
    sensitive_fields: list[str]
    k_required: int  # patients
    max_share: float  # of one sensitive value in a group or a change
    generalization: dict[str, str]  # quasi-identifier -> how its level releases it
    generalization_loss: float
    scheme_chosen_at: str
    scheme_generation: int
    stays_counted: int
    stays_released: int
    stays_pending: int  # waiting in released groups for an increment that qualifies
    stays_held_back: int  # in groups not released yet
    stays_withdrawn: int  # left the copy with an erased patient's increment, or withheld by a rebuild's join
    released_share: float
    pending_share: float
    held_back_share: float
    withdrawn_share: float
    waiting_for_patients: int  # pending or held back: fewer than k patients in the group's waiting stays
    waiting_for_diversity: int  # enough patients, but one sensitive value over the share
    drops_published: int
    median_drops_waited: float | None  # by the stays that drops released (a rebuild's wait none)
    median_drops_waiting: float | None  # by the stays waiting now (pending or held back)
    oldest_waiting_since_drop: int | None  # the drop that brought the longest-waiting stay
    rebuild_refused: str | None
    groups_released: int
    groups_held_back: int
    uniqueness_before: list[dict]
    uniqueness_released: list[dict]


def release_report(release: Release, before: list[dict], released: list[tuple[dict, int]]) -> ReleaseReport:
    """Uniqueness over the groups this operation touched: a lower bound per prefix group, so never understated."""
    state = release.state()
    counted, drops, waiting = state["counted"], state.get("drops", 0), state.get("waiting_since", {})

    parts = ("released", "pending", "held_back", "withdrawn")
    return ReleaseReport(
        quasi_identifiers=list(privacy.QI_FIELDS), sensitive_fields=list(privacy.SENSITIVE),
        k_required=privacy.K_ANONYMITY, max_share=privacy.MAX_SHARE,
        generalization={q.field: q.levels[state["scheme"][q.field]].describe() for q in privacy.QUASI_IDENTIFIERS},
        generalization_loss=round(generalization.generalization_loss(state["scheme"]), 4),
        scheme_chosen_at=str(state["chosen_at"]), scheme_generation=state["generation"], stays_counted=counted,
        **{f"stays_{name}": state[name] for name in parts},
        **{f"{name}_share": round(state[name] / counted, 4) if counted else 0.0 for name in parts},
        **{name: state[name] for name in ("waiting_for_patients", "waiting_for_diversity", "groups_released",
                                          "groups_held_back")},
        drops_published=drops, median_drops_waited=wait_percentile(state.get("waits", {}), 0.5),
        median_drops_waiting=wait_percentile({str(drops - int(t)): n for t, n in waiting.items()}, 0.5),
        oldest_waiting_since_drop=min(map(int, waiting), default=None), rebuild_refused=state.get("refused"),
        uniqueness_before=before, uniqueness_released=generalization.uniqueness(released))
