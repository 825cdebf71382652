"""Every corpus case gets its expected outcome; every load adds up, checked against the database.
Hostile input is refused before it is read whole, and no failure quotes what it should not."""

import csv

import boto3
import dagster as dg
import pandas as pd
import pytest

from healthcare_assets.defs.ingest import SourceConfig, raw_csv
from healthcare_assets.defs.resources import pipeline_settings
from healthcare_assets.plumbing import settings
from healthcare_assets.plumbing.backup_store import BackupStoreResource
from healthcare_assets_tests.fixtures.corpus import CASES, Case, utf8
from healthcare_assets_tests.fixtures.runs import check_results, materialize, materialized


@pytest.fixture(scope="module")
def clean_rows(small_csv) -> list[list[str]]:
    """200 distinct rows of a generated export: the base every case is made from."""
    with open(small_csv, newline="") as f:
        header, *rows = list(csv.reader(f))
    distinct = list(dict.fromkeys(map(tuple, rows)))
    return [header, *map(list, distinct[:200])]


def failure_messages(result) -> str:
    texts = []
    for event in result.all_events:
        if event.is_step_failure:
            data = event.step_failure_data
            texts.append(data.error.message if data.error else "")
            texts.append(data.user_failure_data.description if data.user_failure_data else "")
    return "\n".join(t for t in texts if t)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_corpus_case(case: Case, clean_rows, mongo, tmp_path):
    path = tmp_path / f"{case.name}.csv"
    path.write_bytes(case.make(clean_rows))
    result = materialize(path, mongo)
    collection = mongo.hospitalizations()

    if not case.loads:
        assert not result.success
        if case.stage == "raw_csv":
            message = failure_messages(result)
            assert path.name in message and case.message in message, message
            assert "Traceback" not in message
        else:
            assert check_results(result)[case.stage] is False
        assert "mongo_hospitalizations" not in materialized(result)
        assert collection.count_documents({}) == 0
        return

    assert result.success, (check_results(result), failure_messages(result))
    clean = materialized(result)["cleaned_frame"]
    load = materialized(result)["mongo_hospitalizations"]
    documents = collection.count_documents({"metadata.sources": load["source_sha256"]})
    assert clean["rows_in"] == documents + clean["rows_quarantined"] + clean["duplicates_removed"]
    assert clean["rows_quarantined"] == case.quarantined
    assert clean["duplicates_removed"] == case.extra.get("duplicates", 0)
    if case.quarantined:
        quarantine = pd.read_csv(clean["quarantine_file"], dtype=str, keep_default_na=False)
        assert len(quarantine) == case.quarantined
        assert quarantine["reason"].str.startswith(case.reasons).all(), quarantine["reason"].tolist()
        if "quarantine_line" in case.extra:
            assert quarantine["line_number"].astype(int).tolist() == [case.extra["quarantine_line"]]
    else:
        assert "quarantine_file" not in clean and not list(settings.quarantine_dir().glob("*"))


# ---- hostile input: what a run may read, what a failure may quote, how much a file may be --------

SECRET = "HEALTHCARE_ADMIN_MASTER_PASSWORD=not-a-real-password-3f9c"


def read_raw(source) -> dg.ExecuteInProcessResult:
    """raw_csv alone on one source, as a run's config names it."""
    return dg.materialize([raw_csv], run_config=dg.RunConfig(ops={"raw_csv": SourceConfig(source=str(source))}),
                          resources={"settings": pipeline_settings(), "backups": BackupStoreResource()}, raise_on_error=False)


def read_object(bucket: str, key: str) -> dg.ExecuteInProcessResult:
    """raw_csv alone on one S3 object named apart, as the sensor names it."""
    return dg.materialize([raw_csv], run_config=dg.RunConfig(ops={"raw_csv": SourceConfig(s3_bucket=bucket, s3_key=key)}),
                          resources={"settings": pipeline_settings(), "backups": BackupStoreResource()}, raise_on_error=False)


def test_a_run_reads_only_objects_under_the_drop_bucket_and_prefix(s3_bucket, clean_rows):
    """s3:// in a run's config is held to the drop zone (HEALTHCARE_S3_BUCKET, HEALTHCARE_S3_PREFIX), as
    a path is to the import folders: whoever can launch a run cannot read the rest of what the
    pipeline's credentials can."""
    s3 = boto3.client("s3")
    body = utf8(clean_rows)
    other = f"{s3_bucket}-other"
    s3.create_bucket(Bucket=other)
    for bucket, key in ((other, "incoming/ward.csv"), (s3_bucket, "elsewhere/ward.csv"), (s3_bucket, "incoming/ward.csv"),
                        (s3_bucket, "incoming/../elsewhere/ward.csv"), (s3_bucket, "incoming/")):
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    refused = [(other, "incoming/ward.csv"), (s3_bucket, "elsewhere/ward.csv"), (s3_bucket, "incoming/../elsewhere/ward.csv"),
               (s3_bucket, "incoming/./ward.csv"), (s3_bucket, "incoming/"), (s3_bucket, "incoming/ "),
               (s3_bucket, "incomingward.csv"), ("", "incoming/ward.csv")]
    for bucket, key in refused:
        for result in (read_raw(f"s3://{bucket}/{key}"), *([read_object(bucket, key)] if bucket and key else [])):
            message = failure_messages(result)
            assert not result.success, (bucket, key)
            assert f"s3://{s3_bucket}/incoming/" in message and "HEALTHCARE_S3_BUCKET" in message, (bucket, key, message)
            assert "Traceback" not in message
    assert read_raw(f"s3://{s3_bucket}/incoming/ward.csv").success
    assert read_object(s3_bucket, "incoming/ward.csv").success


def test_a_run_reads_only_files_under_the_import_folders(data_dir, tmp_path, monkeypatch, clean_rows):
    imports = tmp_path / "imports"
    imports.mkdir()
    monkeypatch.setenv("HEALTHCARE_IMPORT_DIR", str(imports))
    data_dir.mkdir(parents=True)
    secrets = data_dir / "secrets.env"
    secrets.write_text(SECRET + "\n")
    (imports / "export.csv").symlink_to(secrets)  # a link inside the folder to a file outside it
    for source in (secrets, imports / "export.csv", imports / ".." / data_dir.name / "secrets.env", "/etc/passwd"):
        result = read_raw(source)
        message = failure_messages(result)
        assert not result.success
        assert "not under an import folder" in message and "HEALTHCARE_IMPORT_DIR" in message, message
        assert "not-a-real-password" not in message
    (imports / "ward.csv").write_bytes(utf8(clean_rows))
    assert read_raw(imports / "ward.csv").success


def test_a_failure_quotes_no_header_text_beyond_a_few_safe_column_names(data_dir, tmp_path):
    one_column = tmp_path / "secrets.csv"  # any file's first line, inside an import folder
    one_column.write_text(SECRET + "\n" + "OTHER=1\n")
    wide = tmp_path / "wide.csv"
    header = ["Name", SECRET, "Age\x1b[2J\x07", "x" * 500, *(f"col{i}" for i in range(60))]
    wide.write_text(",".join(header) + "\n" + ",".join("1" for _ in header) + "\n")
    for path in (one_column, wide):
        message = failure_messages(read_raw(path))
        assert path.name in message and "header" in message, message
        assert "not-a-real-password" not in message and "=" not in message.split(path.name, 1)[1]
    assert "unexpected columns ['<withheld>', 'Age[2J', '" + "x" * 40 + "...'" in message
    assert "col16" in message and "col17" not in message and "... 43 more" in message
    assert "\x1b" not in message and "\x07" not in message


@pytest.mark.parametrize("variable, limit, make, says", [
    ("HEALTHCARE_MAX_HEADER_COLUMNS", None,  # the default holds: 125 KiB of 20,000 columns
     lambda rows: utf8([[f"column {i}" for i in range(20_000)], ["1"] * 20_000]),
     "line 1: the header has 20,000 columns, more than the limit of 100"),
    ("HEALTHCARE_MAX_HEADER_BYTES", "1024", lambda rows: utf8([[*rows[0][:-1], "x" * 5000], *rows[1:]]),
     "line 1: the header is 5,"),
    ("HEALTHCARE_MAX_LINE_BYTES", "4096", lambda rows: utf8(rows) + b"x" * 100_000,  # no newline at the end
     "line 202: longer than the limit of 4,096 bytes for one line"),
    ("HEALTHCARE_MAX_FILE_BYTES", "10000", lambda rows: utf8(rows), "bytes, more than the limit of 10,000"),
], ids=["columns", "header_bytes", "line", "file"])
def test_oversized_input_fails_naming_the_limit_and_its_variable(variable, limit, make, says, clean_rows,
                                                                 data_dir, tmp_path, monkeypatch):
    if limit:
        monkeypatch.setenv(variable, limit)
    path = tmp_path / "oversized.csv"
    path.write_bytes(make(clean_rows))
    result = read_raw(path)
    message = failure_messages(result)
    assert not result.success
    assert path.name in message and says in message and f"raise {variable}" in message, message
    assert len(message) < 2_000  # the limit, not the input
