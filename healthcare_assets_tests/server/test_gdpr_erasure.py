"""A patient's records exported and erased everywhere: databases, reports, quarantine, staging;
names refused when too short, matched whole, and a shared name erased only for the one picked."""

import csv
import json
import os
import re
import subprocess
import sys

import pandas as pd
import pytest
from bson import json_util

from healthcare_assets.domain import access, encryption, gdpr, privacy
from healthcare_assets.domain.audit import AUDIT_COLLECTION, ERASURES_COLLECTION
from healthcare_assets.plumbing import settings
from healthcare_assets_tests.fixtures.environment import REPO, keys_now
from healthcare_assets_tests.fixtures.gdpr import cli, export_with_quarantined_row
from healthcare_assets_tests.fixtures.runs import materialize, materialized

SYSTEM_DATABASES = {"admin", "local", "config"}


def mentions(mongo, data_dir, needles: set[str]) -> list[str]:
    """Every collection of this deployment and every file under the data folder that holds one of
    the needles (a name, keyed ids), letter case aside; staged Parquet is decoded first (its pages
    are compressed, so a name in it is not in its bytes). The database's own storage files are
    not searched: see docs/security.md on erasure."""
    folded = {n.casefold() for n in needles}

    def holds(text: str) -> bool:
        text = text.casefold()
        return any(n in text for n in folded)

    client = mongo.client()
    found = []
    for db_name in set(access.databases(mongo.database).values()) - SYSTEM_DATABASES:
        for coll in client[db_name].list_collection_names():
            hits = sum(holds(json_util.dumps(doc)) for doc in client[db_name][coll].find())
            if hits:
                found.append(f"{db_name}.{coll}")
    for path in data_dir.rglob("*"):
        if not path.is_file() or path.relative_to(data_dir).parts[0] == "mongo":
            continue
        if path.suffix == ".parquet":
            text = pd.read_parquet(path).astype(str).to_csv(index=False)
        else:
            text = path.read_bytes().decode("utf-8", errors="replace")
        if holds(text):
            found.append(str(path.relative_to(data_dir)))
    return found


def places(output: str, verb: str) -> dict[str, int]:
    """What erase-patient printed it removed (or would remove), per place."""
    return {place: int(count) for count, place in re.findall(rf"^{verb} +(\d+)  (\S+)$", output, flags=re.MULTILINE)}


def run_in_a_process(source, mongo, data_dir, folder) -> None:
    """The drop job on one file in a process of its own, as Dagster runs every run: once it has
    exited, its staging folder is no longer in use and erasure may remove it."""
    home = folder / "dagster_home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    config = folder / "run.json"
    config.write_text(json.dumps({"ops": {"raw_csv": {"config": {"source": str(source)}}}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_")}
    env.update(MONGODB_DATABASE=mongo.database, HEALTHCARE_DATA_DIR=str(data_dir), DAGSTER_HOME=str(home),
               PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-m", "dagster", "job", "execute", "-m", "healthcare_assets.definitions",
                             "-j", "s3_csv_drop_job", "-c", str(config)], env=env, cwd=folder, check=False,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]


@pytest.mark.slow
def test_export_then_erase_everywhere(mongo, data_dir, small_csv, tmp_path):
    source = tmp_path / "export.csv"
    row = export_with_quarantined_row(small_csv, source)
    name = gdpr.normalized(row[0])
    run_in_a_process(source, mongo, data_dir, tmp_path)
    collection = mongo.hospitalizations()
    by_name = gdpr.patient_query(collection, keys_now(), name)  # the name as stored: encrypted
    stays = list(collection.find(by_name))
    assert stays
    [patient_id] = {d["patient_id"] for d in stays}
    # the doctor app serves the patient's hospital (as cleaned: the raw name may end in a comma)
    [hospital] = {d["administrative_info"]["hospital"] for d in stays}
    access.refresh_doctor_app(collection, keys_now(), hospital)
    dbs = access.databases(mongo.database)
    doctor_app = mongo.client()[dbs["doctor_app"]]["hospitalizations"]
    assert doctor_app.count_documents({"patient_id": patient_id}) == len(stays)
    # the analysts' copy holds the patient's stays under keyed ids of their own
    copy = mongo.client()[dbs["analytics"]][privacy.COPY_COLLECTION]
    epoch = collection.database["release_scheme"].find_one({"_id": "current"})["epoch"]
    copy_ids = [privacy.release_id(d["_id"], keys_now().pseudonym_key(), epoch) for d in stays]
    assert copy.count_documents({"_id": {"$in": copy_ids}}) == len(stays)
    copy_before = copy.count_documents({})
    keyed = {patient_id, *copy_ids, *(d["_id"] for d in stays)}
    before = mentions(mongo, data_dir, {name, *keyed})
    staged = [p for p in before if p.startswith("staging/") and p.endswith(".parquet")]
    assert staged, before  # the decoded Parquet is searched: the patient's staged rows are seen
    named = mentions(mongo, data_dir, {name})
    reports = [p for p in named if p.startswith("reports/")]
    # encrypted in the collection and in the doctor app's copy: in clear in no database
    assert not [p for p in named if p.split(".")[0] in dbs.values()], named
    staging_folders = len([p for p in (data_dir / "staging").iterdir() if p.is_dir()])

    out = tmp_path / "patient.json"
    result = cli("export-patient", "--name", row[0].upper(), "--out", str(out), mongo=mongo, data_dir=data_dir)
    assert result.returncode == 0, result.stderr
    exported = json_util.loads(out.read_text())["records"]
    clear = [encryption.cipher(collection, keys_now()).decrypt_document(d) for d in stays]
    assert {d["personal_info"]["name"] for d in exported} == {name}  # decrypted for the patient
    assert sorted(exported, key=lambda d: d["_id"]) == sorted(clear, key=lambda d: d["_id"])  # round trip

    dry_run = cli("erase-patient", "--name", name, mongo=mongo, data_dir=data_dir)
    assert dry_run.returncode == 0, dry_run.stderr
    assert places(dry_run.stdout, "would remove") == {
        collection.full_name: len(stays), "quarantine_rows": 1, "report_files": len(reports),
        "staging_folders": staging_folders}
    assert "dry run" in dry_run.stdout
    assert collection.count_documents(by_name) == len(stays)

    result = cli("erase-patient", "--name", name, "--yes", mongo=mongo, data_dir=data_dir)
    assert result.returncode == 0, result.stderr
    removed = places(result.stdout, "removed")
    copy_removed = copy_before - copy.count_documents({})  # the stays, and any group left under k
    assert copy_removed >= len(stays)
    assert removed == {
        collection.full_name: len(stays), copy.full_name: copy_removed, doctor_app.full_name: len(stays),
        "quarantine_rows": 1, "report_files": len(reports), "staging_folders": staging_folders}
    assert mentions(mongo, data_dir, {name}) == []
    # keyed ids stay only where erasure itself records them: the erasure list and the audit log
    assert mentions(mongo, data_dir, keyed) == [f"{dbs['audit']}.{c}" for c in sorted((AUDIT_COLLECTION, ERASURES_COLLECTION))]

    # loading the same file again does not bring the patient back
    out.unlink()
    rerun = materialize(source, mongo)
    assert rerun.success
    assert materialized(rerun)["mongo_hospitalizations"]["rows_erased_patients"] == len(stays)
    assert collection.count_documents({"patient_id": patient_id}) == 0


def files_under(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_blank_and_one_letter_names_are_refused(mongo, data_dir):
    """A blank name matched every row without a name, every report (the empty string is in every
    text) and every staging folder."""
    (data_dir / "quarantine").mkdir(parents=True)
    (data_dir / "quarantine" / "q.csv").write_text("line_number,Name,Gender,Blood Type,reason\n2,,Male,A+,Name: missing\n")
    (data_dir / "reports").mkdir()
    (data_dir / "reports" / "summary.json").write_text('{"rows": 3}')
    (data_dir / "staging" / "some-run").mkdir(parents=True)
    (data_dir / "staging" / "some-run" / "raw.parquet").write_bytes(b"staged")
    before = files_under(data_dir)
    for name in (" ", "", "A", " b. ", "-"):
        result = cli("erase-patient", "--name", name, "--yes", mongo=mongo, data_dir=data_dir)
        assert result.returncode == 2 and "is not a name" in result.stderr, (name, result.stdout, result.stderr)
    assert files_under(data_dir) == before


def test_reports_are_matched_by_whole_value_not_substring(mongo, data_dir):
    reports = data_dir / "reports"
    reports.mkdir(parents=True)
    keep = {"summary.json": '{"title": "Summary of stays", "note": "Mary Smith, Marylebone"}',
            "people.csv": "name,ward\nMary Smith,3\nRosemary,4\n",
            "index.html": "<h1>Summary</h1><p>Maryland</p>",
            "table.md": "| Primary | Maryanne |"}
    erase = {"patient.json": '{"rows": [{"name": "mary"}]}', "quarantine.csv": "name\n MARY \n",
             "page.html": "<td>Mary</td>", "notes.md": "stay of Mary, 2021"}
    for file, text in {**keep, **erase}.items():
        (reports / file).write_text(text)
    result = cli("erase-patient", "--name", "mary", "--yes", mongo=mongo, data_dir=data_dir)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in reports.iterdir()) == sorted(keep)


def shared_name_export(small_csv, path) -> list[list[str]]:
    """The small export with five stays renamed Alex Morgan: three of a Male B-, two of a Female O+."""
    with open(small_csv, newline="") as f:
        rows = list(csv.reader(f))
    people = [("Male", "B-")] * 3 + [("Female", "O+")] * 2
    for i, (gender, blood) in enumerate(people, start=1):
        rows[i][0], rows[i][2], rows[i][3] = "alex MORGAN", gender, blood
    with open(path, "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
    return rows


@pytest.mark.slow
def test_a_shared_name_lists_its_patients_and_erases_only_the_one_picked(mongo, data_dir, small_csv, tmp_path):
    source = tmp_path / "shared.csv"
    shared_name_export(small_csv, source)
    result = materialize(source, mongo)  # in this process, which lives on: its run counts as in progress
    assert result.success
    collection = mongo.hospitalizations()
    name = gdpr.patient_query(collection, keys_now(), "Alex Morgan")
    assert collection.count_documents(name) == 5
    in_progress = settings.staging_dir() / result.run_id
    finished = settings.staging_dir() / "a-run-that-ended"
    finished.mkdir(parents=True)

    refused = cli("erase-patient", "--name", "Alex Morgan", "--yes", mongo=mongo, data_dir=data_dir)
    assert refused.returncode == 5, refused.stdout + refused.stderr
    listing = refused.stderr
    assert "is the name of 2 patients" in listing and "--all" in listing
    ids = sorted(collection.distinct("patient_id", name))
    assert all(f"patient {i[:12]}" in listing for i in ids) and not any(i in listing for i in ids)
    assert "Male    B-   3 stays" in listing and "Female  O+   2 stays" in listing
    assert collection.count_documents(name) == 5

    export = cli("export-patient", "--name", "Alex Morgan", "--all", "--out", str(tmp_path / "all.json"),
                 mongo=mongo, data_dir=data_dir)
    assert export.returncode == 0 and "wrote 5 records" in export.stdout, export.stderr

    dry_run = cli("erase-patient", "--name", "Alex Morgan", "--gender", "Female", mongo=mongo, data_dir=data_dir)
    assert dry_run.returncode == 0 and "dry run" in dry_run.stdout, dry_run.stderr
    assert collection.count_documents(name) == 5

    erased = cli("erase-patient", "--name", "Alex Morgan", "--gender", "Female", "--yes", mongo=mongo, data_dir=data_dir)
    assert erased.returncode == 0, erased.stderr
    assert f"removed      2  {mongo.database}.hospitalizations" in erased.stdout
    assert collection.count_documents(name) == 3
    assert set(collection.distinct("personal_info.gender", name)) == {"Male"}
    # the run of this process is still in progress as far as anyone can tell: its folder stays
    assert (in_progress / "raw.parquet").exists() and not finished.exists()
    assert f"kept      1  {gdpr.KEPT}" in erased.stdout
