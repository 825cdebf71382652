"""What the scale benchmark prints (tables side by side, the targets) and bench.json."""

import datetime as dt
import json
import os
import platform
from pathlib import Path

import psutil

from healthcare_assets.plumbing import settings


def table(columns, rows, label: int = 38, width: int = 22) -> None:
    """A row is a format string over each column's figures, or a function of them; "-" where missing."""
    for name, cell in rows:
        cells = []
        for c in columns:
            try:
                cells.append(cell(c) if callable(cell) else cell.format(**c))
            except (AttributeError, KeyError, TypeError):
                cells.append("-")
        print(f"{name:{label}}" + "".join(f"{c:>{width}}" for c in cells))


def _asset_cell(a: str):
    return lambda r: (f"{r['per_asset'][a]['asset_s']:.1f}+{r['per_asset'][a]['checks_s']:.1f}s "
                      f"{r['per_asset'][a]['peak_rss_mb']:,.0f}/{r['per_asset'][a]['server_peak_rss_mb']:,.0f}")


SIZE_ROWS = (
    ("pipeline s (w/o index_benchmarks)", "{pipeline_s:.1f}"),
    ("load s: insert + index builds", "{load[insert_s]:.1f}+{load[index_build_s]:.1f}"),
    ("load docs/s", "{load[docs_per_s]:,}"), ("load's insert phase docs/s", "{load[insert_docs_per_s]:,}"),
    ("bare insert_many docs/s", "{ceiling[bare_docs_per_s]:,}"),
    ("insert_many like the load's coll", "{ceiling[validated_docs_per_s]:,}"),
    ("building the documents docs/s", "{ceiling[build_docs_per_s]:,}"),
    ("encrypting their names docs/s", "{ceiling[encrypt_docs_per_s]:,}"),
    ("load with / without encryption", "{ceiling[encryption_ratio]}"),
    ("load / bare insert_many", "{load[ratio_to_bare_insert_many]:.2f}"),
    ("load's insert phase / bare", "{load[insert_ratio_to_bare_insert_many]:.2f}"),
    ("load / insert_many like the load's", "{load[ratio_to_validated_insert_many]:.2f}"),
    ("peak RSS MB, pipeline process", "{peak_rss_mb:,.0f}"),
    ("peak RSS MB, embedded server", "{server_peak_rss_mb:,.0f}"),
    ("backup: documents, MB", lambda r: f"{r['backup']['documents']:,}, {r['backup']['bytes'] / 2**20:,.1f}"),
    ("backup s + reading it back s", "{backup[backup_s]:.1f}+{backup[verify_s]:.1f}"),
    ("backup's peak RSS MB", "{backup[peak_rss_mb]:,.0f}"),
    ("index build s (7 indexes)", "{index_benchmarks[index_build_s]:.1f}"),
    ("released: stays, k/l, largest share",
     "{release[released]:,} k{release[k_pycanon]} l{release[l_pycanon]} {release[largest_share]:.0%}"),
    ("held back (suppressed)", "{release[stays_held_back]:,} {release[held_back_share]:.1%}"),
)


def print_sizes(results: dict[int, dict]) -> None:
    runs = list(results.values())
    print("\n== chain, per size: step s + its checks s, peak RSS MB of the pipeline process / server ==")
    assets = dict.fromkeys(a for r in runs for a in r["per_asset"])
    table(runs, [("", "{size:,}"), *((a, _asset_cell(a)) for a in assets), *SIZE_ROWS])
    for r in runs:
        if "release" in r:
            print(f"\n== release of {r['size']:,} rows: generalization and uniqueness ==")
            print("\n".join(f"  {field}: {level}" for field, level in r["release"]["generalization"].items()))
            print(r["release"]["uniqueness"])
    print_streams({size: r["release_stream"] for size, r in results.items() if "release_stream" in r})
    names = next((list(r["index_benchmarks"]["queries"]) for r in runs if "index_benchmarks" in r), [])
    print("\n== index queries: speedup (COLLSCAN median / indexed median), indexed median ms ==")
    table(runs, [(n, lambda r, n=n: f"{r['index_benchmarks']['queries'][n]['speedup']}x "
                                    f"{r['index_benchmarks']['queries'][n]['indexed_median_ms']:,.0f}ms") for n in names])


def _moment_rows(moment: str, key: str) -> list:
    share = "{%s[released_share]:.1%%} / {%s[pending_share]:.1%%} / {%s[held_back_share]:.1%%}" % ((key,) * 3)
    return [(f"{moment}: stays counted", f"{{{key}[counted]:,}}"), ("  released / pending / held back", share),
            ("  groups released / held back", f"{{{key}[groups_released]:,}} / {{{key}[groups_held_back]:,}}"),
            ("  waiting for patients / for diversity",
             f"{{{key}[waiting_for_patients]:,}} / {{{key}[waiting_for_diversity]:,}}")]


def print_streams(streams: dict[int, dict]) -> None:
    if not streams:
        return
    one = next(iter(streams.values()))
    print(f"\n== the analysts' release as a stream (simulated, no database): the first release of the export, "
          f"then {one['drops']} drops of {one['drop_rows']:,} rows ==")
    table(list(streams.values()), [
        ("", "{size:,} rows"), *_moment_rows("first release", "first_release"),
        *_moment_rows("after the drops", "after_drops"),
        ("drops' stays counted, released by the end", "{drop_stays:,}, {drop_released_share:.1%}"),
        ("held back at first, released by a drop", "{held_back_released_by_drops:,}"),
        ("drops a released stay waited: median / p90", "{median_drops_waited} / {p90_drops_waited}"),
        ("  an unreleased stay so far: median", "{median_drops_unreleased}"),
        ("scheme would be chosen again after drop", lambda s: str(s["replan_at_drop"] or "none")),
        ("analysts' analyses answerable", lambda s: f"{sum(s['analyses'].values())} of {len(s['analyses'])}"),
        ("simulation s, peak RSS MB", "{seconds:,.0f}, {peak_rss_mb:,.0f}")], label=46, width=26)
    for s in streams.values():
        print(f"  {s['size']:,} rows, scheme (loss {s['generalization_loss']}): "
              + "; ".join(f"{field} {how}" for field, how in s["generalization"].items()))
        if s["replan_reason"]:
            print(f"  {s['size']:,} rows, after drop {s['replan_at_drop']}: {s['replan_reason']} "
                  "(the stream keeps the first scheme)")
        if unanswerable := [name for name, ok in s["analyses"].items() if not ok]:
            print(f"  {s['size']:,} rows, not answerable: {', '.join(unanswerable)}")


def _print_drops(runs: list[dict]) -> None:
    table(runs, [("", "{name}"), ("documents / indexes before", "{documents_before:,} / {indexes_before}"),
                 ("whole process s (exit 0)", lambda r: f"{r['seconds']:.1f} ({'yes' if r['exited_ok'] else 'NO'})"),
                 ("its file's rows loaded / documents with it", "{rows_loaded}/{documents_with_file:,}"),
                 ("loaded its own file", lambda r: "yes" if r["loaded_own_file"] else "NO: another"),
                 ("  outside the steps s", "{outside_steps_s:.1f}"),
                 *((f"  {s}", lambda r, s=s: str(r["steps"].get(s, "-"))) for s in dict.fromkeys(
                     s for r in runs for s in r["steps"]))], label=48)


def print_processes(figures: dict) -> None:
    if scaling := figures.get("drop_scaling"):
        print("\n== a new 1,000-row file through s3_csv_drop_job (`dagster job execute`), empty vs large ==")
        _print_drops([scaling["empty"], scaling["big"]])
        print(f"{'large / empty':48}{scaling['ratio']!s:>22}")
    if both := figures.get("concurrent_drops"):
        print("\n== two drops started at the same moment, into one database ==")
        _print_drops(both["runs"])
        print(f"analysts' copy {both['copy_documents']:,} documents, view {both['view_documents']:,}, "
              f"equal: {'yes' if both['copy_equals_view'] else 'NO'}")
    if peer := figures.get("client_comparison"):
        print("\n== to a loaded collection, whole processes: the gated chain vs the client's approach ==")
        print(f"gated chain (dagster asset materialize)  median {peer['ours_median_s']} s of {peer['ours_s']}")
        print(f"client's approach, NOINDEX=1             median {peer['theirs_median_s']} s of {peer['theirs_s']}")
        print(f"ratio {peer['ratio']}" + (f"; failed: {peer['failures']}" if peer["failures"] else ""))


def print_targets(targets: list[dict]) -> None:
    print("\n== targets ==")
    for t in targets:
        print(f"{'met ' if t['met'] else 'MISS'}  {t['target']:78} {t['measured']}")


def write_report(path: Path, report: dict) -> None:
    machine = {"cpus": os.cpu_count(), "python": platform.python_version(),
               "memory_gb": round(psutil.virtual_memory().total / 2**30, 1)}
    settings.write_owner_only(path, json.dumps({"measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                                                "machine": machine, **report}, indent=2))
