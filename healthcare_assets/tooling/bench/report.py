"""What the scale benchmark prints (tables per size, the whole processes, the targets) and the
report it writes to `$HEALTHCARE_DATA_DIR/reports/bench.json`."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import psutil

from healthcare_assets.plumbing import settings
from healthcare_assets.tooling.bench.drops import DropRun
from healthcare_assets.tooling.bench.figures import ReleaseStreamFigures, SizeRun, as_json
from healthcare_assets.tooling.bench.processes import ProcessFigures
from healthcare_assets.tooling.bench.sizes import scan_repeats_for
from healthcare_assets.tooling.bench.targets import Target

Row = Callable[[str, Callable[[SizeRun], str]], None]


def _size_table(results: dict[int, SizeRun]) -> Row:
    """A printer of one line of the sizes side by side; "-" where a size stopped early."""
    def row(label: str, value: Callable[[SizeRun], str]) -> None:
        cells = []
        for r in results.values():
            try:
                cells.append(value(r))
            except (AttributeError, KeyError, TypeError):  # that size stopped before this figure
                cells.append("-")
        print(f"{label:38}" + "".join(f"{c:>22}" for c in cells))
    return row


def _print_chain(results: dict[int, SizeRun], row: Row) -> None:
    print("\n== chain, per size: step s + its checks s, peak RSS MB of the pipeline process / server ==")
    print(f"{'':38}" + "".join(f"{s:>22,}" for s in results))
    for asset in dict.fromkeys(a for r in results.values() for a in r.per_asset):
        row(asset, lambda r, a=asset: (f"{r.per_asset[a].asset_s:.1f}+{r.per_asset[a].checks_s:.1f}s "
                                       f"{r.per_asset[a].peak_rss_mb:,.0f}/{r.per_asset[a].server_peak_rss_mb:,.0f}"))
    row("pipeline s (w/o index_benchmarks)", lambda r: f"{r.pipeline_s:.1f}")
    row("load s: insert + index builds", lambda r: f"{r.load.insert_s:.1f}+{r.load.index_build_s:.1f}")
    row("load docs/s", lambda r: f"{r.load.docs_per_s:,}")
    row("load's insert phase docs/s", lambda r: f"{r.load.insert_docs_per_s:,}")
    row("bare insert_many docs/s", lambda r: f"{r.ceiling.bare_docs_per_s:,}")
    row("insert_many like the load's coll", lambda r: f"{r.ceiling.validated_docs_per_s:,}")
    row("building the documents docs/s", lambda r: f"{r.ceiling.build_docs_per_s:,}")
    row("encrypting their names docs/s", lambda r: f"{r.ceiling.encrypt_docs_per_s:,}")
    row("load with / without encryption", lambda r: f"{r.ceiling.encryption_ratio}")
    row("load / bare insert_many", lambda r: f"{r.load.ratio_to_bare_insert_many:.2f}")
    row("load's insert phase / bare", lambda r: f"{r.load.insert_ratio_to_bare_insert_many:.2f}")
    row("load / insert_many like the load's", lambda r: f"{r.load.ratio_to_validated_insert_many:.2f}")
    row("peak RSS MB, pipeline process", lambda r: f"{r.peak_rss_mb:,.0f}")
    row("peak RSS MB, embedded server", lambda r: f"{r.server_peak_rss_mb:,.0f}")
    row("backup: documents, MB", lambda r: f"{r.backup.documents:,}, {r.backup.bytes / 2**20:,.1f}")
    row("backup s + reading it back s", lambda r: f"{r.backup.backup_s:.1f}+{r.backup.verify_s:.1f}")
    row("backup's peak RSS MB", lambda r: f"{r.backup.peak_rss_mb:,.0f}")
    row("index build s (7 indexes)", lambda r: f"{r.index_benchmarks.index_build_s:.1f}")
    row("released: stays, k/l, largest share", lambda r: f"{r.release.released:,} k{r.release.k_pycanon} "
                                                         f"l{r.release.l_pycanon} {r.release.largest_share:.0%}")
    row("held back (suppressed)", lambda r: f"{r.release.stays_held_back:,} {r.release.held_back_share:.1%}")


def print_sizes(results: dict[int, SizeRun]) -> None:
    row = _size_table(results)
    _print_chain(results, row)
    for r in results.values():
        if r.release:
            print(f"\n== release of {r.size:,} rows: generalization and uniqueness ==")
            print("\n".join(f"  {field}: {level}" for field, level in r.release.generalization.items()))
            print(r.release.uniqueness)
    print_streams({size: r.release_stream for size, r in results.items() if r.release_stream})
    names = next((list(r.index_benchmarks.queries) for r in results.values() if r.index_benchmarks), [])
    print("\n== index queries: speedup (COLLSCAN median / indexed median), indexed median ms ==")
    for name in names:
        row(name, lambda r, n=name: (f"{r.index_benchmarks.queries[n].speedup}x "
                                     f"{r.index_benchmarks.queries[n].indexed_median_ms:,.0f}ms"))


def print_streams(streams: dict[int, ReleaseStreamFigures]) -> None:
    """The release streams side by side (release_stream.py), then each one's scheme."""
    if not streams:
        return
    one = next(iter(streams.values()))
    print(f"\n== the analysts' release as a stream (simulated, no database): the first release of the export, "
          f"then {one.drops} drops of {one.drop_rows:,} rows ==")

    def row(label: str, value: Callable[[ReleaseStreamFigures], str]) -> None:
        print(f"{label:46}" + "".join(f"{value(s):>26}" for s in streams.values()))

    row("", lambda s: f"{s.size:,} rows")
    for moment, at in (("first release", lambda s: s.first_release), ("after the drops", lambda s: s.after_drops)):
        row(f"{moment}: stays counted", lambda s, at=at: f"{at(s).counted:,}")
        row("  released / pending / held back", lambda s, at=at: (f"{at(s).released_share:.1%} / "
                                                                 f"{at(s).pending_share:.1%} / {at(s).held_back_share:.1%}"))
        row("  groups released / held back", lambda s, at=at: f"{at(s).groups_released:,} / {at(s).groups_held_back:,}")
        row("  waiting for patients / for diversity", lambda s, at=at: (f"{at(s).waiting_for_patients:,} / "
                                                                       f"{at(s).waiting_for_diversity:,}"))
    row("drops' stays counted, released by the end", lambda s: f"{s.drop_stays:,}, {s.drop_released_share:.1%}")
    row("held back at first, released by a drop", lambda s: f"{s.held_back_released_by_drops:,}")
    row("drops a released stay waited: median / p90", lambda s: f"{s.median_drops_waited} / {s.p90_drops_waited}")
    row("  an unreleased stay so far: median", lambda s: f"{s.median_drops_unreleased}")
    row("scheme would be chosen again after drop", lambda s: str(s.replan_at_drop or "none"))
    row("analysts' analyses answerable", lambda s: f"{sum(s.analyses.values())} of {len(s.analyses)}")
    row("simulation s, peak RSS MB", lambda s: f"{s.seconds:,.0f}, {s.peak_rss_mb:,.0f}")
    for s in streams.values():
        print(f"  {s.size:,} rows, scheme (loss {s.generalization_loss}): "
              + "; ".join(f"{field} {how}" for field, how in s.generalization.items()))
        if s.replan_reason:
            print(f"  {s.size:,} rows, after drop {s.replan_at_drop}: {s.replan_reason} (the stream keeps the first scheme)")
        unanswerable = [name for name, ok in s.analyses.items() if not ok]
        if unanswerable:
            print(f"  {s.size:,} rows, not answerable: {', '.join(unanswerable)}")


def _print_drops(runs: list[DropRun]) -> None:
    """Each drop's whole process, what it loaded, then its steps side by side."""
    def row(label: str, cells) -> None:
        print(f"{label:48}" + "".join(f"{c:>22}" for c in cells))

    row("", (r.name for r in runs))
    row("documents / indexes before", (f"{r.documents_before:,} / {r.indexes_before}" for r in runs))
    row("whole process s (exit 0)", (f"{r.seconds:.1f} ({'yes' if r.exited_ok else 'NO'})" for r in runs))
    row("its file's rows loaded / documents with it", (f"{r.rows_loaded}/{r.documents_with_file:,}" for r in runs))
    row("loaded its own file", ("yes" if r.loaded_own_file else "NO: another" for r in runs))
    row("  outside the steps s", (f"{r.outside_steps_s:.1f}" for r in runs))
    for step in dict.fromkeys(s for r in runs for s in r.steps):
        row(f"  {step}", (r.steps.get(step, "-") for r in runs))


def print_processes(figures: ProcessFigures) -> None:
    if figures.drop_scaling:
        print("\n== a new 1,000-row file through s3_csv_drop_job (`dagster job execute`), empty vs large ==")
        _print_drops([figures.drop_scaling.empty, figures.drop_scaling.big])
        print(f"{'large / empty':48}{figures.drop_scaling.ratio!s:>22}")
    if figures.concurrent_drops:
        both = figures.concurrent_drops
        print("\n== two drops started at the same moment, into one database ==")
        _print_drops(both.runs)
        print(f"analysts' copy {both.copy_documents:,} documents, view {both.view_documents:,}, "
              f"equal: {'yes' if both.copy_equals_view else 'NO'}")
    if figures.client_comparison:
        peer = figures.client_comparison
        print("\n== to a loaded collection, whole processes: the gated chain vs the client's approach ==")
        print(f"gated chain (dagster asset materialize)  median {peer.ours_median_s} s of {peer.ours_s}")
        print(f"client's approach (client_approach.py)   median {peer.theirs_median_s} s of {peer.theirs_s}")
        print(f"ratio {peer.ratio}" + (f"; failed: {peer.failures}" if peer.failures else ""))


def print_targets(targets: list[Target]) -> None:
    print("\n== targets ==")
    for t in targets:
        print(f"{'met ' if t.met else 'MISS'}  {t.target:78} {t.measured}")


def write_report(path: Path, args, results: dict[int, SizeRun], figures: ProcessFigures, targets: list[Target]) -> None:
    report = {"measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "memory_gb": round(psutil.virtual_memory().total / 2**30, 1)},
              "repeats": args.repeats, "scan_repeats": {str(size): scan_repeats_for(size, args) for size in results},
              "sizes": {str(k): as_json(v) for k, v in results.items()}, "processes": asdict(figures),
              "targets": [asdict(t) for t in targets]}
    settings.write_owner_only(path, json.dumps(report, indent=2))
