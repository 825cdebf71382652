"""Right to portability and right to erasure, end to end on the embedded server."""

import csv
import os
import subprocess
import sys

from bson import json_util

from healthcare_assets import access, gdpr
from healthcare_assets_tests.conftest import materialize, materialized

SYSTEM_DATABASES = {"admin", "local", "config"}


def cli(*args, mongo, data_dir):
    env = {**os.environ, "MONGODB_DATABASE": mongo.database, "HEALTHCARE_DATA_DIR": str(data_dir)}
    return subprocess.run([sys.executable, "-m", "healthcare_assets.cli", *args], check=False, env=env,
                          capture_output=True, text=True, timeout=120)


def export_with_quarantined_row(small_csv, path):
    """The small export plus one more stay of patient #10 whose age is unreadable (quarantined)."""
    with open(small_csv, newline="") as f:
        rows = list(csv.reader(f))
    patient = list(rows[10])
    patient[1] = "unknown"
    rows.append(patient)
    with open(path, "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
    return rows[10]


def mentions(mongo, data_dir, name: str) -> list[str]:
    """Every collection of this deployment and every file under the data folder that mentions the name
    (the database's own storage files excepted: see the README on erasure)."""
    needle = name.casefold()
    client = mongo.client()
    found = []
    for db_name in set(access.databases(mongo.database).values()) - SYSTEM_DATABASES:
        for coll in client[db_name].list_collection_names():
            hits = sum(needle in json_util.dumps(doc).casefold() for doc in client[db_name][coll].find())
            if hits:
                found.append(f"{db_name}.{coll}: {hits}")
    for path in data_dir.rglob("*"):
        if (path.is_file() and "mongo" not in path.relative_to(data_dir).parts[:1]
                and needle.encode() in path.read_bytes().lower()):
            found.append(str(path))
    return found


def test_export_then_erase_everywhere(mongo, data_dir, small_csv, tmp_path):
    source = tmp_path / "export.csv"
    row = export_with_quarantined_row(small_csv, source)
    name = gdpr.normalized(row[0])
    assert materialize(source, mongo).success
    collection = mongo.hospitalizations()
    access.refresh_doctor_app(collection, row[7])  # the patient's hospital, as the doctor app sees it
    stays = collection.count_documents({"personal_info.name": name})
    assert stays >= 1
    assert mentions(mongo, data_dir, name), "the patient should be findable before erasure"

    out = tmp_path / "patient.json"
    result = cli("export-patient", "--name", row[0].upper(), "--out", str(out), mongo=mongo, data_dir=data_dir)
    assert result.returncode == 0, result.stderr
    exported = json_util.loads(out.read_text())["records"]
    in_db = list(collection.find({"personal_info.name": name}))
    assert sorted(exported, key=lambda d: d["_id"]) == sorted(in_db, key=lambda d: d["_id"])  # round trip

    result = cli("erase-patient", "--name", name, mongo=mongo, data_dir=data_dir)
    assert result.returncode == 0, result.stderr
    assert f"removed {stays:>6}  {mongo.database}.hospitalizations" in result.stdout
    assert "quarantine_rows" in result.stdout
    assert mentions(mongo, data_dir, name) == []

    # loading the same file again does not bring the patient back
    out.unlink()
    rerun = materialize(source, mongo)
    assert rerun.success
    assert materialized(rerun)["mongo_hospitalizations"]["rows_erased_patients"] == stays
    assert collection.count_documents({"personal_info.name": name}) == 0
