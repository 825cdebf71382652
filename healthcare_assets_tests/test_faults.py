"""Killing the embedded server in the middle of a load loses nothing and duplicates nothing."""

import os
import signal
import threading
import time

import pandas as pd
import pymongo

from healthcare_assets.generate import generate_csv
from healthcare_assets.resources import embedded_mongo
from healthcare_assets.resources.mongo import MongoResource
from healthcare_assets_tests.conftest import materialize


def kill_when_loading(data_dir, database, at_least, killed: list):
    """Watch the collection grow; SIGKILL the daemon once `at_least` documents are in."""
    state = embedded_mongo.status(data_dir)
    client = pymongo.MongoClient(embedded_mongo.client_uri(data_dir), serverSelectionTimeoutMS=2000)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            count = client[database].hospitalizations.estimated_document_count()
        except pymongo.errors.PyMongoError:
            count = 0
        if count >= at_least:
            os.kill(state["pid"], signal.SIGKILL)
            killed.append(count)
            return
        time.sleep(0.05)


def test_kill_server_mid_load_then_rerun(tmp_path, monkeypatch):
    monkeypatch.delenv("MONGODB_URI", raising=False)  # the embedded server, restarted on demand
    data_dir = tmp_path / "data"
    monkeypatch.setenv("HEALTHCARE_DATA_DIR", str(data_dir))
    source = tmp_path / "big_export.csv"
    generate_csv(rows=20_000, seed=5, out=source)
    raw = pd.read_csv(source, dtype=str, keep_default_na=False)
    expected = len(raw) - int(raw.duplicated().sum())
    mongo = MongoResource(database="faults")
    try:
        embedded_mongo.ensure_running(data_dir)
        killed: list[int] = []
        killer = threading.Thread(target=kill_when_loading, args=(data_dir, "faults", expected // 4, killed))
        killer.start()
        first = materialize(source, mongo)  # the load's RetryPolicy may already finish the job
        killer.join()
        assert killed and 0 < killed[0] < expected, "the server was not killed during the load"

        rerun = materialize(source, mongo)
        assert rerun.success
        collection = mongo.hospitalizations()
        assert collection.count_documents({}) == expected
        ids = {d["_id"] for d in collection.find({}, {"_id": 1})}
        assert len(ids) == expected
        print(f"killed at {killed[0]} documents; first run success={first.success}; after re-run {expected} documents")
    finally:
        embedded_mongo.stop(data_dir)
