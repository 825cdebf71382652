"""Generalization levels: a value's label computed alike in Python and in a MongoDB expression, and labels allowed."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any


def band(value: float, bands: tuple) -> str:
    label = bands[0][1]
    for lower, name in bands:
        if value >= lower:
            label = name
    return label




HIDDEN = "*"


@dataclass(frozen=True)
class Exact:
    """The category itself, from a closed set."""

    categories: tuple[str, ...]

    def label(self, value: Any) -> str:
        return str(value)

    def expression(self, value: Any) -> Any:
        return value

    def allows(self, label: Any) -> bool:
        return label in self.categories

    def describe(self) -> str:
        return "exact"


@dataclass(frozen=True)
class Bands:
    """A number in its range: (lower bound, label), ascending."""

    bounds: tuple[tuple[float, str], ...]

    def label(self, value: float) -> str:
        return band(value, self.bounds)

    def expression(self, value: Any) -> dict:
        branches = [{"case": {"$lt": [value, upper]}, "then": label}
                    for (_, label), (upper, _) in itertools.pairwise(self.bounds)]
        return {"$switch": {"branches": branches, "default": self.bounds[-1][1]}}

    def allows(self, label: Any) -> bool:
        return label in {name for _, name in self.bounds}

    def describe(self) -> str:
        return "bands " + ", ".join(name for _, name in self.bounds)


@dataclass(frozen=True)
class Span:
    """A year in a span of `width` years starting at a multiple of it: "2023", or "2022-2023"."""

    width: int

    def label(self, year: int) -> str:
        start = year - year % self.width
        return str(start) if self.width == 1 else f"{start}-{start + self.width - 1}"

    def expression(self, year: Any) -> dict:
        if self.width == 1:
            return {"$toString": year}
        start = {"$subtract": [year, {"$mod": [year, self.width]}]}
        return {"$concat": [{"$toString": start}, "-", {"$toString": {"$add": [start, self.width - 1]}}]}

    def allows(self, label: Any) -> bool:
        parts = label.split("-") if isinstance(label, str) else []
        if not all(p.isdigit() and len(p) == 4 for p in parts) or len(parts) != (1 if self.width == 1 else 2):
            return False
        return self.label(int(parts[0])) == label

    def describe(self) -> str:
        return "year" if self.width == 1 else f"{self.width}-year spans"


@dataclass(frozen=True)
class Merge:
    """Categories merged into wider ones: (label, members); anything else is "other"."""

    groups: tuple[tuple[str, tuple[str, ...]], ...]

    def label(self, value: Any) -> str:
        return next((label for label, members in self.groups if value in members), "other")

    def expression(self, value: Any) -> dict:
        branches = [{"case": {"$in": [value, list(members)]}, "then": label} for label, members in self.groups]
        return {"$switch": {"branches": branches, "default": "other"}}

    def allows(self, label: Any) -> bool:
        return label in {"other", *(name for name, _ in self.groups)}

    def describe(self) -> str:
        return "merged into " + ", ".join(name for name, _ in self.groups)


@dataclass(frozen=True)
class Hidden:
    """Not released: every stay shows "*"."""

    def label(self, value: Any) -> str:
        return HIDDEN

    def expression(self, value: Any) -> dict:
        return {"$literal": HIDDEN}

    def allows(self, label: Any) -> bool:
        return label == HIDDEN

    def describe(self) -> str:
        return "hidden (*)"
