"""Which objects s3_csv_drop_sensor runs, on a real HTTP S3 endpoint (moto server): unfinished or
non-CSV objects skipped, a truncated file failing only its own run, keys with URL characters read
as named, long names, objects over the size limit."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest

from healthcare_assets.defs import s3_drops as sensors
from healthcare_assets.defs.s3_drops import SOURCE_KEY_TAG
from healthcare_assets_tests.fixtures.drop_sensor import (
    PREFIX,
    distinct_rows,
    documents_from,
    execute,
    load_file,
    put,
    requested_keys,
    tick,
)
from healthcare_assets_tests.fixtures.runs import materialized


def test_objects_that_are_not_finished_csv_files_are_skipped(
    s3_bucket, drop_defs, dagster_instance, sensor_export_bytes, capfd
):
    ignored = {
        f"{PREFIX}notes.txt": (b"not an export", "not a .csv file"),
        f"{PREFIX}ward.csv.part": (sensor_export_bytes["north"], "a temporary or partial upload"),
        f"{PREFIX}ward_tmp.csv": (sensor_export_bytes["north"], "a temporary or partial upload"),
        f"{PREFIX}placeholder.csv": (b"", "empty (0 bytes)"),
    }
    for key, (body, _) in ignored.items():
        put(s3_bucket, key, body)

    first = tick(drop_defs, dagster_instance, cursor=None)
    assert first.run_requests == []
    assert f"ignored {len(ignored)} object(s)" in first.skip_message
    tick_log = capfd.readouterr().err
    for key, (_, reason) in ignored.items():
        assert f"ignored s3://{s3_bucket}/{key}: {reason}" in tick_log

    # Once finished (the placeholder gets its content), the file runs; the ignored ones stay ignored.
    put(s3_bucket, f"{PREFIX}placeholder.csv", sensor_export_bytes["east"])
    second = tick(drop_defs, dagster_instance, first.cursor)
    assert requested_keys(second) == [f"{PREFIX}placeholder.csv"]
    assert "ignored" not in capfd.readouterr().err


def test_a_truncated_file_fails_its_own_run_and_the_next_file_loads(
    s3_bucket, drop_defs, dagster_instance, mongo, sensor_export_bytes
):
    good_key, broken_key = f"{PREFIX}south.csv", f"{PREFIX}north_truncated.csv"
    body = sensor_export_bytes["north"]
    cut = body.index(b',"', len(body) // 2) + 5  # the upload stops inside a quoted field
    put(s3_bucket, broken_key, body[:cut])
    put(s3_bucket, good_key, sensor_export_bytes["south"])

    evaluation = tick(drop_defs, dagster_instance, cursor=None)
    requests = {r.tags[SOURCE_KEY_TAG]: r for r in evaluation.run_requests}
    assert sorted(requests) == [broken_key, good_key]

    broken = execute(drop_defs, dagster_instance, requests[broken_key])
    assert not broken.success
    failure = broken.failure_data_for_node("raw_csv")
    assert "north_truncated.csv" in failure.user_failure_data.description
    assert "may be truncated" in failure.user_failure_data.description
    assert documents_from(mongo, s3_bucket, broken_key) == 0

    load_file(drop_defs, dagster_instance, requests[good_key])
    assert documents_from(mongo, s3_bucket, good_key) == distinct_rows(sensor_export_bytes["south"])
    # The broken version is not retried every tick; a fixed re-upload (new ETag) would run.
    assert tick(drop_defs, dagster_instance, evaluation.cursor).run_requests == []


# Keys a URL parser misreads ('#' starts a fragment, '?' a query), and others a URL would need quoted.
AWKWARD_KEYS = [f"{PREFIX}ward#3.csv", f"{PREFIX}ward?version=2.csv", f"{PREFIX}ward 3.csv",
                f"{PREFIX}ward%233.csv", f"{PREFIX}wärd-ß-病棟.csv"]


def test_keys_with_url_characters_are_read_as_named(s3_bucket, drop_defs, dagster_instance, mongo, sensor_export_bytes):
    put(s3_bucket, f"{PREFIX}ward", sensor_export_bytes["south"])  # what ward#3.csv and ward?... read as a URL name
    for key in AWKWARD_KEYS:
        put(s3_bucket, key, sensor_export_bytes["north"])
    evaluation = tick(drop_defs, dagster_instance, cursor=None)
    assert requested_keys(evaluation) == sorted(AWKWARD_KEYS)
    expected = hashlib.sha256(sensor_export_bytes["north"]).hexdigest()
    for request in evaluation.run_requests:
        key = request.tags[SOURCE_KEY_TAG]
        assert request.run_config["ops"]["raw_csv"]["config"] == {"s3_bucket": s3_bucket, "s3_key": key}
        result = execute(drop_defs, dagster_instance, request, assets=["raw_csv"])
        assert result.success, key
        raw = materialized(result)["raw_csv"]
        assert (raw["bucket"], raw["key"], raw["sha256"]) == (s3_bucket, key, expected)

    # and through the whole load: the documents name the object as S3 has it
    request = next(r for r in evaluation.run_requests if r.tags[SOURCE_KEY_TAG] == AWKWARD_KEYS[0])
    load_file(drop_defs, dagster_instance, request)
    source = mongo.hospitalizations().find_one()["metadata"]["source"]
    assert (source["bucket"], source["key"], source["sha256"]) == (s3_bucket, AWKWARD_KEYS[0], expected)


def test_a_key_with_a_long_name_gets_a_short_quarantine_file(s3_bucket, drop_defs, dagster_instance, sensor_export_bytes):
    key = f"{PREFIX}{'ü' * 200}.csv"  # a 404-byte name: S3 allows 1,024, a file system 255
    rows = sensor_export_bytes["north"].decode().splitlines()
    rows[5] = rows[5].replace(",Male,", ",Unknown,").replace(",Female,", ",Unknown,")
    put(s3_bucket, key, ("\n".join(rows) + "\n").encode())
    request = tick(drop_defs, dagster_instance, cursor=None).run_requests[0]
    result = execute(drop_defs, dagster_instance, request, assets=["raw_csv", "cleaned_frame"])
    assert result.success
    quarantine = Path(materialized(result)["cleaned_frame"]["quarantine_file"])
    assert len(quarantine.name.encode()) <= 255
    assert pd.read_csv(quarantine, dtype=str)["line_number"].tolist() == ["6"]


@pytest.fixture
def small_file_limit(monkeypatch) -> None:
    """Set before the code location's resources are made, as a deployment sets it."""
    monkeypatch.setenv("HEALTHCARE_MAX_FILE_BYTES", "10000")


def test_an_object_over_the_size_limit_is_not_run(small_file_limit, s3_bucket, drop_defs, dagster_instance, sensor_export_bytes, capfd):
    key = f"{PREFIX}huge.csv"
    obj = put(s3_bucket, key, sensor_export_bytes["north"])
    evaluation = tick(drop_defs, dagster_instance, cursor=None)
    assert evaluation.run_requests == []
    size = len(sensor_export_bytes["north"])
    assert (f"ignored s3://{s3_bucket}/{key}: too large ({size:,} bytes, more than the limit of 10,000); "
            "raise HEALTHCARE_MAX_FILE_BYTES") in capfd.readouterr().err

    # a run of it launched by hand fails before reading it, saying the same
    result = execute(drop_defs, dagster_instance, sensors.run_request_for(s3_bucket, key, obj["etag"]), assets=["raw_csv"])
    description = result.failure_data_for_node("raw_csv").user_failure_data.description
    assert "more than the limit of 10,000 (raise HEALTHCARE_MAX_FILE_BYTES" in description
