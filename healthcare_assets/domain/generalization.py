"""Choosing how far to generalize each quasi-identifier, for the data at hand (the lattice
search: docs/release-policy.md), and measuring a release."""

from __future__ import annotations

import itertools
from array import array
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from tabulate import tabulate

from healthcare_assets.domain import privacy

_WEIGHTS = sum(q.weight for q in privacy.QUASI_IDENTIFIERS)


def generalization_loss(scheme: privacy.Scheme) -> float:
    return sum(q.weight * scheme[q.field] / (len(q.levels) - 1) for q in privacy.QUASI_IDENTIFIERS) / _WEIGHTS


@dataclass
class Evaluation:
    scheme: privacy.Scheme
    stays: int
    suppressed: int
    groups: int  # released
    k: int  # the fewest patients in a released group (0: none released)
    share: float  # the largest share of a sensitive value in a released group

    @property
    def generalization(self) -> float:
        return generalization_loss(self.scheme)

    @property
    def suppressed_share(self) -> float:
        return self.suppressed / self.stays if self.stays else 0.0

    @property
    def loss(self) -> float:
        return self.generalization + self.suppressed_share

    def summary(self) -> dict:
        return {"scheme": self.scheme, "stays": self.stays, "suppressed": self.suppressed,
                "suppressed_share": round(self.suppressed_share, 4), "groups_released": self.groups,
                "k": self.k, "largest_share": round(self.share, 4), "generalization_loss": round(self.generalization, 4),
                "loss": round(self.loss, 4)}


class Encoder:
    """Stays' values as integer codes as they stream past: four bytes a value, whatever the values are."""

    FIELDS = (*privacy.QI_FIELDS, *privacy.SENSITIVE, privacy.PERSON)

    def __init__(self, fields: tuple[str, ...] = FIELDS):
        self.fields = fields
        self.known: dict[str, dict] = {f: {} for f in fields}
        self.codes: dict[str, array] = {f: array("i") for f in fields}

    def add(self, values: dict) -> None:
        for field in self.fields:
            known, value = self.known[field], values[field]
            if field == privacy.PERSON:
                value = privacy.counted_person(value)
            self.codes[field].append(known.setdefault(value, len(known)))

    @property
    def rows(self) -> int:
        return len(self.codes[self.fields[0]])

    def _columns(self) -> dict[str, tuple[list, np.ndarray]]:
        return {f: (list(self.known[f]), np.frombuffer(self.codes[f], dtype=np.int32)) for f in self.fields}

    def table(self) -> Table:
        return Table(self._columns())

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({f: pd.Categorical.from_codes(codes, categories=pd.Index(values, dtype=object))
                             for f, (values, codes) in self._columns().items()})


def independent_measures(released: pd.DataFrame) -> tuple[int, int, float]:
    """k (in stays: the copy names no patient) and distinct l by pycanon, an independent implementation."""
    from pycanon import anonymity  # only the audit and the tests need it

    if released.empty:
        return 0, 0, 0.0
    qi, sensitive = list(privacy.QI_FIELDS), list(privacy.SENSITIVE)
    share = max(float(released.groupby(qi, observed=True)[f].value_counts(normalize=True).max()) for f in sensitive)
    return int(anonymity.k_anonymity(released, qi)), int(anonymity.l_diversity(released, qi, sensitive)), share


def _before_label(field: str, level, value) -> str:
    """How the copy released a value before this policy: finest bands, exact length of stay."""
    return str(value) if field == "length_of_stay" else level.label(value)


class Table:
    """Stays as integer codes at every level and as released before this policy, built once to evaluate any scheme."""

    def __init__(self, columns: dict[str, tuple[list, np.ndarray]]):
        self.stays = len(next(iter(columns.values()))[1])
        self.codes: dict[str, list[np.ndarray]] = {}
        self.sizes: dict[str, list[int]] = {}
        self.before: dict[str, tuple[np.ndarray, int]] = {}
        for qi in privacy.QUASI_IDENTIFIERS:
            distinct, inverse = columns[qi.field]
            self.codes[qi.field], self.sizes[qi.field] = [], []
            for level in qi.levels:
                codes, labels = pd.factorize(np.array([level.label(v) for v in distinct], dtype=object))
                self.codes[qi.field].append(_narrow(codes[inverse], len(labels)))
                self.sizes[qi.field].append(len(labels))
            codes, labels = pd.factorize(np.array([_before_label(qi.field, qi.levels[0], v) for v in distinct],
                                                  dtype=object))
            self.before[qi.field] = (_narrow(codes[inverse], len(labels)), len(labels))
        self.sensitive = [(_narrow(columns[f][1], len(columns[f][0])), len(columns[f][0])) for f in privacy.SENSITIVE]
        patients, self.patients = columns[privacy.PERSON][1], len(columns[privacy.PERSON][0])
        # most patients have one stay: only the others need a distinct count per group
        self.repeat = np.bincount(patients, minlength=self.patients)[patients] > 1
        self.repeat_patients = patients[self.repeat]

    @classmethod
    def from_frame(cls, values: pd.DataFrame) -> Table:
        encoder = Encoder()
        for row in values[list(Encoder.FIELDS)].to_dict("records"):
            encoder.add(row)
        return encoder.table()

    def evaluate(self, scheme: privacy.Scheme) -> Evaluation:
        key, space = _keys([(self.codes[q.field][scheme[q.field]], self.sizes[q.field][scheme[q.field]])
                            for q in privacy.QUASI_IDENTIFIERS], self.stays)
        sizes = np.bincount(key, minlength=space)
        people = self.people(key, space)
        commonest = np.zeros(space, dtype=np.int64)
        for codes, values in self.sensitive:
            counts = np.bincount(key * values + codes, minlength=space * values).reshape(space, values)
            commonest = np.maximum(commonest, counts.max(axis=1))
        released = (people >= privacy.K_ANONYMITY) & (commonest <= privacy.MAX_SHARE * sizes)
        return Evaluation(dict(scheme), self.stays, int(sizes[~released].sum()), int(released.sum()),
                          int(people[released].min()) if released.any() else 0,
                          float((commonest[released] / sizes[released]).max()) if released.any() else 0.0)

    def people(self, key: np.ndarray, space: int) -> np.ndarray:
        single = np.bincount(key[~self.repeat], minlength=space)
        pairs = np.unique(key[self.repeat] * self.patients + self.repeat_patients)
        return single + np.bincount(pairs // self.patients, minlength=space)

    def uniqueness_before(self) -> list[dict]:
        rows, columns = [], []
        for added in UNIQUENESS_ROWS:
            columns += [self.before[field] for field in added]
            key, space = _keys(columns, self.stays)
            sizes = np.bincount(key, minlength=space)
            rows.append(_uniqueness_row(added, columns, sizes, self.stays))
        return rows


def _narrow(codes: np.ndarray, size: int) -> np.ndarray:
    """Codes in the fewest bytes that hold them: a level's labels are few (arithmetic on them widens to int64)."""
    return codes.astype(np.min_scalar_type(max(size - 1, 0)))


def _keys(columns: list[tuple[np.ndarray, int]], stays: int) -> tuple[np.ndarray, int]:
    """One group number per stay from its codes (mixed radix), and how many numbers there may be."""
    key = np.zeros(stays, dtype=np.int64)
    space = 1
    for codes, size in columns:
        key = key * size + codes
        space *= size
    if space > 1 << 24:  # a sparse key space: number the groups present instead
        key = np.unique(key, return_inverse=True)[1]
        space = int(key.max()) + 1 if stays else 1
    return key, space


def lattice() -> list[privacy.Scheme]:
    fields = [q.field for q in privacy.QUASI_IDENTIFIERS]
    schemes = [dict(zip(fields, levels, strict=True))
               for levels in itertools.product(*(range(len(q.levels)) for q in privacy.QUASI_IDENTIFIERS))]
    return sorted(schemes, key=generalization_loss)


def choose(table: Table) -> tuple[Evaluation, int]:
    """The scheme of least loss within MAX_SUPPRESSED (else the one holding back fewest stays), and schemes tried."""
    best: Evaluation | None = None
    fallback: Evaluation | None = None
    tried = 0
    for scheme in lattice():
        if best is not None and generalization_loss(scheme) >= best.loss:
            break
        found = table.evaluate(scheme)
        tried += 1
        if found.suppressed_share <= privacy.MAX_SUPPRESSED:
            if best is None or found.loss < best.loss:
                best = found
        elif fallback is None or found.suppressed < fallback.suppressed:
            fallback = found
    return (best or fallback), tried


# What an outsider may know, added one field at a time (the last row is the full set).
UNIQUENESS_ROWS = (("age_range", "gender", "blood_type", "medical_condition"), ("admission_year",),
                   ("length_of_stay",), ("insurance_provider",), ("admission_type",))


def _uniqueness_row(added: tuple, fields: list, sizes, total: int) -> dict:
    return {"quasi_identifiers": ", ".join(added) if len(fields) == len(added) else "+ " + ", ".join(added),
            "stays": total, "unique": round(float(sizes[sizes == 1].sum()) / total, 4) if total else 0.0,
            "under_k": round(float(sizes[sizes < privacy.K_ANONYMITY].sum()) / total, 4) if total else 0.0}


def uniqueness(groups: Iterable[tuple[dict, int]]) -> list[dict]:
    """The uniqueness table of released groups: (field values, stays) pairs."""
    frame = pd.DataFrame([{**group, "_n": n} for group, n in groups])
    total = int(frame["_n"].sum()) if len(frame) else 0
    rows, fields = [], []
    for added in UNIQUENESS_ROWS:
        fields += added
        sizes = frame.groupby(fields)["_n"].sum().to_numpy() if total else np.zeros(0, dtype=int)
        rows.append(_uniqueness_row(added, fields, sizes, total))
    return rows


def uniqueness_markdown(before: list[dict], after: list[dict]) -> str:
    rows = [(b["quasi_identifiers"], f"{b['unique']:.1%}", f"{b['under_k']:.1%}", f"{a['unique']:.1%}",
             f"{a['under_k']:.1%}") for b, a in zip(before, after, strict=True)]
    return tabulate(rows, headers=("quasi-identifiers", "stays unique before", "under k before",
                                   "stays unique released", "under k released"),
                    tablefmt="github", colalign=("left", "right", "right", "right", "right"), disable_numparse=True)
