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
class StreamSnapshot:
    """The analysts' release at one moment of the simulated stream: stays counted, and how they stand."""

    counted: int
    released: int
    pending: int  # waiting in released groups
    held_back: int  # in groups never released
    released_share: float
    pending_share: float
    held_back_share: float
    groups_released: int
    groups_held_back: int
    waiting_for_patients: int
    waiting_for_diversity: int


@dataclass
class ReleaseStreamFigures:
    """A first release of a base export, then a stream of drops, through the release policy's own
    code without a database (healthcare_assets.tooling.bench.release_stream)."""

    size: int  # rows of the base export
    drops: int
    drop_rows: int
    generalization: dict[str, str]  # quasi-identifier -> how the chosen scheme releases it
    generalization_loss: float
    schemes_tried: int
    chosen_held_back: int  # stays the chosen scheme holds back, as generalization.choose measured them
    first_release: StreamSnapshot
    after_drops: StreamSnapshot
    drop_stays: int  # stays the drops counted (a stay an earlier file brought is not counted again)
    drop_stays_released: int  # of those, released by the end
    drop_released_share: float
    held_back_released_by_drops: int  # base stays held back by the first release, released by a drop
    median_drops_waited: float | None  # by the stays the drops released
    p90_drops_waited: float | None
    waits: dict[str, int]  # drops waited -> stays
    median_drops_unreleased: float | None  # waited so far by the stays still pending or held back
    unreleased_waits: dict[str, int]  # drops waited so far -> stays still pending or held back
    analyses: dict[str, bool]  # the analysts' analyses: answerable on the release?
    replan_at_drop: int | None  # the first drop after which the pipeline would choose the scheme again
    replan_reason: str | None
    seconds: float = 0.0
    peak_rss_mb: float = 0.0

    @classmethod
    def from_json(cls, data: dict) -> ReleaseStreamFigures:
        return cls(**{**data, "first_release": StreamSnapshot(**data["first_release"]),
                      "after_drops": StreamSnapshot(**data["after_drops"])})


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
    release_stream: ReleaseStreamFigures | None = field(default=None, metadata=OMITTED_WHEN_NONE)

    @classmethod
    def from_json(cls, data: dict) -> SizeRun:
        parts = {"load": LoadFigures, "release": ReleaseFigures, "ceiling": CeilingFigures, "backup": BackupFigures}
        typed = {name: kind(**data[name]) for name, kind in parts.items() if data.get(name) is not None}
        if data.get("index_benchmarks") is not None:
            typed["index_benchmarks"] = IndexFigures.from_json(data["index_benchmarks"])
        if data.get("release_stream") is not None:
            typed["release_stream"] = ReleaseStreamFigures.from_json(data["release_stream"])
        return cls(**{**data, **typed, "failures": [StepFailure(**f) for f in data["failures"]],
                      "steps": {k: StepTiming(**v) for k, v in data["steps"].items()},
                      "per_asset": {k: AssetTiming(**v) for k, v in data["per_asset"].items()}})
