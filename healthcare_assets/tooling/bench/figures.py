"""The figures one size of the scale benchmark measures, typed: the row a child prints as JSON and
the parent reads back, prints and writes to bench.json."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

# A part left out of the JSON while it is None: the size stopped before it, or never measures it.
OMITTED_WHEN_NONE = {"omitted_when_none": True}


def as_json(value: Any) -> Any:
    """Plain JSON values of nested dataclasses, without the parts that were not measured."""
    if is_dataclass(value):
        return {f.name: as_json(v) for f in fields(value)
                if not ((v := getattr(value, f.name)) is None and f.metadata.get("omitted_when_none"))}
    if isinstance(value, dict):
        return {k: as_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_json(v) for v in value]
    return value


@dataclass
class StepTiming:
    """One step of a run: its seconds, and the peak RSS of the pipeline process and the server meanwhile."""

    s: float
    peak_rss_mb: float
    server_peak_rss_mb: float


@dataclass
class AssetTiming:
    """An asset's own step and its checks' steps, together."""

    asset_s: float = 0.0
    checks_s: float = 0.0
    peak_rss_mb: float = 0.0
    server_peak_rss_mb: float = 0.0


@dataclass
class StepFailure:
    step: str
    error: str


@dataclass
class LoadFigures:
    """The load's documents and seconds as its metadata has them; against the insert_many ceiling
    when that was measured."""

    documents: int
    rows_in: int
    load_s: float
    insert_s: float
    index_build_s: float
    docs_per_s: int | None
    insert_docs_per_s: int | None
    ratio_to_bare_insert_many: float | None = field(default=None, metadata=OMITTED_WHEN_NONE)
    insert_ratio_to_bare_insert_many: float | None = field(default=None, metadata=OMITTED_WHEN_NONE)
    ratio_to_validated_insert_many: float | None = field(default=None, metadata=OMITTED_WHEN_NONE)


@dataclass
class CeilingFigures:
    """The load's documents inserted again with a bare insert_many, each phase timed apart."""

    documents: int
    batch: int
    build_s: float
    encrypt_s: float
    bare_s: float
    validated_s: float
    build_docs_per_s: int | None
    encrypt_docs_per_s: int | None
    bare_docs_per_s: int | None
    validated_docs_per_s: int | None
    encryption_ratio: float | None


@dataclass
class ReleaseFigures:
    """The release's own figures, and k and l measured on the analysts' copy by pycanon."""

    released: int
    k_pycanon: int
    l_pycanon: int
    largest_share: float  # of one sensitive value in a released group
    judge_s: float
    stays_counted: int
    stays_held_back: int
    held_back_share: float
    groups_held_back: int
    generalization: dict
    uniqueness: str


@dataclass
class QueryFigures:
    speedup: float | None
    indexed_median_ms: float
    indexed_p95_ms: float
    collscan_median_ms: float
    pandas_median_ms: float | None
    plan: str
    rows: int


@dataclass
class IndexFigures:
    """What the index_benchmarks asset's report says, per query."""

    documents: int
    index_build_s: float
    min_speedup: float | None
    queries: dict[str, QueryFigures]

    @classmethod
    def from_json(cls, data: dict) -> IndexFigures:
        return cls(**{**data, "queries": {name: QueryFigures(**q) for name, q in data["queries"].items()}})


@dataclass
class BackupFigures:
    """A backup of every database of the deployment, written then read back in a process of its own."""

    documents: int
    bytes: int
    backup_s: float
    verify_s: float
    peak_rss_mb: float


@dataclass
class SizeRun:
    """One size: the chain, the ceiling and the index benchmarks (in the child), then the whole
    child process's seconds, the export's generation and the backup (in the parent)."""

    size: int
    csv: str
    database: str
    success: bool
    checks: dict[str, bool]
    pipeline_run_s: float
    failures: list[StepFailure]
    load: LoadFigures | None = field(default=None, metadata=OMITTED_WHEN_NONE)
    release: ReleaseFigures | None = field(default=None, metadata=OMITTED_WHEN_NONE)
    ceiling: CeilingFigures | None = field(default=None, metadata=OMITTED_WHEN_NONE)
    index_benchmarks: IndexFigures | None = field(default=None, metadata=OMITTED_WHEN_NONE)
    steps: dict[str, StepTiming] = field(default_factory=dict)
    per_asset: dict[str, AssetTiming] = field(default_factory=dict)
    pipeline_s: float = 0.0
    peak_rss_mb: float = 0.0
    server_peak_rss_mb: float = 0.0
    process_peak_rss_mb: float = 0.0
    process_s: float | None = field(default=None, metadata=OMITTED_WHEN_NONE)
    generate_s: float | None = field(default=None, metadata=OMITTED_WHEN_NONE)
    backup: BackupFigures | None = field(default=None, metadata=OMITTED_WHEN_NONE)

    @classmethod
    def from_json(cls, data: dict) -> SizeRun:
        parts = {"load": LoadFigures, "release": ReleaseFigures, "ceiling": CeilingFigures, "backup": BackupFigures}
        typed = {name: kind(**data[name]) for name, kind in parts.items() if data.get(name) is not None}
        if data.get("index_benchmarks") is not None:
            typed["index_benchmarks"] = IndexFigures.from_json(data["index_benchmarks"])
        return cls(**{**data, **typed, "failures": [StepFailure(**f) for f in data["failures"]],
                      "steps": {k: StepTiming(**v) for k, v in data["steps"].items()},
                      "per_asset": {k: AssetTiming(**v) for k, v in data["per_asset"].items()}})
