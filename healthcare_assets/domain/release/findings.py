"""What the release's checks count and report: the fields, texts and groups of what is about to be
released (or is), the source names found among them, k and l reached, and the release report.

The verdicts themselves (Dagster's check results) are made from these by
healthcare_assets.defs.anonymize.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from healthcare_assets.domain import generalization, privacy
from healthcare_assets.domain.release.bookkeeping import GroupChange, diversity
from healthcare_assets.domain.release.planning import exact
from healthcare_assets.domain.release.publishing import Release


def _texts(doc: dict, reveal: Callable[[Any], Any]) -> Iterable[str]:
    """A released document's text values, an encrypted one decrypted (a released ciphertext of a
    name is that name: deterministic, it links to the source as well as the name would)."""
    for value in doc.values():
        for item in value if isinstance(value, list) else [value]:
            item = reveal(item)
            if isinstance(item, str):
                yield item.casefold()


class Findings:
    """What the checks count, fed one released document and one source person at a time (memory
    does not grow with the documents: texts are a few bands and categories)."""

    def __init__(self, reveal: Callable[[Any], str], keep_exact: bool = True):
        self.reveal = reveal  # an encrypted name in clear, anything else as it is
        self.wrong_fields, self.not_generalized, self.groups, self.texts = Counter(), Counter(), Counter(), Counter()
        self.names_checked = 0
        self.leaked: set[str] = set()  # source names found among released texts (none, unless broken)
        self.exact = generalization.Encoder() if keep_exact else None  # for the uniqueness table "before"

    def add_released(self, doc: dict, scheme: privacy.Scheme) -> Counter:
        """Count one released document; returns its texts."""
        for name in set(doc) ^ set(privacy.VIEW_FIELDS):
            self.wrong_fields[name] += 1
        texts = Counter(_texts(doc, self.reveal))
        self.texts.update(texts)
        for name in privacy.VIEW_FIELDS:
            self.not_generalized[name] += name in doc and not privacy.allowed(name, doc[name], scheme)
        self.groups[privacy.group_key(privacy.group_of(doc))] += 1
        return texts

    def add_person(self, names: Iterable[str], texts: Counter | None = None) -> None:
        """One source stay: are its patient's, doctor's and hospital's names among the released texts?"""
        texts = self.texts if texts is None else texts
        for name in map(self.reveal, names):
            self.names_checked += 1
            if texts[name.casefold()]:
                self.leaked.add(name.casefold())

    def add_candidate(self, candidate: dict, doc: dict, scheme: privacy.Scheme) -> None:
        """A stay about to be released, judged against its own source names."""
        self.add_person(candidate["_names"], self.add_released(doc, scheme))
        if self.exact is not None:
            self.exact.add(exact(candidate))

    def uniqueness_before(self) -> list[dict]:
        """The uniqueness table of the stays judged, as the copy released them before this policy."""
        return self.exact.table().uniqueness_before()

    @property
    def leaks(self) -> int:
        """Released values that are a source name."""
        return sum(self.texts[name] for name in self.leaked)


def smallest(groups: Iterable[GroupChange]) -> tuple[int, int]:
    """k and l reached by the published groups among these (0 when none is published)."""
    published = [c for c in groups if c.published_after]
    k = min((c.after for c in published), default=0)
    l_div = min((diversity(c.sensitive, f) for c in published for f in privacy.SENSITIVE), default=0)
    return k, l_div


@dataclass(frozen=True)
class ReleaseReport:
    """The release as a whole (reports/release_report.json and the asset's metadata)."""

    quasi_identifiers: list[str]
    sensitive_fields: list[str]
    k_required: int
    l_required: int
    generalization: dict[str, str]  # quasi-identifier -> how its level releases it
    generalization_loss: float
    scheme_chosen_at: str
    stays_counted: int
    stays_held_back: int
    held_back_share: float
    groups_released: int
    groups_held_back: int
    uniqueness_before: list[dict]
    uniqueness_released: list[dict]

    @property
    def stays_released(self) -> int:
        return self.stays_counted - self.stays_held_back


def release_report(release: Release, before: list[dict], touched: list[GroupChange]) -> ReleaseReport:
    """The release as a whole: its scheme, what it holds back, and how identifying it is, before
    (as the copy released the stays judged until this policy) and as released, over the released
    groups this operation touched (prefix groups summed over them only: a lower bound on every
    prefix group's size, so the table can only overstate uniqueness)."""
    state = release.state()
    released = [(c.group, c.after) for c in touched if c.published_after]
    return ReleaseReport(
        quasi_identifiers=list(privacy.QI_FIELDS),
        sensitive_fields=list(privacy.SENSITIVE),
        k_required=privacy.K_ANONYMITY,
        l_required=privacy.L_DIVERSITY,
        generalization={q.field: q.levels[state["scheme"][q.field]].describe() for q in privacy.QUASI_IDENTIFIERS},
        generalization_loss=round(generalization.generalization_loss(state["scheme"]), 4),
        scheme_chosen_at=str(state["chosen_at"]),
        stays_counted=state["counted"],
        stays_held_back=state["suppressed"],
        held_back_share=round(state["suppressed"] / state["counted"], 4) if state["counted"] else 0.0,
        groups_released=state["groups_released"],
        groups_held_back=state["groups_held_back"],
        uniqueness_before=before,
        uniqueness_released=generalization.uniqueness(released),
    )
