"""`make bench`: how the chain's cost grows with the export, and what the indexes buy, in one run.

    python -m healthcare_assets.tooling.bench [--sizes 55500,1000000] [--repeats 7] [--scan-repeats 3] [--keep]

A fresh embedded server in a temporary data directory serves every size, each in a database of its
own. 55,500 rows is the committed export; other sizes are generated (seeded). Each size runs the
whole chain through Dagster in a child process (`--one SIZE`), so peak memory is that size's
alone. The child then inserts the very same documents with a bare `insert_many` (same batch size,
same server) to measure the ceiling the load can reach, and runs the index benchmarks. A
backup of what the chain left (every database of the deployment) is then written and read back
in a process of its own (`--backup`), whose peak memory must stay under 500 MB at any size.

Then whole processes, started as a user or the sensor starts them, on the same server:

- a 1,000-row file through `s3_csv_drop_job` (`dagster job execute`) into an empty collection and
  into the 1,000,000-row one: a file's run must cost what the file costs, not the collection;
- two such runs started at the same moment on two new files into the 55,500-row database: both
  succeed, each loads every row of its own file, and the analysts' copy then equals the
  anonymized view, document for document;
- the gated chain up to a loaded collection (`dagster asset materialize`) against the client's own
  ungated script (`../shared/bench/client_approach.py`) on the committed export, alternating,
  median of three each.

Results print as tables and land in `$HEALTHCARE_DATA_DIR/reports/bench.json` (the caller's data
directory, not the temporary one). Speed and memory targets live here, never in tests; a missed
target is printed, not raised.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import dagster as dg
import psutil
from bson import json_util
from pymongo.database import Database

from healthcare_assets.domain import backup, encryption, generalization, privacy
from healthcare_assets.domain.access import databases
from healthcare_assets.domain.release import Release
from healthcare_assets.plumbing import embedded_mongo, scans, settings
from healthcare_assets.plumbing.mongo import MongoResource, connect

REPO = Path(__file__).resolve().parents[2]
CLIENT_APPROACH = REPO.parent / "shared" / "bench" / "client_approach.py"
DAGSTER = str(Path(sys.executable).parent / "dagster")  # the venv's CLI, next to this interpreter
DEFINITIONS = "healthcare_assets.definitions"
COMMITTED_ROWS = 55_500
BIG_ROWS = 1_000_000  # the collection a 1,000-row drop is compared in
SEED = 5  # generated exports are a pure function of (rows, seed)
DROP_ROWS, DROP_SEED = 1_000, 101  # a new seed: its rows are new to every collection of the bench
CONCURRENT_DROPS = ((1_000, 102), (5_000, 103))  # (rows, seed) of the two files dropped at once
PEER_REPEATS = 3
POLL_S = 0.25
PROCESS_TIMEOUT_S = 3600
DROP_TAG = "healthcare_bench/drop"  # finds a drop's run in the bench's DAGSTER_HOME

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


def _ratio(numerator: float | None, denominator: float | None, digits: int = 3) -> float | None:
    return round(numerator / denominator, digits) if numerator and denominator else None


# ---- child: one size, in its own process --------------------------------------------------

def _selection() -> tuple[list, list]:
    """(the chain's assets and checks, the benchmark asset and its check)."""
    from healthcare_assets.definitions import defs
    from healthcare_assets.defs.anonymize import analysts_release_audit
    from healthcare_assets.defs.index_benchmarks import every_query_uses_its_index, index_benchmarks

    # what a drop runs: the scheduled whole-collection audit is not part of it
    code = defs()
    chain = [a for a in code.assets if index_benchmarks.key not in a.keys]
    chain += [c for c in code.asset_checks if c.node_def.name != analysts_release_audit.node_def.name
              and all(s.asset_key != index_benchmarks.key for s in c.check_specs)]
    return chain, [index_benchmarks, every_query_uses_its_index]


class RssSampler(threading.Thread):
    """Samples this process's and the server's RSS, so each step gets its own peak."""

    def __init__(self, server_pid: int | None):
        super().__init__(daemon=True)
        self.server_pid = server_pid
        self.samples: list[tuple[float, float, float]] = []  # (time, own MB, server MB)
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(POLL_S):
            self.samples.append((time.time(), _rss_mb(os.getpid()), _rss_mb(self.server_pid) if self.server_pid else 0.0))

    def peaks(self, start: float, end: float) -> tuple[float, float]:
        window = [(own, server) for t, own, server in self.samples if start <= t <= end + POLL_S]
        return (round(max((w[0] for w in window), default=0), 1), round(max((w[1] for w in window), default=0), 1))


def _step_windows(instance: dg.DagsterInstance, run_id: str) -> dict[str, tuple[float, float]]:
    """(start, end) epoch seconds of every step of a run that ended, from its event log."""
    starts, windows = {}, {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if not (event and event.step_key):
            continue
        if event.event_type_value == "STEP_START":
            starts[event.step_key] = entry.timestamp
        elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE"):
            windows[event.step_key] = (starts.get(event.step_key, entry.timestamp), entry.timestamp)
    return windows


def _steps(run_id: str, instance: dg.DagsterInstance, sampler: RssSampler) -> dict[str, dict]:
    """Seconds and peak RSS (this process, the server) of every step of a run."""
    steps = {}
    for key, (start, end) in _step_windows(instance, run_id).items():
        rss, server = sampler.peaks(start, end)
        steps[key] = {"s": round(end - start, 3), "peak_rss_mb": rss, "server_peak_rss_mb": server}
    return steps


def _failures(result) -> list[dict]:
    return [{"step": e.step_key, "error": str(e.event_specific_data.error.message)[:500]}
            for e in result.all_events if e.event_type_value == "STEP_FAILURE"]


def _owners(definitions: list) -> dict[str, str]:
    """Step key -> the asset it belongs to: an asset's own step, or one of its checks' steps."""
    owners = {}
    for d in definitions:
        asset = next(iter(d.check_specs)).asset_key if isinstance(d, dg.AssetChecksDefinition) else next(iter(d.keys))
        owners[d.node_def.name] = asset.to_user_string()
    return owners


def _per_asset(steps: dict[str, dict], owners: dict[str, str]) -> dict[str, dict]:
    """Each step counted under its asset: the asset's own step, and its checks' steps."""
    out = {a: {"asset_s": 0.0, "checks_s": 0.0, "peak_rss_mb": 0.0, "server_peak_rss_mb": 0.0}
           for a in dict.fromkeys(owners.values())}
    for key, step in steps.items():
        owner = owners.get(key)
        if owner is None:
            continue
        part = out[owner]
        if key == owner:
            part["asset_s"] = step["s"]
        else:
            part["checks_s"] = round(part["checks_s"] + step["s"], 3)
        part["peak_rss_mb"] = max(part["peak_rss_mb"], step["peak_rss_mb"])
        part["server_peak_rss_mb"] = max(part["server_peak_rss_mb"], step["server_peak_rss_mb"])
    return out


def measure_ceiling(db, cleaned_path: str, source: dict, cipher: encryption.FieldCipher) -> dict:
    """Insert the load's documents again, batch by batch, with a bare insert_many: into a plain
    collection (the server's ceiling) and into one prepared like the pipeline's (validator and
    metadata.sources index), timing documents built, their names encrypted (under the load's
    data keys, a cipher with nothing cached yet, as a load starts) and inserted separately."""
    from healthcare_assets.defs.load import LOAD_BATCH, prepare_collection
    from healthcare_assets.domain.schema import to_document
    from healthcare_assets.plumbing.staging import row_batches

    bare, validated = db["bench_ceiling_bare"], db["bench_ceiling_validated"]
    bare.drop()
    validated.drop()
    prepare_collection(validated)
    created_at = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
    timings = {"build_s": 0.0, "encrypt_s": 0.0, "bare_s": 0.0, "validated_s": 0.0}
    documents = 0
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
    rate = {k.replace("_s", "_docs_per_s"): round(documents / v) if v else None for k, v in timings.items()}
    # The load's work per document with and without encryption, one after the other (the load
    # itself encrypts a batch while the previous one is written: this is the worst case).
    clear = timings["build_s"] + timings["validated_s"]
    return {"documents": documents, "batch": LOAD_BATCH, **{k: round(v, 2) for k, v in timings.items()}, **rate,
            "encryption_ratio": _ratio(clear, clear + timings["encrypt_s"])}


def _load_figures(result) -> dict | None:
    """The load's documents and seconds, as its metadata has them: the whole step, its insert
    phase, and the index builds a first load defers to the end. None when the load did not run."""
    event = next((e for e in result.get_asset_materialization_events()
                  if e.asset_key.to_user_string() == "mongo_hospitalizations"), None)
    if event is None:
        return None
    metadata = {k: v.value for k, v in event.materialization.metadata.items()}
    load = result.output_for_node("mongo_hospitalizations")
    documents, load_s, insert_s = load["documents_inserted"], metadata["load_seconds"], metadata["insert_seconds"]
    return {"documents": documents, "rows_in": load["rows_in"], "load_s": load_s, "insert_s": insert_s,
            "index_build_s": metadata["index_build_seconds"],
            "docs_per_s": round(documents / load_s) if load_s else None,
            "insert_docs_per_s": round(documents / insert_s) if insert_s else None}


def _release_figures(result, mongo: MongoResource) -> dict | None:
    """What analysts can read after the chain: the release's own figures, and k and l measured on
    the copy by pycanon, independently of the release's bookkeeping. None when it did not publish."""
    event = next((e for e in result.get_asset_materialization_events()
                  if e.asset_key.to_user_string() == "anonymized_view"), None)
    if event is None:
        return None
    metadata = {k: v.value for k, v in event.materialization.metadata.items()}
    copy = Release(mongo.hospitalizations(), b"").copy
    started = time.perf_counter()
    released = generalization.Encoder(privacy.VIEW_FIELDS)
    for doc in scans.aggregate(copy, [{"$project": {"_id": 0}}], scans.copy_ranges(copy)):
        released.add(doc)
    k, l_div = generalization.independent_k_and_l(released.frame())
    return {"released": len(released.codes[privacy.QI_FIELDS[0]]), "k_pycanon": k, "l_pycanon": l_div,
            "judge_s": round(time.perf_counter() - started, 1),
            **{name: metadata[name] for name in ("stays_counted", "stays_held_back", "held_back_share",
                                                 "groups_held_back", "generalization", "uniqueness")}}


def _load_ratios(load: dict, ceiling: dict) -> dict:
    """The load against the insert_many ceiling: the whole step (deferred index builds included),
    its insert phase alone, and the whole step against a collection configured like the load's."""
    bare = ceiling["bare_docs_per_s"]
    return {"ratio_to_bare_insert_many": _ratio(load["docs_per_s"], bare),
            "insert_ratio_to_bare_insert_many": _ratio(load["insert_docs_per_s"], bare),
            "ratio_to_validated_insert_many": _ratio(load["docs_per_s"], ceiling["validated_docs_per_s"])}


def _index_figures(report: dict) -> dict:
    """What the index benchmark's report says, per query."""
    return {
        "documents": report["documents"], "index_build_s": report["index_build_seconds"],
        "min_speedup": report["min_speedup"],
        "queries": {q["name"]: {"speedup": q["speedup"], "indexed_median_ms": q["indexed"]["median_ms"],
                                "indexed_p95_ms": q["indexed"]["p95_ms"],
                                "collscan_median_ms": q["collscan"]["median_ms"],
                                "pandas_median_ms": q["pandas"]["median_ms"] if q["pandas"] else None,
                                "plan": f"{q['indexed']['stage']} {q['indexed']['index']}",
                                "rows": q["rows"]}
                    for q in report["queries"]},
    }


def _run_index_benchmarks(out: dict, benchmark: list, mongo: MongoResource, instance: dg.DagsterInstance,
                          repeats: int, scan_repeats: int):
    """The benchmark asset and its check, after the chain; adds its outcome to `out`."""
    bench = dg.materialize(benchmark, resources={"mongo": mongo}, instance=instance, raise_on_error=False, run_config={
        "ops": {"index_benchmarks": {"config": {"repeats": repeats, "scan_repeats": scan_repeats}}}})
    out["success"] = out["success"] and bench.success
    out["failures"] += _failures(bench)
    out["checks"] |= {e.check_name: e.passed for e in bench.get_asset_check_evaluations()}
    if any(e.asset_key.to_user_string() == "index_benchmarks" for e in bench.get_asset_materialization_events()):
        out["index_benchmarks"] = _index_figures(bench.output_for_node("index_benchmarks"))
    return bench


def _summarize(out: dict, steps: dict[str, dict], definitions: list) -> None:
    """Steps per asset, the chain's seconds, and the peaks of the pipeline process and the server."""
    out["steps"] = steps
    out["per_asset"] = _per_asset(steps, _owners(definitions))
    # the chain proper; the benchmark asset is measurement, not pipeline
    out["pipeline_s"] = round(sum(v["asset_s"] + v["checks_s"] for k, v in out["per_asset"].items()
                                  if k != "index_benchmarks"), 2)
    out["peak_rss_mb"] = max((v["peak_rss_mb"] for v in out["per_asset"].values()), default=0)
    out["server_peak_rss_mb"] = max((v["server_peak_rss_mb"] for v in out["per_asset"].values()), default=0)
    out["process_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def run_one(size: int, csv: str, database: str, repeats: int, scan_repeats: int, chain_only: bool = False) -> dict:
    """The chain, then the insert_many ceiling (on the server as the load left it, before the
    benchmark's collection scans grow the server's heap), then the index benchmarks."""
    mongo = MongoResource(database=database)
    mongo.client()  # starts nothing new: the parent's server answers for this data directory
    sampler = RssSampler((embedded_mongo.status(settings.data_dir()) or {}).get("pid"))
    sampler.start()
    chain, benchmark = _selection()
    started = time.perf_counter()
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(chain, resources={"mongo": mongo}, instance=instance,
                            run_config={"ops": {"raw_csv": {"config": {"source": csv}}}}, raise_on_error=False)
    chain_s = time.perf_counter() - started
    steps = _steps(result.run_id, instance, sampler)
    out = {"size": size, "csv": csv, "database": database, "success": result.success,
           "checks": {e.check_name: e.passed for e in result.get_asset_check_evaluations()},
           "pipeline_run_s": round(chain_s, 2), "failures": _failures(result)}
    load = _load_figures(result)  # a later stage failing (the view, ...) does not void the load's figures
    if load:
        out["load"] = load
    release = _release_figures(result, mongo)
    if release:
        out["release"] = release
    if load and not chain_only:  # --chain-only: the chain alone, it is what must scale
        cleaned_path = result.output_for_node("mongo_hospitalizations")["cleaned_path"]
        source = result.output_for_node("cleaned_frame").source.as_metadata()
        if size < HUGE_ROWS:  # inserting every document twice more would double a 5M run
            out["ceiling"] = measure_ceiling(mongo.db(), cleaned_path, source, encryption.cipher(mongo.hospitalizations()))
            out["load"] |= _load_ratios(load, out["ceiling"])
        bench = _run_index_benchmarks(out, benchmark, mongo, instance, repeats, scan_repeats)
        steps |= _steps(bench.run_id, instance, sampler)
    sampler.done.set()
    _summarize(out, steps, chain + benchmark)
    return out


def measure_backup(database: str, to: Path) -> dict:
    """A backup of every database of the deployment as the chain left it, written then read back,
    in this process alone: its peak RSS is the backup's."""
    mongo = MongoResource(database=database)
    written = backup.write_backup(mongo.client(), database, mongo.server_label(), str(to))
    started = time.perf_counter()
    backup.verify(backup.open_backup(written.location))
    return {"documents": sum(written.collections.values()),
            "bytes": written.bytes,
            "backup_s": round(written.seconds, 2), "verify_s": round(time.perf_counter() - started, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


# ---- whole processes: drops through the CLI, the client's approach ---------------------------

@dataclass
class Processes:
    """Starts whole processes as a user does: `dagster` on a DAGSTER_HOME of the bench's own
    (SQLite, no telemetry) and the client's script, all on the bench's embedded server. They run
    in the temporary directory (no .env there for Dagster to pick up), output to a log each."""

    work: Path
    env: dict[str, str]
    home: Path

    @classmethod
    def prepare(cls, work: Path, env: dict[str, str]) -> Processes:
        home = work / "dagster_home"
        home.mkdir(exist_ok=True)
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        # The storage is created now: two runs that both find it missing race to create it.
        with dg.DagsterInstance.from_config(str(home)) as instance:
            instance.get_runs(limit=1)
            instance.event_log_storage.get_pool_limits()
        own = {k: v for k, v in env.items() if not k.startswith("DAGSTER_")}  # no other module, workspace
        return cls(work, {**own, "DAGSTER_HOME": str(home)}, home)

    def run(self, command: list[str], log: str, **env: str) -> tuple[float, bool]:
        """Wall seconds from start to exit, and whether it exited 0; its output is in `log`.log."""
        started = time.perf_counter()
        with open(self.work / f"{log}.log", "w") as out:
            try:
                code = subprocess.run(command, env={**self.env, **env}, cwd=self.work, stdout=out,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      timeout=PROCESS_TIMEOUT_S, check=False).returncode
            except subprocess.TimeoutExpired:
                code = None
        return round(time.perf_counter() - started, 2), code == 0

    def db(self, name: str) -> Database:
        return connect(embedded_mongo.client_uri(self.work))[name]

    def drop_databases(self, name: str) -> None:
        """A database and its companions (analytics, doctor app, audit)."""
        for database in databases(name).values():
            self.db(database).client.drop_database(database)

    def drop_record(self, drop: str) -> tuple[dict[str, float], dict]:
        """The seconds of each step of the drop's run and its load's metadata, from its event log."""
        with dg.DagsterInstance.from_config(str(self.home)) as instance:
            runs = instance.get_runs(filters=dg.RunsFilter(tags={DROP_TAG: drop}), limit=1)
            if not runs:
                return {}, {}
            windows = _step_windows(instance, runs[0].run_id)
            load = next((e.asset_materialization.metadata for e in instance.all_logs(
                runs[0].run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
                if e.asset_materialization.asset_key == dg.AssetKey("mongo_hospitalizations")), {})
        return ({key: round(end - start, 2) for key, (start, end) in windows.items()},
                {k: v.value for k, v in load.items()})


@dataclass
class DropRun:
    """One file through s3_csv_drop_job (every asset and check but index_benchmarks and the
    whole-collection audit), in a `dagster job execute` process of its own."""

    name: str
    csv: str
    rows: int
    database: str
    documents_before: int = 0
    indexes_before: int = 0
    seconds: float | None = None  # the whole process, start to exit
    exited_ok: bool = False
    steps: dict[str, float] = field(default_factory=dict)
    outside_steps_s: float | None = None  # the process's start, imports, Dagster's own work
    loaded_own_file: bool = False  # the run's load recorded this file's SHA-256, not another's
    rows_loaded: int | None = None  # as the run's load recorded it
    documents_with_file: int = 0  # documents carrying this file's SHA-256 afterwards

    @property
    def success(self) -> bool:
        """Exited 0, and every row the run says it loaded from this very file is there."""
        return self.exited_ok and self.loaded_own_file and self.documents_with_file == self.rows_loaded

    def run(self, processes: Processes) -> DropRun:
        from healthcare_assets.defs.s3_drops import s3_csv_drop_job

        collection = processes.db(self.database)[MongoResource(database=self.database).collection]
        self.documents_before = collection.estimated_document_count()
        self.indexes_before = len(collection.index_information()) if self.documents_before else 0
        config = processes.work / f"drop_{self.name}.json"  # JSON is YAML: `-c` takes it as run config
        config.write_text(json.dumps({"ops": {"raw_csv": {"config": {"source": self.csv}}}}))
        command = [DAGSTER, "job", "execute", "-m", DEFINITIONS, "-j", s3_csv_drop_job.name, "-c", str(config),
                   "--tags", json.dumps({DROP_TAG: self.name})]
        self.seconds, self.exited_ok = processes.run(command, f"drop_{self.name}", MONGODB_DATABASE=self.database)
        self.steps, load = processes.drop_record(self.name)
        self.outside_steps_s = round(self.seconds - sum(self.steps.values()), 2)
        sha = hashlib.sha256(Path(self.csv).read_bytes()).hexdigest()
        self.loaded_own_file = load.get("source_sha256") == sha
        self.rows_loaded = load.get("rows_loaded")
        self.documents_with_file = collection.count_documents({"metadata.sources": sha})
        return self


@dataclass
class DropScaling:
    """The same new 1,000-row file dropped into an empty collection and into the large one."""

    empty: DropRun
    big: DropRun
    ratio: float | None = field(init=False)

    def __post_init__(self):
        self.ratio = _ratio(self.big.seconds, self.empty.seconds, 2) if self.success else None

    @property
    def success(self) -> bool:
        return self.empty.success and self.big.success

    def targets(self) -> list[Target]:
        documents = f"{self.big.documents_before:,} documents"
        return [Target.at_most(f"drop of {self.empty.rows:,} rows: into {documents} / into empty <= {DROP_GROWTH_MAX}",
                               self.ratio, DROP_GROWTH_MAX),
                *(Target.at_most(f"drop of {r.rows:,} rows into {label}, whole process <= {DROP_S_MAX} s",
                                 r.seconds if r.success else None, DROP_S_MAX)
                  for r, label in ((self.empty, "an empty collection"), (self.big, documents)))]


def measure_drop_scaling(processes: Processes, big_database: str) -> DropScaling:
    csv = _generated(DROP_ROWS, DROP_SEED, processes.work)
    processes.drop_databases("bench_drop_empty")  # empty it is, whatever ran before
    empty = DropRun("into_empty", csv, DROP_ROWS, "bench_drop_empty").run(processes)
    big = DropRun("into_big", csv, DROP_ROWS, big_database).run(processes)
    return DropScaling(empty, big)


def _canonical(documents) -> list[str]:
    """Documents as sorted canonical JSON without `_id`: two collections hold the same documents,
    as many times each, exactly when these lists are equal."""
    return sorted(json_util.dumps({k: v for k, v in d.items() if k != "_id"}, sort_keys=True) for d in documents)


@dataclass
class ConcurrentDrops:
    """Two drops started at the same moment into one database, and the analysts' copy after them."""

    runs: list[DropRun]
    copy_documents: int
    view_documents: int
    copy_equals_view: bool

    @property
    def success(self) -> bool:
        return all(r.success for r in self.runs)

    def targets(self) -> list[Target]:
        sizes = " and ".join(f"{r.rows:,}" for r in self.runs)
        return [Target(f"two drops at once ({sizes} rows): both succeed, each loads its own file",
                       "yes" if self.success else "no", self.success),
                Target("after them, the analysts' copy equals the view (documents: copy/view)",
                       f"{self.copy_documents:,}/{self.view_documents:,}", self.copy_equals_view and self.view_documents > 0)]


def measure_concurrent_drops(processes: Processes, database: str) -> ConcurrentDrops:
    runs = [DropRun(f"concurrent_{rows}", _generated(rows, seed, processes.work), rows, database)
            for rows, seed in CONCURRENT_DROPS]
    with ThreadPoolExecutor(len(runs)) as pool:
        list(pool.map(lambda drop: drop.run(processes), runs))
    db = processes.db(database)
    copy = _canonical(db.client[databases(database)["analytics"]][privacy.COPY_COLLECTION].find({}))
    view = _canonical(db[privacy.VIEW_NAME].find({}))
    return ConcurrentDrops(runs, len(copy), len(view), copy == view)


@dataclass
class PeerComparison:
    """The gated chain up to a loaded collection against the client's ungated script: whole
    processes, same CSV, same server, alternating, median of each."""

    csv: str
    ours_s: list[float]
    theirs_s: list[float]
    failures: list[str]
    ours_median_s: float | None = field(init=False)
    theirs_median_s: float | None = field(init=False)
    ratio: float | None = field(init=False)

    def __post_init__(self):
        self.ours_median_s = statistics.median(self.ours_s) if self.ours_s else None
        self.theirs_median_s = statistics.median(self.theirs_s) if self.theirs_s else None
        self.ratio = _ratio(self.ours_median_s, self.theirs_median_s, 2) if self.success else None

    @property
    def success(self) -> bool:
        return not self.failures

    def targets(self) -> list[Target]:
        return [Target.at_most(f"gated chain to a loaded collection / client's approach <= {PEER_RATIO_MAX} "
                               f"(median of {len(self.ours_s)})", self.ratio, PEER_RATIO_MAX)]


def compare_with_client(processes: Processes, csv: str, repeats: int = PEER_REPEATS) -> PeerComparison:
    """Ours: `dagster asset materialize --select '*mongo_hospitalizations'` into a fresh database
    each time. Theirs: client_approach.py, which drops and refills baseline_db itself."""
    uri = embedded_mongo.client_uri(processes.work)  # with credentials: the script is a plain client
    ours, theirs, failures = [], [], []
    for i in range(repeats):
        database = f"bench_gated_{i}"
        seconds, ok = processes.run([DAGSTER, "asset", "materialize", "-m", DEFINITIONS, "--select",
                                     "*mongo_hospitalizations"], f"gated_{i}",
                                    MONGODB_DATABASE=database, HEALTHCARE_SOURCE_CSV=csv)
        ours.append(seconds)
        failures += [] if ok else [f"gated chain, repeat {i + 1}: see gated_{i}.log"]
        seconds, ok = processes.run([sys.executable, str(CLIENT_APPROACH), csv, uri], f"client_{i}")
        theirs.append(seconds)
        failures += [] if ok else [f"client's approach, repeat {i + 1}: see client_{i}.log"]
        processes.drop_databases(database)  # every repeat starts from the same server state
    processes.db("baseline_db").client.drop_database("baseline_db")
    return PeerComparison(csv, ours, theirs, failures)


@dataclass
class ProcessFigures:
    """What the whole processes measured; None where the sizes needed did not run."""

    drop_scaling: DropScaling | None = None
    concurrent_drops: ConcurrentDrops | None = None
    client_comparison: PeerComparison | None = None

    def parts(self) -> list:
        return [p for p in (self.drop_scaling, self.concurrent_drops, self.client_comparison) if p]

    def targets(self) -> list[Target]:
        return [t for part in self.parts() for t in part.targets()]

    @property
    def success(self) -> bool:
        return all(part.success for part in self.parts())


def run_processes(results: dict[int, dict], args, processes: Processes) -> ProcessFigures:
    """The whole-process figures the sizes that ran allow: the drops need their databases loaded,
    the comparison with the client needs the committed export."""
    figures = ProcessFigures()
    loaded = {size for size, r in results.items() if "load" in r}
    if COMMITTED_ROWS in results:
        if CLIENT_APPROACH.exists():
            print("the gated chain and the client's approach, alternating ...", flush=True)
            figures.client_comparison = compare_with_client(processes, _export_for(COMMITTED_ROWS, processes.work)[0])
        else:
            print(f"no {CLIENT_APPROACH}: the comparison with the client's approach is left out")
    if args.big_size in loaded:
        print(f"a {DROP_ROWS:,}-row drop into an empty collection and into {args.big_size:,} rows ...", flush=True)
        figures.drop_scaling = measure_drop_scaling(processes, _database(args.big_size))
    if COMMITTED_ROWS in loaded:
        print(f"two drops at once into {COMMITTED_ROWS:,} rows ...", flush=True)
        figures.concurrent_drops = measure_concurrent_drops(processes, _database(COMMITTED_ROWS))
    return figures


# ---- parent: sizes, processes, memory, the report -------------------------------------------

def _generated(rows: int, seed: int, folder: Path) -> str:
    from healthcare_assets.tooling.generate import generate_csv

    path = folder / f"generated_{rows}_{seed}.csv"
    if not path.exists():
        generate_csv(rows=rows, seed=seed, out=path)
    return str(path)


def _export_for(size: int, folder: Path) -> tuple[str, float]:
    if size == COMMITTED_ROWS:
        return str(REPO / "data" / "healthcare_dataset.csv"), 0.0
    started = time.perf_counter()
    path = _generated(size, SEED, folder)
    return path, round(time.perf_counter() - started, 2)


def _database(size: int) -> str:
    return f"bench_{size}"


def _rss_mb(pid: int) -> float:
    try:
        return psutil.Process(pid).memory_info().rss / 2**20
    except psutil.Error:
        return 0.0


def scan_repeats_for(size: int, args) -> int:
    return args.scan_repeats or (3 if size < 1_000_000 else 1)


def run_child(size: int, csv: str, args, env: dict, log: Path) -> dict:
    """One size in its own process, so its peak memory is its own; the child prints one JSON line."""
    command = [sys.executable, "-m", "healthcare_assets.tooling.bench", "--one", str(size), "--csv", csv,
               "--database", _database(size), "--repeats", str(args.repeats),
               "--scan-repeats", str(scan_repeats_for(size, args))]
    command += ["--chain-only"] if args.chain_only else []
    started = time.perf_counter()
    with open(log, "w") as err:  # Dagster's event log goes here
        child = subprocess.run(command, check=False, stdout=subprocess.PIPE, stderr=err, env=env, cwd=REPO, text=True)
    figures = _printed_figures(child.stdout)
    if child.returncode != 0 or figures is None:
        raise RuntimeError(f"size {size}: the child exited {child.returncode}; see {log}")
    return {**figures, "process_s": round(time.perf_counter() - started, 2)}


def _printed_figures(stdout: str) -> dict | None:
    """The JSON line a child mode prints last (`--one`, `--backup`)."""
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else None


def run_backup_child(size: int, env: dict, work: Path) -> dict:
    """The size's backup in a process of its own (`--backup`), into the work folder."""
    command = [sys.executable, "-m", "healthcare_assets.tooling.bench", "--backup", _database(size),
               "--to", str(work / f"backups_{size}")]
    child = subprocess.run(command, check=True, stdout=subprocess.PIPE, env=env, cwd=REPO, text=True)
    return _printed_figures(child.stdout)


def run_sizes(sizes: list[int], args, env: dict, work: Path, report_dir: Path) -> dict[int, dict]:
    """Each size's chain, ceiling and index benchmarks, one child process per size."""
    results: dict[int, dict] = {}
    for size in sizes:
        csv, generate_s = _export_for(size, work)
        print(f"{size:,} rows: {csv}" + (f" (generated in {generate_s} s)" if generate_s else ""), flush=True)
        r = results[size] = {**run_child(size, csv, args, env, work / f"bench_{size}.log"), "generate_s": generate_s}
        print(f"  done in {r['process_s']:.0f} s, success={r['success']}, peak RSS {r['peak_rss_mb']:.0f} MB"
              + ("" if r["success"] else f"; failed checks: {[k for k, v in r['checks'].items() if not v]}, "
                                         f"failed steps: {r['failures']}"),
              flush=True)
        if r.get("load"):
            r["backup"] = run_backup_child(size, env, work)
            print(f"  backup of {r['backup']['documents']:,} documents in {r['backup']['backup_s']:.0f} s, "
                  f"peak RSS {r['backup']['peak_rss_mb']:.0f} MB", flush=True)
        for suffix in ("json", "png"):
            produced = work / "reports" / f"index_benchmarks.{suffix}"
            if produced.exists():
                settings.private_dir(report_dir / "bench")
                copied = shutil.copy(produced, report_dir / "bench" / f"index_benchmarks_{size}.{suffix}")
                settings.owner_only(Path(copied))
    return results


def _memory_targets(results: dict[int, dict]) -> list[Target]:
    small, targets = results.get(COMMITTED_ROWS), []
    for size, big in results.items():
        if size < 1_000_000:
            continue
        targets.append(Target.below(f"peak RSS at {size:,} rows < {RSS_MAX_MB} MB", big["peak_rss_mb"], RSS_MAX_MB))
        if size >= HUGE_ROWS:
            targets.append(Target.below(f"peak RSS of the pipeline process at {size:,} rows < {HUGE_RSS_MAX_MB} MB",
                                        big["peak_rss_mb"], HUGE_RSS_MAX_MB))
            targets.append(Target.below(f"peak RSS of the embedded server at {size:,} rows < {HUGE_SERVER_RSS_MAX_MB} MB",
                                        big["server_peak_rss_mb"], HUGE_SERVER_RSS_MAX_MB))
        if small:
            targets.append(Target.at_most(f"peak RSS {size:,} / 55,500 rows <= {RSS_GROWTH_MAX}",
                                          _ratio(big["peak_rss_mb"], small["peak_rss_mb"], 2), RSS_GROWTH_MAX))
            limit = WALL_GROWTH_MAX * size / 1_000_000
            targets.append(Target.at_most(f"pipeline wall time {size:,} / 55,500 rows <= {limit:g}",
                                          _ratio(big["pipeline_s"], small["pipeline_s"], 2), limit))
    return targets


def evaluate(results: dict[int, dict]) -> list[Target]:
    """The targets on each size's figures, each with the measured figure; only for the sizes that ran."""
    targets = []
    for size, r in results.items():
        if "ceiling" in r:
            targets.append(Target.at_least(f"load's insert phase / bare insert_many >= {LOAD_RATIO_MIN} ({size:,} rows)",
                                           r["load"]["insert_ratio_to_bare_insert_many"], LOAD_RATIO_MIN))
            targets.append(Target.at_least(f"whole load step (index builds in) / bare insert_many >= {LOAD_RATIO_MIN} "
                                           f"({size:,} rows)", r["load"]["ratio_to_bare_insert_many"], LOAD_RATIO_MIN))
            targets.append(Target.at_least(f"load docs/s with names encrypted / without >= {ENCRYPTION_RATIO_MIN} "
                                           f"({size:,} rows)", r["ceiling"]["encryption_ratio"], ENCRYPTION_RATIO_MIN))
    targets += _memory_targets(results)
    for size, r in results.items():
        if "backup" in r:
            targets.append(Target.below(f"backup's process at {size:,} rows < {BACKUP_RSS_MAX_MB} MB",
                                        r["backup"]["peak_rss_mb"], BACKUP_RSS_MAX_MB))
    for size, r in results.items():
        if "release" in r:
            rel = r["release"]
            targets.append(Target(f"the analysts' copy: k >= {privacy.K_ANONYMITY}, l >= {privacy.L_DIVERSITY} on every "
                                  f"quasi-identifier (pycanon), held back <= {privacy.MAX_SUPPRESSED:.0%} ({size:,} rows)",
                                  f"k {rel['k_pycanon']}, l {rel['l_pycanon']}, {rel['held_back_share']:.1%}",
                                  rel["k_pycanon"] >= privacy.K_ANONYMITY and rel["l_pycanon"] >= privacy.L_DIVERSITY
                                  and rel["held_back_share"] <= privacy.MAX_SUPPRESSED))
    small = results.get(COMMITTED_ROWS)
    if small and "index_benchmarks" in small:
        for name, q in small["index_benchmarks"]["queries"].items():
            targets.append(Target.at_least(f"{name}: index >= {SPEEDUP_MIN}x its COLLSCAN (committed data)",
                                           q["speedup"], SPEEDUP_MIN))
    return targets


def print_sizes(results: dict[int, dict]) -> None:
    sizes = list(results)

    def row(label, value):
        cells = []
        for size in sizes:
            try:
                cells.append(value(results[size]))
            except (KeyError, TypeError):  # that size stopped early
                cells.append("-")
        print(f"{label:38}" + "".join(f"{c:>22}" for c in cells))

    print("\n== chain, per size: step s + its checks s, peak RSS MB of the pipeline process / server ==")
    print(f"{'':38}" + "".join(f"{s:>22,}" for s in sizes))
    for asset in dict.fromkeys(a for r in results.values() for a in r.get("per_asset", {})):
        row(asset, lambda r, a=asset: (f"{r['per_asset'][a]['asset_s']:.1f}+{r['per_asset'][a]['checks_s']:.1f}s "
                                       f"{r['per_asset'][a]['peak_rss_mb']:,.0f}/{r['per_asset'][a]['server_peak_rss_mb']:,.0f}"))
    row("pipeline s (w/o index_benchmarks)", lambda r: f"{r['pipeline_s']:.1f}")
    row("load s: insert + index builds", lambda r: f"{r['load']['insert_s']:.1f}+{r['load']['index_build_s']:.1f}")
    row("load docs/s", lambda r: f"{r['load']['docs_per_s']:,}")
    row("load's insert phase docs/s", lambda r: f"{r['load']['insert_docs_per_s']:,}")
    row("bare insert_many docs/s", lambda r: f"{r['ceiling']['bare_docs_per_s']:,}")
    row("insert_many like the load's coll", lambda r: f"{r['ceiling']['validated_docs_per_s']:,}")
    row("building the documents docs/s", lambda r: f"{r['ceiling']['build_docs_per_s']:,}")
    row("encrypting their names docs/s", lambda r: f"{r['ceiling']['encrypt_docs_per_s']:,}")
    row("load with / without encryption", lambda r: f"{r['ceiling']['encryption_ratio']}")
    row("load / bare insert_many", lambda r: f"{r['load']['ratio_to_bare_insert_many']:.2f}")
    row("load's insert phase / bare", lambda r: f"{r['load']['insert_ratio_to_bare_insert_many']:.2f}")
    row("load / insert_many like the load's", lambda r: f"{r['load']['ratio_to_validated_insert_many']:.2f}")
    row("peak RSS MB, pipeline process", lambda r: f"{r['peak_rss_mb']:,.0f}")
    row("peak RSS MB, embedded server", lambda r: f"{r['server_peak_rss_mb']:,.0f}")
    row("backup: documents, MB", lambda r: f"{r['backup']['documents']:,}, {r['backup']['bytes'] / 2**20:,.1f}")
    row("backup s + reading it back s", lambda r: f"{r['backup']['backup_s']:.1f}+{r['backup']['verify_s']:.1f}")
    row("backup's peak RSS MB", lambda r: f"{r['backup']['peak_rss_mb']:,.0f}")
    row("index build s (7 indexes)", lambda r: f"{r['index_benchmarks']['index_build_s']:.1f}")
    row("released: stays, k/l (pycanon)", lambda r: f"{r['release']['released']:,} k{r['release']['k_pycanon']} "
                                                    f"l{r['release']['l_pycanon']}")
    row("held back (suppressed)", lambda r: f"{r['release']['stays_held_back']:,} {r['release']['held_back_share']:.1%}")
    for r in results.values():
        if "release" in r:
            print(f"\n== release of {r['size']:,} rows: generalization and uniqueness ==")
            print("\n".join(f"  {field}: {level}" for field, level in r["release"]["generalization"].items()))
            print(r["release"]["uniqueness"])
    names = next((list(r["index_benchmarks"]["queries"]) for r in results.values() if "index_benchmarks" in r), [])
    print("\n== index queries: speedup (COLLSCAN median / indexed median), indexed median ms ==")
    for name in names:
        row(name, lambda r, n=name: (f"{r['index_benchmarks']['queries'][n]['speedup']}x "
                                     f"{r['index_benchmarks']['queries'][n]['indexed_median_ms']:,.0f}ms"))


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


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="healthcare_assets.tooling.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default=f"{COMMITTED_ROWS},{BIG_ROWS}",
                        help="comma-separated row counts; 55500 is the committed export, others are generated")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per query with its index")
    parser.add_argument("--scan-repeats", type=int,
                        help="timed runs per query forced to a COLLSCAN and per pandas scan "
                             "(default 3, and 1 from 1,000,000 rows where one scan takes ~25 s)")
    parser.add_argument("--chain-only", action="store_true",
                        help="only the chain: no insert_many ceiling, no index benchmarks")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data directory")
    # the size whose collection a 1,000-row drop is compared in (a smaller one to try the bench out)
    parser.add_argument("--big-size", type=int, default=BIG_ROWS, help=argparse.SUPPRESS)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # child mode
    parser.add_argument("--csv", help=argparse.SUPPRESS)
    parser.add_argument("--database", help=argparse.SUPPRESS)
    parser.add_argument("--backup", metavar="DATABASE", help=argparse.SUPPRESS)  # child mode
    parser.add_argument("--to", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def write_report(path: Path, args, results: dict[int, dict], figures: ProcessFigures, targets: list[Target]) -> None:
    report = {"measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "memory_gb": round(psutil.virtual_memory().total / 2**30, 1)},
              "repeats": args.repeats, "scan_repeats": {str(size): scan_repeats_for(size, args) for size in results},
              "sizes": {str(k): v for k, v in results.items()}, "processes": asdict(figures),
              "targets": [asdict(t) for t in targets]}
    settings.write_owner_only(path, json.dumps(report, indent=2))


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.one:
        print(json.dumps(run_one(args.one, args.csv, args.database, args.repeats, args.scan_repeats, args.chain_only)),
              flush=True)
        return 0
    if args.backup:
        print(json.dumps(measure_backup(args.backup, Path(args.to))), flush=True)
        return 0

    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    report_dir = settings.reports_dir()  # the caller's, before the temporary one takes over
    work = Path(tempfile.mkdtemp(prefix="healthcare-bench-"))
    # its generated exports live in the work folder: runs may read them from there
    env = {**os.environ, "HEALTHCARE_DATA_DIR": str(work),
           "HEALTHCARE_IMPORT_DIR": os.pathsep.join([str(work), str(REPO / "data")])}
    for name in ("MONGODB_URI", "MONGODB_DATABASE", "MONGODB_COLLECTION", "HEALTHCARE_SOURCE_CSV"):
        env.pop(name, None)  # always the fresh embedded server, the bench's own databases and files
    results: dict[int, dict] = {}
    figures, failed = ProcessFigures(), True
    try:
        print(f"embedded server {embedded_mongo.ensure_running(work)}, data in {work}")
        results = run_sizes(sizes, args, env, work, report_dir)
        figures = run_processes(results, args, Processes.prepare(work, env))
        failed = not all(r["success"] for r in results.values()) or not figures.success
    finally:
        embedded_mongo.stop(work)
        if failed:
            print(f"kept {work} (the child's Dagster log is bench_<size>.log there, each process's <name>.log)")
        elif not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    targets = evaluate(results) + figures.targets()
    print_sizes(results)
    print_processes(figures)
    print_targets(targets)
    write_report(report_dir / "bench.json", args, results, figures, targets)
    print(f"\nreport: {report_dir / 'bench.json'}" + (f"; data kept in {work}" if args.keep else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
