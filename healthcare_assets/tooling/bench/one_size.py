"""The scale benchmark's child modes, each alone so its peak memory is its own: `--one` and `--backup`."""

import datetime as dt
import resource
import time
from pathlib import Path

import dagster as dg

from healthcare_assets.defs.resources import mongo_resource_from_env, pipeline_settings, resources
from healthcare_assets.domain import encryption
from healthcare_assets.domain.backup import reading, writing
from healthcare_assets.domain.master_keys import MasterKeys
from healthcare_assets.plumbing import embedded_mongo, settings
from healthcare_assets.plumbing.backup_store import BackupStoreResource, LocalStore
from healthcare_assets.tooling.bench import steps
from healthcare_assets.tooling.bench.targets import HUGE_ROWS, ratio

BENCHMARK = dg.AssetSelection.assets("index_benchmarks")  # the asset and its check


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


class Chain:
    def __init__(self, mongo):
        from healthcare_assets.definitions import defs
        from healthcare_assets.defs.s3_drops import DROP_SELECTION

        code = defs()
        self.definitions = [*code.assets, *code.asset_checks]
        self.instance, self.mongo = dg.DagsterInstance.ephemeral(), mongo
        self.drop_selection = DROP_SELECTION  # the bench backs up apart
        graph = code.resolve_asset_graph()
        self.owners = steps.owners(self.definitions, DROP_SELECTION, graph) | steps.owners(self.definitions, BENCHMARK, graph)

    def run(self, selection: dg.AssetSelection, config: dg.RunConfig) -> dg.ExecuteInProcessResult:
        return dg.materialize(self.definitions, selection=selection, instance=self.instance, run_config=config,
                              resources={"mongo": self.mongo, "settings": pipeline_settings(), "backups": BackupStoreResource(),
                                         "keys": resources(resolve=True)["keys"]}, raise_on_error=False)


def measure_ceiling(db, cleaned_path: str, source: dict, cipher: encryption.FieldCipher) -> dict:
    """The load's documents inserted again with a bare insert_many, into a plain and a prepared collection."""
    from healthcare_assets.domain.loading import LOAD_BATCH, prepare_collection
    from healthcare_assets.domain.schema import to_document
    from healthcare_assets.plumbing.staging import row_batches

    bare, validated = db["bench_ceiling_bare"], db["bench_ceiling_validated"]
    bare.drop()
    validated.drop()
    prepare_collection(validated)
    created_at = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
    timings, documents = dict.fromkeys(("build_s", "encrypt_s", "bare_s", "validated_s"), 0.0), 0
    for rows in row_batches(cleaned_path, LOAD_BATCH):
        started = time.perf_counter()
        docs = [to_document(row, source, created_at) for row in rows]
        timings["build_s"] += time.perf_counter() - started
        started = time.perf_counter()
        docs = [cipher.encrypt_document(doc) for doc in docs]
        timings["encrypt_s"] += time.perf_counter() - started
        for name, target in (("bare_s", bare), ("validated_s", validated)):
            started = time.perf_counter()
            target.insert_many(docs, ordered=False)  # the docs carry their _id: pymongo leaves them as they are
            timings[name] += time.perf_counter() - started
        documents += len(docs)
    bare.drop()
    validated.drop()
    # with and without encryption one after the other: the load overlaps them, this is the worst case
    clear = timings["build_s"] + timings["validated_s"]
    return {"documents": documents, "batch": LOAD_BATCH, **{k: round(v, 2) for k, v in timings.items()},
            **{k.replace("_s", "_docs_per_s"): round(documents / v) if v else None for k, v in timings.items()},
            "encryption_ratio": ratio(clear, clear + timings["encrypt_s"])}


def run_one(size: int, csv: str, database: str, repeats: int, scan_repeats: int, chain_only: bool = False) -> dict:
    """The chain, the ceiling (before the benchmark's scans grow the server's heap), the index benchmarks."""
    from healthcare_assets.defs.index_benchmarks import IndexBenchmarkConfig
    from healthcare_assets.defs.ingest import SourceConfig

    mongo = mongo_resource_from_env(database=database)
    mongo.client()  # starts nothing new: the parent's server answers for this data directory
    (sampler := steps.RssSampler((embedded_mongo.status(settings.data_dir()) or {}).get("pid"))).start()
    chain = Chain(mongo)
    started = time.perf_counter()
    result = chain.run(chain.drop_selection, dg.RunConfig(ops={"raw_csv": SourceConfig(source=csv)}))
    out = {"size": size, "csv": csv, "database": database, "success": result.success,
           "checks": {e.check_name: e.passed for e in result.get_asset_check_evaluations()},
           "pipeline_run_s": round(time.perf_counter() - started, 2), "failures": steps.failures(result)}
    timings = steps.step_timings(result.run_id, chain.instance, sampler)
    load = steps.load_figures(result)  # a later stage failing does not void the load's figures
    release = steps.release_figures(result, mongo)
    out |= {k: v for k, v in (("load", load), ("release", release)) if v is not None}
    if load and not chain_only:
        if size < HUGE_ROWS:  # inserting every document twice more would double a 5M run
            ceiling = out["ceiling"] = measure_ceiling(
                mongo.db(), result.output_for_node("mongo_hospitalizations")["cleaned_path"],
                result.output_for_node("cleaned_frame").source.as_metadata(),
                encryption.cipher(mongo.hospitalizations(), MasterKeys.of(resources(resolve=True)["keys"])))
            load |= {"ratio_to_bare_insert_many": ratio(load["docs_per_s"], ceiling["bare_docs_per_s"]),
                     "insert_ratio_to_bare_insert_many": ratio(load["insert_docs_per_s"], ceiling["bare_docs_per_s"]),
                     "ratio_to_validated_insert_many": ratio(load["docs_per_s"], ceiling["validated_docs_per_s"])}
        config = IndexBenchmarkConfig(repeats=repeats, scan_repeats=scan_repeats)
        bench = chain.run(BENCHMARK, dg.RunConfig(ops={"index_benchmarks": config}))
        out["success"] = out["success"] and bench.success
        out["failures"] += steps.failures(bench)
        out["checks"] |= {e.check_name: e.passed for e in bench.get_asset_check_evaluations()}
        if any(e.asset_key == dg.AssetKey("index_benchmarks") for e in bench.get_asset_materialization_events()):
            out["index_benchmarks"] = steps.index_figures(bench.output_for_node("index_benchmarks"))
        timings |= steps.step_timings(bench.run_id, chain.instance, sampler)
    sampler.done.set()
    assets = steps.per_asset(timings, chain.owners)
    # the chain proper: the benchmark asset is measurement, not pipeline
    pipeline_s = sum(v["asset_s"] + v["checks_s"] for k, v in assets.items() if k != "index_benchmarks")
    return out | {"steps": timings, "per_asset": assets, "pipeline_s": round(pipeline_s, 2),
                  **{peak: max((v[peak] for v in assets.values()), default=0) for peak in steps.PEAKS},
                  "process_peak_rss_mb": peak_rss_mb()}


def measure_backup(database: str, to: Path) -> dict:
    mongo = mongo_resource_from_env(database=database)
    keys = MasterKeys.of(resources(resolve=True)["keys"])
    written = writing.write_backup(mongo.client(), database, mongo.server_label(), LocalStore(to), keys)
    started = time.perf_counter()
    reading.verify(reading.open_backup(written.location, keys))
    return {"documents": sum(written.collections.values()), "bytes": written.bytes, "backup_s": round(written.seconds, 2),
            "verify_s": round(time.perf_counter() - started, 2), "peak_rss_mb": peak_rss_mb()}
