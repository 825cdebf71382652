"""The child processes of the scale benchmark: one size's chain, ceiling and index benchmarks
(`--one`), and one backup of what the chain left (`--backup`), each alone in its process so that
its peak memory is its own."""

from __future__ import annotations

import resource
import time
from dataclasses import asdict
from pathlib import Path

import dagster as dg

from healthcare_assets.defs.resources import mongo_resource_from_env, pipeline_settings
from healthcare_assets.domain import backup, encryption
from healthcare_assets.plumbing import embedded_mongo, settings
from healthcare_assets.plumbing.mongo import MongoResource
from healthcare_assets.tooling.bench.ceiling import measure_ceiling, set_load_ratios
from healthcare_assets.tooling.bench.figures import BackupFigures, SizeRun, StepTiming
from healthcare_assets.tooling.bench.run_figures import (
    failures,
    index_figures,
    load_figures,
    release_figures,
)
from healthcare_assets.tooling.bench.steps import RssSampler, owners, per_asset, step_timings
from healthcare_assets.tooling.bench.targets import HUGE_ROWS

BENCHMARK = dg.AssetSelection.assets("index_benchmarks")  # the asset and its check


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


class Chain:
    """The code location's assets and checks, run in this process on one Dagster instance."""

    def __init__(self, mongo: MongoResource):
        from healthcare_assets.definitions import defs
        from healthcare_assets.defs.s3_drops import DROP_SELECTION

        code = defs()
        self.definitions = [*code.assets, *code.asset_checks]
        self.instance = dg.DagsterInstance.ephemeral()
        self.mongo = mongo
        # What a drop runs: the chain and its checks, without the benchmark, the whole-collection
        # audit and the backups (the bench backs up in a process of its own).
        self.drop_selection = DROP_SELECTION
        graph = code.resolve_asset_graph()
        self.owners = (owners(self.definitions, DROP_SELECTION, graph)
                       | owners(self.definitions, BENCHMARK, graph))

    def run(self, selection: dg.AssetSelection, config: dg.RunConfig) -> dg.ExecuteInProcessResult:
        return dg.materialize(self.definitions, selection=selection, resources={"mongo": self.mongo, "settings": pipeline_settings()},
                              instance=self.instance, run_config=config, raise_on_error=False)


def _run_index_benchmarks(out: SizeRun, chain: Chain, repeats: int, scan_repeats: int) -> dg.ExecuteInProcessResult:
    """The benchmark asset and its check, after the chain; adds its outcome to `out`."""
    from healthcare_assets.defs.index_benchmarks import IndexBenchmarkConfig

    config = IndexBenchmarkConfig(repeats=repeats, scan_repeats=scan_repeats)
    bench = chain.run(BENCHMARK, dg.RunConfig(ops={"index_benchmarks": config}))
    out.success = out.success and bench.success
    out.failures += failures(bench)
    out.checks |= {e.check_name: e.passed for e in bench.get_asset_check_evaluations()}
    if any(e.asset_key == dg.AssetKey("index_benchmarks") for e in bench.get_asset_materialization_events()):
        out.index_benchmarks = index_figures(bench.output_for_node("index_benchmarks"))
    return bench


def _summarize(out: SizeRun, timings: dict[str, StepTiming], step_owners: dict[str, str]) -> None:
    """Steps per asset, the chain's seconds, and the peaks of the pipeline process and the server."""
    out.steps = timings
    out.per_asset = per_asset(timings, step_owners)
    # the chain proper; the benchmark asset is measurement, not pipeline
    out.pipeline_s = round(sum(v.asset_s + v.checks_s for k, v in out.per_asset.items() if k != "index_benchmarks"), 2)
    out.peak_rss_mb = max((v.peak_rss_mb for v in out.per_asset.values()), default=0)
    out.server_peak_rss_mb = max((v.server_peak_rss_mb for v in out.per_asset.values()), default=0)
    out.process_peak_rss_mb = _peak_rss_mb()


def run_one(size: int, csv: str, database: str, repeats: int, scan_repeats: int, chain_only: bool = False) -> SizeRun:
    """The chain, then the insert_many ceiling (on the server as the load left it, before the
    benchmark's collection scans grow the server's heap), then the index benchmarks."""
    from healthcare_assets.defs.ingest import SourceConfig

    mongo = mongo_resource_from_env(database=database)
    mongo.client()  # starts nothing new: the parent's server answers for this data directory
    sampler = RssSampler((embedded_mongo.status(settings.data_dir()) or {}).get("pid"))
    sampler.start()
    chain = Chain(mongo)
    started = time.perf_counter()
    result = chain.run(chain.drop_selection, dg.RunConfig(ops={"raw_csv": SourceConfig(source=csv)}))
    chain_s = time.perf_counter() - started
    timings = step_timings(result.run_id, chain.instance, sampler)
    out = SizeRun(size=size, csv=csv, database=database, success=result.success,
                  checks={e.check_name: e.passed for e in result.get_asset_check_evaluations()},
                  pipeline_run_s=round(chain_s, 2), failures=failures(result),
                  load=load_figures(result),  # a later stage failing does not void the load's figures
                  release=release_figures(result, mongo))
    if out.load and not chain_only:  # --chain-only: the chain alone, it is what must scale
        cleaned_path = result.output_for_node("mongo_hospitalizations")["cleaned_path"]
        source = result.output_for_node("cleaned_frame").source.as_metadata()
        if size < HUGE_ROWS:  # inserting every document twice more would double a 5M run
            out.ceiling = measure_ceiling(mongo.db(), cleaned_path, source, encryption.cipher(mongo.hospitalizations()))
            set_load_ratios(out.load, out.ceiling)
        bench = _run_index_benchmarks(out, chain, repeats, scan_repeats)
        timings |= step_timings(bench.run_id, chain.instance, sampler)
    sampler.done.set()
    _summarize(out, timings, chain.owners)
    return out


def measure_backup(database: str, to: Path) -> dict:
    """A backup of every database of the deployment as the chain left it, written then read back,
    in this process alone: its peak RSS is the backup's. The figures as the `--backup` child
    prints them (a BackupFigures' fields)."""
    mongo = mongo_resource_from_env(database=database)
    written = backup.write_backup(mongo.client(), database, mongo.server_label(), str(to))
    started = time.perf_counter()
    backup.verify(backup.open_backup(written.location))
    return asdict(BackupFigures(documents=sum(written.collections.values()), bytes=written.bytes,
                                backup_s=round(written.seconds, 2), verify_s=round(time.perf_counter() - started, 2),
                                peak_rss_mb=_peak_rss_mb()))

