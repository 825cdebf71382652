"""Whole processes on the bench's server: drops, two drops at once, the gated chain vs the client's script."""

import hashlib
import json
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dagster as dg
from bson import json_util

from healthcare_assets.domain import local_server, privacy
from healthcare_assets.domain.access import databases
from healthcare_assets.plumbing.mongo import connect
from healthcare_assets.tooling.bench import exports
from healthcare_assets.tooling.bench.steps import ended_steps
from healthcare_assets.tooling.bench.targets import ratio

CLIENT_APPROACH = exports.REPO.parent / "shared" / "bench" / "client_approach.py"
DAGSTER = str(Path(sys.executable).parent / "dagster")  # the venv's CLI, next to this interpreter
DEFINITIONS = "healthcare_assets.definitions"
PROCESS_TIMEOUT_S = 3600
DROP_TAG = "healthcare_bench/drop"  # finds a drop's run in the bench's DAGSTER_HOME
DROP_ROWS, DROP_SEED = 1_000, 101  # a new seed: its rows are new to every collection of the bench
CONCURRENT_DROPS = ((1_000, 102), (5_000, 103))  # (rows, seed) of the two files dropped at once
PEER_REPEATS = 3


class Processes:
    """`dagster` and the client's script, run in the work folder (no .env there for Dagster to pick up)."""

    def __init__(self, work: Path, env: dict[str, str]):
        self.work, self.home = work, work / "dagster_home"
        self.home.mkdir(exist_ok=True)
        (self.home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        # the storage is created now: two runs that both find it missing race to create it
        with dg.DagsterInstance.from_config(str(self.home)) as instance:
            instance.get_runs(limit=1)
            instance.event_log_storage.get_pool_limits()
        own = {k: v for k, v in env.items() if not k.startswith("DAGSTER_")}  # no other module, workspace
        self.env = {**own, "DAGSTER_HOME": str(self.home)}

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

    def db(self, name: str):
        return connect(local_server.client_uri(self.work))[name]

    def drop_databases(self, name: str) -> None:
        """A database and its companions (analytics, doctor app, audit)."""
        for database in databases(name).values():
            self.db(database).client.drop_database(database)

    def drop_record(self, drop: str) -> tuple[dict[str, float], dict]:
        with dg.DagsterInstance.from_config(str(self.home)) as instance:
            runs = instance.get_runs(filters=dg.RunsFilter(tags={DROP_TAG: drop}), limit=1)
            if not runs:
                return {}, {}
            stats = instance.get_run_step_stats(runs[0].run_id)
        load = next((e.asset_materialization.metadata for step in stats for e in step.materialization_events
                     if e.asset_materialization.asset_key == dg.AssetKey("mongo_hospitalizations")), {})
        return ({key: round(end - start, 2) for key, (start, end) in ended_steps(stats).items()},
                {k: v.value for k, v in load.items()})


def drop(processes: Processes, name: str, csv: str, rows: int, database: str) -> dict:
    from healthcare_assets.defs.ingest import SourceConfig
    from healthcare_assets.defs.resources import mongo_resource_from_env
    from healthcare_assets.defs.s3_drops import s3_csv_drop_job

    collection = processes.db(database)[mongo_resource_from_env(database=database).collection]
    before = collection.estimated_document_count()
    config = processes.work / f"drop_{name}.json"  # JSON is YAML: `-c` takes it as run config
    config.write_text(json.dumps(dg.RunConfig(ops={"raw_csv": SourceConfig(source=csv)}).to_config_dict()))
    seconds, ok = processes.run([DAGSTER, "job", "execute", "-m", DEFINITIONS, "-j", s3_csv_drop_job.name, "-c",
                                 str(config), "--tags", json.dumps({DROP_TAG: name})], f"drop_{name}",
                                MONGODB_DATABASE=database)
    step_s, load = processes.drop_record(name)
    sha = hashlib.sha256(Path(csv).read_bytes()).hexdigest()
    run = {"name": name, "csv": csv, "rows": rows, "database": database, "documents_before": before,
            "indexes_before": len(collection.index_information()) if before else 0, "seconds": seconds,
            "exited_ok": ok, "steps": step_s, "outside_steps_s": round(seconds - sum(step_s.values()), 2),
            "loaded_own_file": load.get("source_sha256") == sha, "rows_loaded": load.get("rows_loaded"),
            "documents_with_file": collection.count_documents({"metadata.sources": sha})}
    # success: exited 0, and every row the run says it loaded from this very file is there
    return run | {"success": ok and run["loaded_own_file"] and run["documents_with_file"] == run["rows_loaded"]}


def drop_scaling(processes: Processes, big_database: str) -> dict:
    csv = exports.generated(DROP_ROWS, DROP_SEED, processes.work)
    processes.drop_databases("bench_drop_empty")  # empty it is, whatever ran before
    empty = drop(processes, "into_empty", csv, DROP_ROWS, "bench_drop_empty")
    big = drop(processes, "into_big", csv, DROP_ROWS, big_database)
    ok = empty["success"] and big["success"]
    return {"empty": empty, "big": big, "ratio": ratio(big["seconds"], empty["seconds"], 2) if ok else None, "success": ok}


def _canonical(documents) -> list[str]:
    """Sorted canonical JSON without `_id`: equal lists, equal documents as many times each."""
    return sorted(json_util.dumps({k: v for k, v in d.items() if k != "_id"}, sort_keys=True) for d in documents)


def concurrent_drops(processes: Processes, database: str) -> dict:
    with ThreadPoolExecutor(len(CONCURRENT_DROPS)) as pool:
        runs = list(pool.map(lambda rs: drop(processes, f"concurrent_{rs[0]}", exports.generated(*rs, processes.work), rs[0],
                                             database), CONCURRENT_DROPS))
    db = processes.db(database)
    copy = _canonical(db.client[databases(database)["analytics"]][privacy.COPY_COLLECTION].find({}))
    view = _canonical(db[privacy.VIEW_NAME].find({}))
    return {"runs": runs, "copy_documents": len(copy), "view_documents": len(view), "copy_equals_view": copy == view,
            "success": all(r["success"] for r in runs)}


def compare_with_client(processes: Processes, csv: str, repeats: int = PEER_REPEATS) -> dict:
    """Ours into a fresh database each time, theirs (client_approach.py refills baseline_db), alternating. Theirs
    without its seven indexes: ours builds only the two a load needs, so the like of ours is their NOINDEX=1 run."""
    uri = local_server.client_uri(processes.work)  # with credentials: the script is a plain client
    ours, theirs, failures = [], [], []
    for i in range(repeats):
        database = f"bench_gated_{i}"
        for side, times, command, env in (
                ("gated", ours, [DAGSTER, "asset", "materialize", "-m", DEFINITIONS, "--select", "*mongo_hospitalizations"],
                 {"MONGODB_DATABASE": database, "HEALTHCARE_SOURCE_CSV": csv}),
                ("client", theirs, [sys.executable, str(CLIENT_APPROACH), csv, uri], {"NOINDEX": "1"})):
            seconds, ok = processes.run(command, f"{side}_{i}", **env)
            times.append(seconds)
            label = "gated chain" if side == "gated" else "client's approach"
            failures += [] if ok else [f"{label}, repeat {i + 1}: see {side}_{i}.log"]
        processes.drop_databases(database)  # every repeat starts from the same server state
    processes.db("baseline_db").client.drop_database("baseline_db")
    ours_median, theirs_median = (statistics.median(s) if s else None for s in (ours, theirs))
    return {"csv": csv, "ours_s": ours, "theirs_s": theirs, "failures": failures, "ours_median_s": ours_median,
            "theirs_median_s": theirs_median, "ratio": None if failures else ratio(ours_median, theirs_median, 2),
            "success": not failures}


def run_processes(results: dict[int, dict], big_size: int, processes: Processes) -> dict:
    """What the sizes that ran allow: the drops need their databases loaded, the comparison the committed export."""
    figures, loaded = {}, {size for size, r in results.items() if "load" in r}
    if exports.COMMITTED_ROWS in results:
        if CLIENT_APPROACH.exists():
            print("the gated chain and the client's approach, alternating ...", flush=True)
            figures["client_comparison"] = compare_with_client(processes, exports.export_for(exports.COMMITTED_ROWS, processes.work)[0])
        else:
            print(f"no {CLIENT_APPROACH}: the comparison with the client's approach is left out")
    if big_size in loaded:
        print(f"a {DROP_ROWS:,}-row drop into an empty collection and into {big_size:,} rows ...", flush=True)
        figures["drop_scaling"] = drop_scaling(processes, exports.database_for(big_size))
    if exports.COMMITTED_ROWS in loaded:
        print(f"two drops at once into {exports.COMMITTED_ROWS:,} rows ...", flush=True)
        figures["concurrent_drops"] = concurrent_drops(processes, exports.database_for(exports.COMMITTED_ROWS))
    return figures
