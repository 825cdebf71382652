"""The scale benchmark's targets: speed and memory figures it measures against them. A missed
target is printed, never raised; the tests assert none of them."""

from __future__ import annotations

from dataclasses import dataclass

from healthcare_assets.domain import privacy
from healthcare_assets.tooling.bench.exports import COMMITTED_ROWS
from healthcare_assets.tooling.bench.figures import ReleaseStreamFigures, SizeRun

# The targets.
LOAD_RATIO_MIN = 0.8
ENCRYPTION_RATIO_MIN = 0.8  # the load's documents/s with field-level encryption, to without
RSS_MAX_MB = 1500
RSS_GROWTH_MAX = 1.5
WALL_GROWTH_MAX = 25
SPEEDUP_MIN = 10
DROP_S_MAX = 15  # a 1,000-row file end to end, every step but index_benchmarks, on this machine
DROP_GROWTH_MAX = 1.5  # the same file into the large collection / into an empty one
PEER_RATIO_MAX = 2  # the gated chain to a loaded collection / the client's ungated script
HUGE_ROWS = 5_000_000  # from this size on, the memory targets below hold as well
HUGE_RSS_MAX_MB = 1024
HUGE_SERVER_RSS_MAX_MB = 6144
BACKUP_RSS_MAX_MB = 500  # the backup's process, whatever the collection's size
STREAM_HELD_BACK_MAX = privacy.MAX_SUPPRESSED  # of the stays counted, after the stream of drops
STREAM_RSS_MAX_MB = 2048  # the release stream's simulation, at any size benchmarked


@dataclass
class Target:
    """One target and the figure measured against it."""

    target: str
    measured: float | int | str | None
    met: bool

    @classmethod
    def at_least(cls, target: str, measured: float | None, minimum: float) -> Target:
        return cls(target, measured, measured is not None and measured >= minimum)

    @classmethod
    def at_most(cls, target: str, measured: float | None, maximum: float) -> Target:
        return cls(target, measured, measured is not None and measured <= maximum)

    @classmethod
    def below(cls, target: str, measured: float | None, limit: float) -> Target:
        return cls(target, measured, measured is not None and measured < limit)


def ratio(numerator: float | None, denominator: float | None, digits: int = 3) -> float | None:
    return round(numerator / denominator, digits) if numerator and denominator else None


def _memory_targets(results: dict[int, SizeRun]) -> list[Target]:
    small, targets = results.get(COMMITTED_ROWS), []
    for size, big in results.items():
        if size < 1_000_000:
            continue
        targets.append(Target.below(f"peak RSS at {size:,} rows < {RSS_MAX_MB} MB", big.peak_rss_mb, RSS_MAX_MB))
        if size >= HUGE_ROWS:
            targets.append(Target.below(f"peak RSS of the pipeline process at {size:,} rows < {HUGE_RSS_MAX_MB} MB",
                                        big.peak_rss_mb, HUGE_RSS_MAX_MB))
            targets.append(Target.below(f"peak RSS of the embedded server at {size:,} rows < {HUGE_SERVER_RSS_MAX_MB} MB",
                                        big.server_peak_rss_mb, HUGE_SERVER_RSS_MAX_MB))
        if small:
            targets.append(Target.at_most(f"peak RSS {size:,} / 55,500 rows <= {RSS_GROWTH_MAX}",
                                          ratio(big.peak_rss_mb, small.peak_rss_mb, 2), RSS_GROWTH_MAX))
            limit = WALL_GROWTH_MAX * size / 1_000_000
            targets.append(Target.at_most(f"pipeline wall time {size:,} / 55,500 rows <= {limit:g}",
                                          ratio(big.pipeline_s, small.pipeline_s, 2), limit))
    return targets


def stream_targets(streams: dict[int, ReleaseStreamFigures]) -> list[Target]:
    """The release stream's (release_stream.py): after the drops, at most STREAM_HELD_BACK_MAX of
    the stays held back (released or pending in released groups: the rest); the median wait
    reported; the analysts' analyses answerable."""
    targets = []
    for size, s in streams.items():
        targets.append(Target.at_most(f"after {s.drops} drops of {s.drop_rows:,} rows, stays held back <= "
                                      f"{STREAM_HELD_BACK_MAX:.0%} ({size:,} rows)",
                                      s.after_drops.held_back_share, STREAM_HELD_BACK_MAX))
        targets.append(Target(f"median drops a stay waits, reported ({size:,} rows)", s.median_drops_waited,
                              s.median_drops_waited is not None))
        targets.append(Target(f"the analysts' {len(s.analyses)} analyses answerable on the release ({size:,} rows)",
                              f"{sum(s.analyses.values())} of {len(s.analyses)}", all(s.analyses.values())))
        targets.append(Target.below(f"release stream's simulation at {size:,} rows < {STREAM_RSS_MAX_MB} MB",
                                    s.peak_rss_mb, STREAM_RSS_MAX_MB))
    return targets


def evaluate(results: dict[int, SizeRun]) -> list[Target]:
    """The targets on each size's figures, each with the measured figure; only for the sizes that ran."""
    targets = []
    for size, r in results.items():
        if r.ceiling:
            targets.append(Target.at_least(f"load's insert phase / bare insert_many >= {LOAD_RATIO_MIN} ({size:,} rows)",
                                           r.load.insert_ratio_to_bare_insert_many, LOAD_RATIO_MIN))
            targets.append(Target.at_least(f"whole load step (index builds in) / bare insert_many >= {LOAD_RATIO_MIN} "
                                           f"({size:,} rows)", r.load.ratio_to_bare_insert_many, LOAD_RATIO_MIN))
            targets.append(Target.at_least(f"load docs/s with names encrypted / without >= {ENCRYPTION_RATIO_MIN} "
                                           f"({size:,} rows)", r.ceiling.encryption_ratio, ENCRYPTION_RATIO_MIN))
    targets += _memory_targets(results)
    for size, r in results.items():
        if r.backup:
            targets.append(Target.below(f"backup's process at {size:,} rows < {BACKUP_RSS_MAX_MB} MB",
                                        r.backup.peak_rss_mb, BACKUP_RSS_MAX_MB))
    for size, r in results.items():
        if r.release:
            rel = r.release
            targets.append(Target(f"the analysts' copy: k >= {privacy.K_ANONYMITY}, no sensitive value over "
                                  f"{privacy.MAX_SHARE:.0%} of a group on every quasi-identifier (pycanon, pandas), "
                                  f"held back <= {privacy.MAX_SUPPRESSED:.0%} ({size:,} rows)",
                                  f"k {rel.k_pycanon}, largest share {rel.largest_share:.0%}, {rel.held_back_share:.1%}",
                                  rel.k_pycanon >= privacy.K_ANONYMITY and rel.largest_share <= privacy.MAX_SHARE
                                  and rel.held_back_share <= privacy.MAX_SUPPRESSED))
    targets += stream_targets({size: r.release_stream for size, r in results.items() if r.release_stream})
    small = results.get(COMMITTED_ROWS)
    if small and small.index_benchmarks:
        for name, q in small.index_benchmarks.queries.items():
            targets.append(Target.at_least(f"{name}: index >= {SPEEDUP_MIN}x its COLLSCAN (committed data)",
                                           q.speedup, SPEEDUP_MIN))
    return targets
