"""s3_csv_drop_sensor's ticks against a real HTTP S3 endpoint (moto server), its runs executed end
to end into the embedded MongoDB: each new or changed file runs once, files of one second both
run, a restored cursor reruns nothing, a backlog drains over several ticks."""

from __future__ import annotations

import json

import boto3
import dagster as dg
from moto.core import DEFAULT_ACCOUNT_ID
from moto.s3.models import s3_backends

from healthcare_assets.defs import s3_drops as sensors
from healthcare_assets.defs.s3_drops import (
    SOURCE_ETAG_TAG,
    SOURCE_KEY_TAG,
)
from healthcare_assets_tests.fixtures.drop_sensor import (
    PREFIX,
    distinct_rows,
    documents_from,
    load_file,
    put,
    requested_keys,
    tick,
)
from healthcare_assets_tests.fixtures.runs import materialized


def test_new_file_runs_once_and_the_next_tick_requests_nothing(
    s3_bucket, drop_defs, dagster_instance, mongo, small_csv
):
    key = PREFIX + small_csv.name
    body = small_csv.read_bytes()
    obj = put(s3_bucket, key, body)

    first = tick(drop_defs, dagster_instance, cursor=None)
    assert len(first.run_requests) == 1
    request = first.run_requests[0]
    assert request.run_key == f"{key}@{obj['etag']}"
    assert request.run_config["ops"] == {"raw_csv": {"config": {"s3_bucket": s3_bucket, "s3_key": key}}}
    assert not any(v for k, v in request.run_config.items() if k != "ops")  # no resource config in a request
    assert request.tags[SOURCE_KEY_TAG] == key and request.tags[SOURCE_ETAG_TAG] == obj["etag"]

    result = load_file(drop_defs, dagster_instance, request)
    raw = materialized(result)["raw_csv"]
    assert raw["etag"] == obj["etag"] and raw["size"] == len(body)
    assert mongo.hospitalizations().count_documents({}) == distinct_rows(body)
    doc = mongo.hospitalizations().find_one()
    assert doc["metadata"]["source"]["etag"] == obj["etag"]
    # The file's runs are found by its tag (what the UI's run filter does).
    runs = dagster_instance.get_runs(filters=dg.RunsFilter(tags={SOURCE_KEY_TAG: key}))
    assert [r.run_id for r in runs] == [result.run_id]

    second = tick(drop_defs, dagster_instance, cursor=first.cursor)
    assert second.run_requests == []
    assert "no new CSV file" in second.skip_message


def stamp_like(bucket: str, key: str, other: str) -> None:
    """Give an object the LastModified of another, as when both were uploaded in one second (S3
    stamps objects to the second). moto's server runs in this process: its store is set directly,
    so the test does not depend on two uploads landing in one wall-clock second."""
    keys = s3_backends[DEFAULT_ACCOUNT_ID]["global"].buckets[bucket].keys
    keys[key].last_modified = keys[other].last_modified


def test_two_files_in_the_same_second_both_run(s3_bucket, drop_defs, dagster_instance, mongo, sensor_export_bytes):
    # The hard case: the second object arrives after a tick but carries the same LastModified
    # second as the one that tick saw. A cursor holding only the newest timestamp loses it.
    cursor = tick(drop_defs, dagster_instance, cursor=None).cursor
    first_key, second_key = f"{PREFIX}north.csv", f"{PREFIX}south.csv"
    first = put(s3_bucket, first_key, sensor_export_bytes["north"])
    after_first = tick(drop_defs, dagster_instance, cursor)
    put(s3_bucket, second_key, sensor_export_bytes["south"])
    stamp_like(s3_bucket, second_key, first_key)
    assert boto3.client("s3").head_object(Bucket=s3_bucket, Key=second_key)["LastModified"] == first["last_modified"]
    after_second = tick(drop_defs, dagster_instance, after_first.cursor)
    assert requested_keys(after_first) == [first_key]
    assert requested_keys(after_second) == [second_key]
    cursor = after_second.cursor

    for request in after_first.run_requests + after_second.run_requests:
        load_file(drop_defs, dagster_instance, request)
    assert documents_from(mongo, s3_bucket, first_key) == distinct_rows(sensor_export_bytes["north"])
    assert documents_from(mongo, s3_bucket, second_key) == distinct_rows(sensor_export_bytes["south"])

    # Two files landing together before a tick: one tick requests both.
    put(s3_bucket, f"{PREFIX}a.csv", sensor_export_bytes["east"])
    put(s3_bucket, f"{PREFIX}b.csv", sensor_export_bytes["north"])
    assert requested_keys(tick(drop_defs, dagster_instance, cursor)) == [f"{PREFIX}a.csv", f"{PREFIX}b.csv"]


def test_restored_cursor_does_not_rerun_loaded_files(
    s3_bucket, drop_defs, dagster_instance, mongo, sensor_export_bytes
):
    loaded = [f"{PREFIX}north.csv", f"{PREFIX}south.csv"]
    put(s3_bucket, loaded[0], sensor_export_bytes["north"])
    put(s3_bucket, loaded[1], sensor_export_bytes["south"])
    first = tick(drop_defs, dagster_instance, cursor=None)
    assert requested_keys(first) == loaded
    for request in first.run_requests:
        load_file(drop_defs, dagster_instance, request)
    stored = json.loads(first.cursor)  # what the daemon persists between ticks
    put(s3_bucket, f"{PREFIX}east.csv", sensor_export_bytes["east"])

    # After a restart: a new instance and context, only the stored cursor carried over.
    with dg.instance_for_test() as restarted:
        after_restart = tick(drop_defs, restarted, cursor=json.dumps(stored))
        assert requested_keys(after_restart) == [f"{PREFIX}east.csv"]
        # Without the cursor everything would run again: the cursor is what prevents it.
        assert len(tick(drop_defs, restarted, cursor=None).run_requests) == 3
        load_file(drop_defs, restarted, after_restart.run_requests[0])
    assert mongo.hospitalizations().count_documents({}) == distinct_rows(*sensor_export_bytes.values())


def test_changed_reupload_runs_again_and_adds_only_new_rows(
    s3_bucket, drop_defs, dagster_instance, mongo, sensor_export_bytes
):
    key = f"{PREFIX}ward.csv"
    original = sensor_export_bytes["north"]
    put(s3_bucket, key, original)
    first = tick(drop_defs, dagster_instance, cursor=None)
    load_file(drop_defs, dagster_instance, first.run_requests[0])
    before = mongo.hospitalizations().count_documents({})
    assert before == distinct_rows(original)

    # The hospital re-exports the same file with more rows appended.
    extra_rows = sensor_export_bytes["south"].split(b"\n", 1)[1]
    changed = original + extra_rows
    obj = put(s3_bucket, key, changed)
    second = tick(drop_defs, dagster_instance, first.cursor)
    assert [r.run_key for r in second.run_requests] == [f"{key}@{obj['etag']}"]
    assert second.run_requests[0].run_key != first.run_requests[0].run_key

    result = load_file(drop_defs, dagster_instance, second.run_requests[0])
    after = mongo.hospitalizations().count_documents({})
    assert after == distinct_rows(changed)
    load = materialized(result)["mongo_hospitalizations"]
    assert (
        load["documents_inserted"]
        == after - before
        == distinct_rows(changed) - distinct_rows(original)
    )
    assert load["documents_already_present"] == before
    assert tick(drop_defs, dagster_instance, second.cursor).run_requests == []


def test_a_backlog_drains_over_several_ticks_each_file_once(
    s3_bucket, drop_defs, dagster_instance, sensor_export_bytes, monkeypatch
):
    monkeypatch.setattr(sensors, "MAX_RUNS_PER_TICK", 2)
    keys = [f"{PREFIX}backlog-{i}.csv" for i in range(5)]
    for key in keys:
        put(s3_bucket, key, sensor_export_bytes["east"])
    cursor, requested = None, []
    for _ in range(3):
        evaluation = tick(drop_defs, dagster_instance, cursor)
        assert len(evaluation.run_requests) <= 2
        requested += requested_keys(evaluation)
        cursor = evaluation.cursor
    assert sorted(requested) == keys
    assert tick(drop_defs, dagster_instance, cursor).run_requests == []
