"""s3_csv_drop_sensor against a real HTTP S3 endpoint (moto server), its runs executed end to end
into the embedded MongoDB."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import boto3
import dagster as dg
import pandas as pd
import pytest
from moto.core import DEFAULT_ACCOUNT_ID
from moto.s3.models import s3_backends

from healthcare_assets.defs import s3_drops as sensors
from healthcare_assets.defs.resources import pipeline_settings, resources
from healthcare_assets.defs.s3_drops import (
    SOURCE_ETAG_TAG,
    SOURCE_KEY_TAG,
    s3_csv_drop_job,
)
from healthcare_assets.tooling.generate import generate_csv
from healthcare_assets_tests.fixtures.runs import DEFS, materialized

PREFIX = "incoming/"
LOAD_CHAIN = ("raw_csv", "cleaned_frame", "quality_report", "mongo_hospitalizations")


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, bytes]:
    """Three small, disjoint exports (different seeds), as bytes ready to upload."""
    folder = tmp_path_factory.mktemp("s3-exports")
    files = {}
    for name, seed in (("north", 101), ("south", 202), ("east", 303)):
        generate_csv(rows=300, seed=seed, out=folder / f"{name}.csv")
        files[name] = (folder / f"{name}.csv").read_bytes()
    return files


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


@pytest.fixture
def drop_defs(mongo) -> dg.Definitions:
    """The code location's assets and checks plus the sensor, bound to the test's database."""
    return dg.Definitions(
        assets=DEFS.assets,
        asset_checks=DEFS.asset_checks,
        sensors=sensors.s3_drops().sensors,
        resources={"mongo": mongo, "s3": resources()["s3"], "settings": pipeline_settings()},
    )


def put(bucket: str, key: str, body: bytes) -> dict:
    """Upload an object; return what S3 says of it (ETag without quotes, LastModified)."""
    s3 = boto3.client("s3")
    s3.put_object(Bucket=bucket, Key=key, Body=body)
    head = s3.head_object(Bucket=bucket, Key=key)
    return {"etag": head["ETag"].strip('"'), "last_modified": head["LastModified"]}


def tick(drop_defs: dg.Definitions, instance, cursor: str | None):
    """One sensor evaluation in a fresh context, as the daemon does after reading the stored cursor."""
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, definitions=drop_defs,
        resources={"s3": resources()["s3"], "settings": pipeline_settings()},
    )
    return drop_defs.resolve_sensor_def("s3_csv_drop_sensor").evaluate_tick(context)


def requested_keys(evaluation) -> list[str]:
    return sorted(r.tags[SOURCE_KEY_TAG] for r in evaluation.run_requests)


def execute(
    drop_defs: dg.Definitions, instance, request: dg.RunRequest, assets: list[str] | None = None
) -> dg.ExecuteInProcessResult:
    """Launch the requested run of the sensor's job, with the request's config and tags (only
    some of its assets, if named)."""
    job = drop_defs.resolve_job_def(s3_csv_drop_job.name)
    return job.execute_in_process(
        run_config=request.run_config, tags=request.tags, instance=instance, raise_on_error=False,
        asset_selection=[dg.AssetKey(a) for a in assets] if assets else None,
    )


def load_file(
    drop_defs: dg.Definitions, instance, request: dg.RunRequest
) -> dg.ExecuteInProcessResult:
    """Execute the requested run and check that it loaded its file: every stage up to MongoDB
    materialized with all its checks passing. Stages after the load have tests of their own."""
    result = execute(drop_defs, instance, request)
    done = set(materialized(result))
    failed_checks = [
        f"{e.asset_key.to_user_string()}:{e.check_name}"
        for e in result.get_asset_check_evaluations()
        if not e.passed and e.asset_key.to_user_string() in LOAD_CHAIN
    ]
    assert set(LOAD_CHAIN) <= done and not failed_checks, {
        "not_materialized": sorted(set(LOAD_CHAIN) - done),
        "failed_checks": failed_checks,
        "failed_steps": [e.step_key for e in result.get_step_failure_events()],
    }
    return result


def distinct_rows(*bodies: bytes) -> int:
    """Rows a correct load keeps: the concatenated exports without exact duplicate rows."""
    frames = [pd.read_csv(io.BytesIO(b), dtype=str, keep_default_na=False) for b in bodies]
    return len(pd.concat(frames).drop_duplicates())


def documents_from(mongo, bucket: str, key: str) -> int:
    return mongo.hospitalizations().count_documents({"metadata.source.uri": f"s3://{bucket}/{key}"})


def test_new_file_runs_once_and_the_next_tick_requests_nothing(
    s3_bucket, drop_defs, instance, mongo, small_csv
):
    key = PREFIX + small_csv.name
    body = small_csv.read_bytes()
    obj = put(s3_bucket, key, body)

    first = tick(drop_defs, instance, cursor=None)
    assert len(first.run_requests) == 1
    request = first.run_requests[0]
    assert request.run_key == f"{key}@{obj['etag']}"
    assert request.run_config["ops"] == {"raw_csv": {"config": {"s3_bucket": s3_bucket, "s3_key": key}}}
    assert not any(v for k, v in request.run_config.items() if k != "ops")  # no resource config in a request
    assert request.tags[SOURCE_KEY_TAG] == key and request.tags[SOURCE_ETAG_TAG] == obj["etag"]

    result = load_file(drop_defs, instance, request)
    raw = materialized(result)["raw_csv"]
    assert raw["etag"] == obj["etag"] and raw["size"] == len(body)
    assert mongo.hospitalizations().count_documents({}) == distinct_rows(body)
    doc = mongo.hospitalizations().find_one()
    assert doc["metadata"]["source"]["etag"] == obj["etag"]
    # The file's runs are found by its tag (what the UI's run filter does).
    runs = instance.get_runs(filters=dg.RunsFilter(tags={SOURCE_KEY_TAG: key}))
    assert [r.run_id for r in runs] == [result.run_id]

    second = tick(drop_defs, instance, cursor=first.cursor)
    assert second.run_requests == []
    assert "no new CSV file" in second.skip_message


def stamp_like(bucket: str, key: str, other: str) -> None:
    """Give an object the LastModified of another, as when both were uploaded in one second (S3
    stamps objects to the second). moto's server runs in this process: its store is set directly,
    so the test does not depend on two uploads landing in one wall-clock second."""
    keys = s3_backends[DEFAULT_ACCOUNT_ID]["global"].buckets[bucket].keys
    keys[key].last_modified = keys[other].last_modified


def test_two_files_in_the_same_second_both_run(s3_bucket, drop_defs, instance, mongo, exports):
    # The hard case: the second object arrives after a tick but carries the same LastModified
    # second as the one that tick saw. A cursor holding only the newest timestamp loses it.
    cursor = tick(drop_defs, instance, cursor=None).cursor
    first_key, second_key = f"{PREFIX}north.csv", f"{PREFIX}south.csv"
    first = put(s3_bucket, first_key, exports["north"])
    after_first = tick(drop_defs, instance, cursor)
    put(s3_bucket, second_key, exports["south"])
    stamp_like(s3_bucket, second_key, first_key)
    assert boto3.client("s3").head_object(Bucket=s3_bucket, Key=second_key)["LastModified"] == first["last_modified"]
    after_second = tick(drop_defs, instance, after_first.cursor)
    assert requested_keys(after_first) == [first_key]
    assert requested_keys(after_second) == [second_key]
    cursor = after_second.cursor

    for request in after_first.run_requests + after_second.run_requests:
        load_file(drop_defs, instance, request)
    assert documents_from(mongo, s3_bucket, first_key) == distinct_rows(exports["north"])
    assert documents_from(mongo, s3_bucket, second_key) == distinct_rows(exports["south"])

    # Two files landing together before a tick: one tick requests both.
    put(s3_bucket, f"{PREFIX}a.csv", exports["east"])
    put(s3_bucket, f"{PREFIX}b.csv", exports["north"])
    assert requested_keys(tick(drop_defs, instance, cursor)) == [f"{PREFIX}a.csv", f"{PREFIX}b.csv"]


def test_restored_cursor_does_not_rerun_loaded_files(
    s3_bucket, drop_defs, instance, mongo, exports
):
    loaded = [f"{PREFIX}north.csv", f"{PREFIX}south.csv"]
    put(s3_bucket, loaded[0], exports["north"])
    put(s3_bucket, loaded[1], exports["south"])
    first = tick(drop_defs, instance, cursor=None)
    assert requested_keys(first) == loaded
    for request in first.run_requests:
        load_file(drop_defs, instance, request)
    stored = json.loads(first.cursor)  # what the daemon persists between ticks
    put(s3_bucket, f"{PREFIX}east.csv", exports["east"])

    # After a restart: a new instance and context, only the stored cursor carried over.
    with dg.instance_for_test() as restarted:
        after_restart = tick(drop_defs, restarted, cursor=json.dumps(stored))
        assert requested_keys(after_restart) == [f"{PREFIX}east.csv"]
        # Without the cursor everything would run again: the cursor is what prevents it.
        assert len(tick(drop_defs, restarted, cursor=None).run_requests) == 3
        load_file(drop_defs, restarted, after_restart.run_requests[0])
    assert mongo.hospitalizations().count_documents({}) == distinct_rows(*exports.values())


def test_changed_reupload_runs_again_and_adds_only_new_rows(
    s3_bucket, drop_defs, instance, mongo, exports
):
    key = f"{PREFIX}ward.csv"
    original = exports["north"]
    put(s3_bucket, key, original)
    first = tick(drop_defs, instance, cursor=None)
    load_file(drop_defs, instance, first.run_requests[0])
    before = mongo.hospitalizations().count_documents({})
    assert before == distinct_rows(original)

    # The hospital re-exports the same file with more rows appended.
    extra_rows = exports["south"].split(b"\n", 1)[1]
    changed = original + extra_rows
    obj = put(s3_bucket, key, changed)
    second = tick(drop_defs, instance, first.cursor)
    assert [r.run_key for r in second.run_requests] == [f"{key}@{obj['etag']}"]
    assert second.run_requests[0].run_key != first.run_requests[0].run_key

    result = load_file(drop_defs, instance, second.run_requests[0])
    after = mongo.hospitalizations().count_documents({})
    assert after == distinct_rows(changed)
    load = materialized(result)["mongo_hospitalizations"]
    assert (
        load["documents_inserted"]
        == after - before
        == distinct_rows(changed) - distinct_rows(original)
    )
    assert load["documents_already_present"] == before
    assert tick(drop_defs, instance, second.cursor).run_requests == []


def test_objects_that_are_not_finished_csv_files_are_skipped(
    s3_bucket, drop_defs, instance, exports, capfd
):
    ignored = {
        f"{PREFIX}notes.txt": (b"not an export", "not a .csv file"),
        f"{PREFIX}ward.csv.part": (exports["north"], "a temporary or partial upload"),
        f"{PREFIX}ward_tmp.csv": (exports["north"], "a temporary or partial upload"),
        f"{PREFIX}placeholder.csv": (b"", "empty (0 bytes)"),
    }
    for key, (body, _) in ignored.items():
        put(s3_bucket, key, body)

    first = tick(drop_defs, instance, cursor=None)
    assert first.run_requests == []
    assert f"ignored {len(ignored)} object(s)" in first.skip_message
    tick_log = capfd.readouterr().err
    for key, (_, reason) in ignored.items():
        assert f"ignored s3://{s3_bucket}/{key}: {reason}" in tick_log

    # Once finished (the placeholder gets its content), the file runs; the ignored ones stay ignored.
    put(s3_bucket, f"{PREFIX}placeholder.csv", exports["east"])
    second = tick(drop_defs, instance, first.cursor)
    assert requested_keys(second) == [f"{PREFIX}placeholder.csv"]
    assert "ignored" not in capfd.readouterr().err


def test_a_truncated_file_fails_its_own_run_and_the_next_file_loads(
    s3_bucket, drop_defs, instance, mongo, exports
):
    good_key, broken_key = f"{PREFIX}south.csv", f"{PREFIX}north_truncated.csv"
    body = exports["north"]
    cut = body.index(b',"', len(body) // 2) + 5  # the upload stops inside a quoted field
    put(s3_bucket, broken_key, body[:cut])
    put(s3_bucket, good_key, exports["south"])

    evaluation = tick(drop_defs, instance, cursor=None)
    requests = {r.tags[SOURCE_KEY_TAG]: r for r in evaluation.run_requests}
    assert sorted(requests) == [broken_key, good_key]

    broken = execute(drop_defs, instance, requests[broken_key])
    assert not broken.success
    failure = broken.failure_data_for_node("raw_csv")
    assert "north_truncated.csv" in failure.user_failure_data.description
    assert "may be truncated" in failure.user_failure_data.description
    assert documents_from(mongo, s3_bucket, broken_key) == 0

    load_file(drop_defs, instance, requests[good_key])
    assert documents_from(mongo, s3_bucket, good_key) == distinct_rows(exports["south"])
    # The broken version is not retried every tick; a fixed re-upload (new ETag) would run.
    assert tick(drop_defs, instance, evaluation.cursor).run_requests == []


def test_a_backlog_drains_over_several_ticks_each_file_once(
    s3_bucket, drop_defs, instance, exports, monkeypatch
):
    monkeypatch.setattr(sensors, "MAX_RUNS_PER_TICK", 2)
    keys = [f"{PREFIX}backlog-{i}.csv" for i in range(5)]
    for key in keys:
        put(s3_bucket, key, exports["east"])
    cursor, requested = None, []
    for _ in range(3):
        evaluation = tick(drop_defs, instance, cursor)
        assert len(evaluation.run_requests) <= 2
        requested += requested_keys(evaluation)
        cursor = evaluation.cursor
    assert sorted(requested) == keys
    assert tick(drop_defs, instance, cursor).run_requests == []


# Keys a URL parser misreads ('#' starts a fragment, '?' a query), and others a URL would need quoted.
AWKWARD_KEYS = [f"{PREFIX}ward#3.csv", f"{PREFIX}ward?version=2.csv", f"{PREFIX}ward 3.csv",
                f"{PREFIX}ward%233.csv", f"{PREFIX}wärd-ß-病棟.csv"]


def test_keys_with_url_characters_are_read_as_named(s3_bucket, drop_defs, instance, mongo, exports):
    put(s3_bucket, f"{PREFIX}ward", exports["south"])  # what ward#3.csv and ward?... read as a URL name
    for key in AWKWARD_KEYS:
        put(s3_bucket, key, exports["north"])
    evaluation = tick(drop_defs, instance, cursor=None)
    assert requested_keys(evaluation) == sorted(AWKWARD_KEYS)
    expected = hashlib.sha256(exports["north"]).hexdigest()
    for request in evaluation.run_requests:
        key = request.tags[SOURCE_KEY_TAG]
        assert request.run_config["ops"]["raw_csv"]["config"] == {"s3_bucket": s3_bucket, "s3_key": key}
        result = execute(drop_defs, instance, request, assets=["raw_csv"])
        assert result.success, key
        raw = materialized(result)["raw_csv"]
        assert (raw["bucket"], raw["key"], raw["sha256"]) == (s3_bucket, key, expected)

    # and through the whole load: the documents name the object as S3 has it
    request = next(r for r in evaluation.run_requests if r.tags[SOURCE_KEY_TAG] == AWKWARD_KEYS[0])
    load_file(drop_defs, instance, request)
    source = mongo.hospitalizations().find_one()["metadata"]["source"]
    assert (source["bucket"], source["key"], source["sha256"]) == (s3_bucket, AWKWARD_KEYS[0], expected)


def test_a_key_with_a_long_name_gets_a_short_quarantine_file(s3_bucket, drop_defs, instance, exports):
    key = f"{PREFIX}{'ü' * 200}.csv"  # a 404-byte name: S3 allows 1,024, a file system 255
    rows = exports["north"].decode().splitlines()
    rows[5] = rows[5].replace(",Male,", ",Unknown,").replace(",Female,", ",Unknown,")
    put(s3_bucket, key, ("\n".join(rows) + "\n").encode())
    request = tick(drop_defs, instance, cursor=None).run_requests[0]
    result = execute(drop_defs, instance, request, assets=["raw_csv", "cleaned_frame"])
    assert result.success
    quarantine = Path(materialized(result)["cleaned_frame"]["quarantine_file"])
    assert len(quarantine.name.encode()) <= 255
    assert pd.read_csv(quarantine, dtype=str)["line_number"].tolist() == ["6"]


@pytest.fixture
def small_file_limit(monkeypatch) -> None:
    """Set before the code location's resources are made, as a deployment sets it."""
    monkeypatch.setenv("HEALTHCARE_MAX_FILE_BYTES", "10000")


def test_an_object_over_the_size_limit_is_not_run(small_file_limit, s3_bucket, drop_defs, instance, exports, capfd):
    key = f"{PREFIX}huge.csv"
    obj = put(s3_bucket, key, exports["north"])
    evaluation = tick(drop_defs, instance, cursor=None)
    assert evaluation.run_requests == []
    size = len(exports["north"])
    assert (f"ignored s3://{s3_bucket}/{key}: too large ({size:,} bytes, more than the limit of 10,000); "
            "raise HEALTHCARE_MAX_FILE_BYTES") in capfd.readouterr().err

    # a run of it launched by hand fails before reading it, saying the same
    result = execute(drop_defs, instance, sensors.run_request_for(s3_bucket, key, obj["etag"]), assets=["raw_csv"])
    description = result.failure_data_for_node("raw_csv").user_failure_data.description
    assert "more than the limit of 10,000 (raise HEALTHCARE_MAX_FILE_BYTES" in description
