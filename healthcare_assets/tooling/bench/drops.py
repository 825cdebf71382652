"""New files through s3_csv_drop_job in `dagster job execute` processes, as the sensor launches
them: one file into an empty and into a large collection, and two files dropped at the same moment."""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
from bson import json_util

from healthcare_assets.domain import privacy
from healthcare_assets.domain.access import databases
from healthcare_assets.tooling.bench.exports import generated
from healthcare_assets.tooling.bench.launcher import DAGSTER, DEFINITIONS, DROP_TAG, Processes
from healthcare_assets.tooling.bench.targets import DROP_GROWTH_MAX, DROP_S_MAX, Target, ratio

DROP_ROWS, DROP_SEED = 1_000, 101  # a new seed: its rows are new to every collection of the bench
CONCURRENT_DROPS = ((1_000, 102), (5_000, 103))  # (rows, seed) of the two files dropped at once


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
        from healthcare_assets.defs.ingest import SourceConfig
        from healthcare_assets.defs.resources import mongo_resource_from_env
        from healthcare_assets.defs.s3_drops import s3_csv_drop_job

        collection = processes.db(self.database)[mongo_resource_from_env(database=self.database).collection]
        self.documents_before = collection.estimated_document_count()
        self.indexes_before = len(collection.index_information()) if self.documents_before else 0
        config = processes.work / f"drop_{self.name}.json"  # JSON is YAML: `-c` takes it as run config
        config.write_text(json.dumps(dg.RunConfig(ops={"raw_csv": SourceConfig(source=self.csv)}).to_config_dict()))
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
        self.ratio = ratio(self.big.seconds, self.empty.seconds, 2) if self.success else None

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
    csv = generated(DROP_ROWS, DROP_SEED, processes.work)
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
    runs = [DropRun(f"concurrent_{rows}", generated(rows, seed, processes.work), rows, database)
            for rows, seed in CONCURRENT_DROPS]
    with ThreadPoolExecutor(len(runs)) as pool:
        list(pool.map(lambda drop: drop.run(processes), runs))
    db = processes.db(database)
    copy = _canonical(db.client[databases(database)["analytics"]][privacy.COPY_COLLECTION].find({}))
    view = _canonical(db[privacy.VIEW_NAME].find({}))
    return ConcurrentDrops(runs, len(copy), len(view), copy == view)
