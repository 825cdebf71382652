"""Killing the embedded server in the middle of a load loses nothing and duplicates nothing."""

import os
import random
import signal
import threading
import time

import pandas as pd
import pymongo
import pytest

from healthcare_assets.defs.resources import mongo_resource_from_env
from healthcare_assets.domain import local_server
from healthcare_assets.domain.loading import LOAD_BATCH
from healthcare_assets.plumbing import embedded_mongo
from healthcare_assets.tooling.generate import generate_csv
from healthcare_assets_tests.fixtures.runs import DEFS, check_results, materialize

WATCH_S = 120  # how long the killer watches the collection grow


def kill_when_loading(data_dir, database, at_least, killed: list):
    """Watch the collection grow; SIGKILL the daemon once `at_least` documents are in."""
    state = embedded_mongo.status(data_dir)
    client = pymongo.MongoClient(local_server.client_uri(data_dir), serverSelectionTimeoutMS=2000)
    deadline = time.monotonic() + WATCH_S
    while time.monotonic() < deadline:
        try:
            count = client[database].hospitalizations.estimated_document_count()
        except pymongo.errors.PyMongoError:
            count = 0
        if count >= at_least:
            os.kill(state["pid"], signal.SIGKILL)
            killed.append(count)
            return
        time.sleep(0.005)  # a busy machine may otherwise see the rest of a batch appear between two looks


# The stages up to the loaded collection, with their checks: what a kill can leave half done.
LOAD = [a for a in DEFS.assets if a.key.path[0] in ("raw_csv", "cleaned_frame", "quality_report", "mongo_hospitalizations")]
LOAD_CHECKS = [c for c in DEFS.asset_checks if all(s.asset_key in {a.key for a in LOAD} for s in c.check_specs)]

# where the daemon dies: once the first batch is in (a batch boundary), or once a random number
# of documents of the second batch are (the server makes a batch visible in parts)
KILL_POINTS = {"after the first batch": None, "inside the second batch, seed 1": 1, "inside the second batch, seed 2": 2}


@pytest.mark.parametrize("seed", [pytest.param(seed, id=name, marks=[pytest.mark.slow] * (seed is not None))
                                  for name, seed in KILL_POINTS.items()])
@pytest.mark.slow
def test_kill_server_mid_load_then_rerun(tmp_path, monkeypatch, seed):
    monkeypatch.delenv("MONGODB_URI", raising=False)  # the embedded server, restarted on demand
    data_dir = tmp_path / "data"
    monkeypatch.setenv("HEALTHCARE_DATA_DIR", str(data_dir))
    source = tmp_path / "big_export.csv"
    generate_csv(rows=8_000, seed=5, out=source)
    raw = pd.read_csv(source, dtype=str, keep_default_na=False)
    expected = len(raw) - int(raw.duplicated().sum())
    at_least = LOAD_BATCH - 50 if seed is None else random.Random(seed).randrange(LOAD_BATCH + 1, LOAD_BATCH * 3 // 2)
    mongo = mongo_resource_from_env(database="faults")
    try:
        mongo.uri()  # started with the roles of its database, as every restart checks them
        killed: list[int] = []
        killer = threading.Thread(target=kill_when_loading, args=(data_dir, "faults", at_least, killed))
        killer.start()
        first = materialize(source, mongo, [*LOAD, *LOAD_CHECKS])  # the load's RetryPolicy may already finish the job
        killer.join(timeout=WATCH_S + 30)  # its own watch ends by then; a hung client must not hang the run
        assert not killer.is_alive(), "the killer thread still runs"
        assert killed and 0 < killed[0] < expected, "the server was not killed during the load"

        rerun = materialize(source, mongo, [*LOAD, *LOAD_CHECKS])
        assert rerun.success and all(check_results(rerun).values()), check_results(rerun)
        # exactly the file's records: every cleaned row's record key once, nothing else
        staged = rerun.output_for_node("cleaned_frame")
        keys = pd.concat(list(staged.chunks(columns=["record_key"])))["record_key"]
        ids = [d["_id"] for d in mongo.hospitalizations().find({}, {"_id": 1})]
        assert len(keys) == expected and sorted(ids) == sorted(keys)
        print(f"killed at {killed[0]} documents (threshold {at_least}); first run success={first.success}; "
              f"after re-run {expected} documents")
    finally:
        embedded_mongo.stop(data_dir)
