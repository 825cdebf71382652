"""The scale benchmark's targets, each with its measured figure: a miss is printed, never raised."""

import itertools
import operator

from healthcare_assets.domain import privacy
from healthcare_assets.tooling.bench.exports import BIG_ROWS, COMMITTED_ROWS

LOAD_RATIO_MIN = 0.8
ENCRYPTION_RATIO_MIN = 0.8  # the load's documents/s with field-level encryption, to without
RSS_GROWTH_MAX = 1.25  # the pipeline process's peak, from one size to the next (about 4x rows)
PIPELINE_RSS_MAX_MB = 1024  # from a million rows on
FIRST_RELEASE_S_MAX = 300  # per million rows
LINEAR_SLACK = 1.1  # a stage's time grows at most 1.1x as fast as the rows
SPEEDUP_MIN = 10
DROP_S_MAX = 15  # a 1,000-row file end to end, every step but index_benchmarks, on this machine
DROP_GROWTH_MAX = 1.5  # the same file into the large collection / into an empty one
PEER_RATIO_MAX = 2  # the gated chain to a loaded collection / the client's ungated script without indexes
HUGE_ROWS = 5_000_000  # from this size on, the server's memory is bounded too
HUGE_SERVER_RSS_MAX_MB = 6144
BACKUP_RSS_MAX_MB = 500  # the backup's process, whatever the collection's size
STREAM_HELD_BACK_MAX = privacy.MAX_SUPPRESSED  # of the stays counted, after the stream of drops
STREAM_RSS_MAX_MB = 2048  # the release stream's simulation, at any size benchmarked


def ratio(numerator: float | None, denominator: float | None, digits: int = 3) -> float | None:
    return round(numerator / denominator, digits) if numerator and denominator else None


def target(text: str, measured, met: bool) -> dict:
    return {"target": text, "measured": measured, "met": met}


def bound(text: str, measured: float | None, compare, limit: float) -> dict:
    """`compare` is operator.ge (at least), le (at most) or lt (below); nothing measured misses."""
    return target(text, measured, measured is not None and compare(measured, limit))


def stream_targets(streams: dict[int, dict]) -> list[dict]:
    targets = []
    for size, s in streams.items():
        answerable = sum(s["analyses"].values())
        targets += [bound(f"after {s['drops']} drops of {s['drop_rows']:,} rows, stays held back <= "
                          f"{STREAM_HELD_BACK_MAX:.0%} ({size:,} rows)", s["after_drops"]["held_back_share"],
                          operator.le, STREAM_HELD_BACK_MAX),
                    target(f"median drops a stay waits, reported ({size:,} rows)", s["median_drops_waited"],
                           s["median_drops_waited"] is not None),
                    target(f"the analysts' {len(s['analyses'])} analyses answerable on the release ({size:,} rows)",
                           f"{answerable} of {len(s['analyses'])}", answerable == len(s["analyses"])),
                    bound(f"release stream's simulation at {size:,} rows < {STREAM_RSS_MAX_MB} MB",
                          s["peak_rss_mb"], operator.lt, STREAM_RSS_MAX_MB)]
    return targets


def _scale_targets(results: dict[int, dict]) -> list[dict]:
    """Memory flat in the file's size, the first release of a million rows, and every stage's time at most linear
    in rows (10% slack) from each size to the next."""
    targets = []
    for size, r in results.items():
        if size >= BIG_ROWS:
            targets.append(bound(f"peak RSS of the pipeline process at {size:,} rows < {PIPELINE_RSS_MAX_MB} MB",
                                 r["peak_rss_mb"], operator.lt, PIPELINE_RSS_MAX_MB))
            targets.append(bound(f"the first release (anonymized_view) at {size:,} rows <= {FIRST_RELEASE_S_MAX} s",
                                 r["per_asset"].get("anonymized_view", {}).get("asset_s"), operator.le,
                                 FIRST_RELEASE_S_MAX * size / BIG_ROWS))
        if size >= HUGE_ROWS:
            targets.append(bound(f"peak RSS of the embedded server at {size:,} rows < {HUGE_SERVER_RSS_MAX_MB} MB",
                                 r["server_peak_rss_mb"], operator.lt, HUGE_SERVER_RSS_MAX_MB))
    for small, big in itertools.pairwise(sorted(results)):
        rows, a, b = big / small, results[small], results[big]
        if big < BIG_ROWS:
            targets.append(bound(f"peak RSS of the pipeline process {big:,} / {small:,} rows <= {RSS_GROWTH_MAX}",
                                 ratio(b["peak_rss_mb"], a["peak_rss_mb"], 2), operator.le, RSS_GROWTH_MAX))
        for stage in sorted(a["per_asset"].keys() & b["per_asset"].keys() - {"index_benchmarks"}):  # measurement
            seconds = [x["per_asset"][stage]["asset_s"] + x["per_asset"][stage]["checks_s"] for x in (a, b)]
            if seconds[0]:
                targets.append(bound(f"{stage}: time {big:,} / {small:,} rows <= {LINEAR_SLACK * rows:.2f}",
                                     ratio(seconds[1], seconds[0], 2), operator.le, LINEAR_SLACK * rows))
    return targets


def size_targets(results: dict[int, dict]) -> list[dict]:
    targets = []
    for size, r in results.items():
        if "ceiling" in r:
            load = r["load"]
            targets += [bound(f"load's insert phase / bare insert_many >= {LOAD_RATIO_MIN} ({size:,} rows)",
                              load["insert_ratio_to_bare_insert_many"], operator.ge, LOAD_RATIO_MIN),
                        bound(f"whole load step (index builds in) / bare insert_many >= {LOAD_RATIO_MIN} "
                              f"({size:,} rows)", load["ratio_to_bare_insert_many"], operator.ge, LOAD_RATIO_MIN),
                        bound(f"load docs/s with names encrypted / without >= {ENCRYPTION_RATIO_MIN} ({size:,} rows)",
                              r["ceiling"]["encryption_ratio"], operator.ge, ENCRYPTION_RATIO_MIN)]
    targets += _scale_targets(results)
    targets += [bound(f"backup's process at {size:,} rows < {BACKUP_RSS_MAX_MB} MB", r["backup"]["peak_rss_mb"],
                      operator.lt, BACKUP_RSS_MAX_MB) for size, r in results.items() if "backup" in r]
    for size, r in results.items():
        if rel := r.get("release"):
            targets.append(target(f"the analysts' copy: k >= {privacy.K_ANONYMITY}, no sensitive value over "
                                  f"{privacy.MAX_SHARE:.0%} of a group on every quasi-identifier (pycanon, pandas), "
                                  f"held back <= {privacy.MAX_SUPPRESSED:.0%} ({size:,} rows)",
                                  f"k {rel['k_pycanon']}, largest share {rel['largest_share']:.0%}, "
                                  f"{rel['held_back_share']:.1%}",
                                  rel["k_pycanon"] >= privacy.K_ANONYMITY and rel["largest_share"] <= privacy.MAX_SHARE
                                  and rel["held_back_share"] <= privacy.MAX_SUPPRESSED))
    targets += stream_targets({size: r["release_stream"] for size, r in results.items() if "release_stream" in r})
    small = results.get(COMMITTED_ROWS)
    if small and "index_benchmarks" in small:
        targets += [bound(f"{name}: index >= {SPEEDUP_MIN}x its COLLSCAN (committed data)", q["speedup"],
                          operator.ge, SPEEDUP_MIN) for name, q in small["index_benchmarks"]["queries"].items()]
    return targets


def process_targets(figures: dict) -> list[dict]:
    targets = []
    if scaling := figures.get("drop_scaling"):
        empty, big = scaling["empty"], scaling["big"]
        documents = f"{big['documents_before']:,} documents"
        targets.append(bound(f"drop of {empty['rows']:,} rows: into {documents} / into empty <= {DROP_GROWTH_MAX}",
                             scaling["ratio"], operator.le, DROP_GROWTH_MAX))
        targets += [bound(f"drop of {r['rows']:,} rows into {label}, whole process <= {DROP_S_MAX} s",
                          r["seconds"] if r["success"] else None, operator.le, DROP_S_MAX)
                    for r, label in ((empty, "an empty collection"), (big, documents))]
    if both := figures.get("concurrent_drops"):
        sizes = " and ".join(f"{r['rows']:,}" for r in both["runs"])
        targets += [target(f"two drops at once ({sizes} rows): both succeed, each loads its own file",
                           "yes" if both["success"] else "no", both["success"]),
                    target("after them, the analysts' copy equals the view (documents: copy/view)",
                           f"{both['copy_documents']:,}/{both['view_documents']:,}",
                           both["copy_equals_view"] and both["view_documents"] > 0)]
    if peer := figures.get("client_comparison"):
        targets.append(bound(f"gated chain to a loaded collection / client's approach without indexes <= {PEER_RATIO_MAX} "
                             f"(median of {len(peer['ours_s'])})", peer["ratio"], operator.le, PEER_RATIO_MAX))
    return targets
