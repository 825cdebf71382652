"""The analysts' release as an operation: an interrupted release finished by the next run, the
lease that makes two releases apply one after the other, rebuilds, and the audit that catches a
copy drifted from its bookkeeping."""

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from healthcare_assets.domain import privacy
from healthcare_assets.domain.release import lease as release_lease
from healthcare_assets.domain.release.lease import Lease, ReleaseLockError
from healthcare_assets.domain.release.publishing import STAGED_COPY, Release
from healthcare_assets.plumbing import settings
from healthcare_assets_tests.fixtures.environment import keys_now
from healthcare_assets_tests.fixtures.release import (
    LOAD_ONLY,
    K,
    assert_copy_equals_view,
    audit,
    rare_group,
    write_rows,
)
from healthcare_assets_tests.fixtures.runs import materialize, materialized

# ages in decades, everything else hidden: the rare stays (90+) are a group of their own
pytestmark = pytest.mark.usefixtures("age_only_scheme")


def test_an_interrupted_release_is_finished_by_the_next_run(mongo, small_export_rows, tmp_path):
    header, rows = small_export_rows
    assert materialize(write_rows(tmp_path / "a.csv", header, rows[:500]), mongo).success
    second = write_rows(tmp_path / "b.csv", header, rows[500:1500])
    loaded = materialize(second, mongo, selection=LOAD_ONLY)
    sha = loaded.output_for_node("mongo_hospitalizations")["source_sha256"]
    rel = Release(mongo.hospitalizations(), keys_now().pseudonym_key())

    class Crash(Exception):
        pass

    class CrashingLease(Lease):
        def renew(self):
            raise Crash  # after the first batch is in the copy

    with CrashingLease(rel.db, "crashed-run") as lease:
        plan = rel.plan_file(sha, 1000)
        with pytest.raises(Crash):
            rel.apply(plan, lease)
    assert rel.ledger.find_one({"_id": sha})["state"] == "applying"
    with rel.lease("next-run", wait_s=5) as lease:
        assert rel.finish_interrupted(lease) == [sha]
    assert rel.ledger.find_one({"_id": sha})["state"] == "applied"
    assert_copy_equals_view(mongo)
    assert audit(mongo)["release_bookkeeping_matches_source"] is True


def test_the_lease_is_exclusive_until_it_runs_out(mongo):
    db = mongo.db()
    with Lease(db, "first"):
        with pytest.raises(ReleaseLockError, match="held by first"):
            Lease(db, "second", wait_s=1).__enter__()
        db[release_lease.LOCK].update_one({"_id": "release"}, {"$set": {"expires_at": release_lease.utc_now()}})
        with Lease(db, "second", wait_s=5) as taken_over:  # the first holder's lease ran out
            pass
    assert db[release_lease.LOCK].count_documents({}) == 0
    with pytest.raises(ReleaseLockError, match="lost"):
        taken_over.renew()


def test_audit_catches_a_copy_that_drifted_from_its_bookkeeping(mongo, small_export_rows, tmp_path):
    header, rows = small_export_rows
    assert materialize(write_rows(tmp_path / "a.csv", header, rows[:800], rare=K), mongo).success
    rel = Release(mongo.hospitalizations(), keys_now().pseudonym_key())
    doc = rel.copy.find_one()
    rel.copy.insert_many([{**doc, "_id": f"extra{i}", "gender": "Male", "age_range": "90+", "blood_type": "O-",
                           "medical_condition": "Cancer"} for i in range(3)])
    found = audit(mongo)
    assert found == {"released_copy_is_anonymous": False, "release_bookkeeping_matches_source": False}


def test_a_copy_built_whole_by_an_earlier_version_is_rebuilt_once(mongo, small_export_rows, tmp_path):
    header, rows = small_export_rows
    first = write_rows(tmp_path / "a.csv", header, rows[:800], rare=K)
    assert materialize(first, mongo).success
    rel = Release(mongo.hospitalizations(), keys_now().pseudonym_key())
    for bookkeeping in (rel.groups, rel.ledger, rel.schemes):
        bookkeeping.drop()  # as an earlier version left it: a copy, no bookkeeping
    rel.copy.update_many({}, {"$set": {"legacy": True}})
    result = materialize(write_rows(tmp_path / "b.csv", header, rows[800:1400]), mongo)
    assert result.success
    assert rel.copy.count_documents({"legacy": True}) == 0
    assert_copy_equals_view(mongo)
    assert Counter(d["state"] for d in rel.ledger.find({}, {"state": 1})) == {"applied": 2, "done": 1}


def test_two_releases_at_once_are_applied_one_after_the_other(mongo, small_export_rows, tmp_path):
    """Two runs reach the publishing step together, each with half of a group that only reaches k
    with both halves. Under the lease the second plans after the first applied, so the group is
    published whole; without it both would plan from the same sizes and one count would be lost."""
    header, rows = small_export_rows
    base = materialize(write_rows(tmp_path / "base.csv", header, rows[1000:1500]), mongo)
    assert base.success
    files = [write_rows(tmp_path / "a.csv", header, rows[:500], rare=6),
             write_rows(tmp_path / "b.csv", header, rows[500:1000], rare=6)]
    loads = [materialize(f, mongo, selection=LOAD_ONLY).output_for_node("mongo_hospitalizations") for f in files]
    start = threading.Barrier(2)

    def publish(loaded: dict) -> int:
        rel = Release(mongo.hospitalizations(), keys_now().pseudonym_key())
        start.wait(timeout=60)  # the other thread never arriving fails the test instead of hanging it
        with rel.lease(loaded["source_sha256"], wait_s=60) as lease:
            plan = rel.plan_file(loaded["source_sha256"], loaded["rows_loaded"])
            time.sleep(1)  # as long as a run's checks take: the other run is waiting, not planning
            return rel.apply(plan, lease)

    with ThreadPoolExecutor(2) as pool:
        published = list(pool.map(publish, loads))
    rel, copy = assert_copy_equals_view(mongo)
    assert rel.copy.count_documents(rare_group(rel)) == 12
    assert sum(published) == len(copy) - materialized(base)["anonymized_view"]["stays_published"]
    assert audit(mongo) == {"released_copy_is_anonymous": True, "release_bookkeeping_matches_source": True}


def test_a_rebuild_leaves_a_file_still_loading_to_its_own_run(mongo, small_export_rows, tmp_path):
    """A rebuild that saw only part of a file being loaded must not mark it published: the rest of
    its stays would never be counted. It leaves the whole file to the run loading it."""
    header, rows = small_export_rows
    assert materialize(write_rows(tmp_path / "a.csv", header, rows[:600]), mongo).success
    loaded = materialize(write_rows(tmp_path / "b.csv", header, rows[600:1000]), mongo, selection=LOAD_ONLY)
    sha = loaded.output_for_node("mongo_hospitalizations")["source_sha256"]
    rel = Release(mongo.hospitalizations(), keys_now().pseudonym_key())
    rel.ledger.update_one({"_id": sha}, {"$set": {"state": "loading"}})  # as if its load were still running
    with rel.lease("rebuilding") as lease:
        rebuilt = rel.plan_rebuild(lease)
        rel.apply_rebuild(rebuilt, lease)
    assert sha not in rebuilt.files
    assert rel.state()["counted"] == 600
    assert rel.ledger.find_one({"_id": sha})["state"] == "loading"
    rel.ledger.update_one({"_id": sha}, {"$set": {"state": "loaded"}})  # the load ends; its run publishes
    with rel.lease("its-run") as lease:
        plan = rel.plan_file(sha, 400)
        rel.apply(plan, lease)
    assert plan.stays == 400
    assert_copy_equals_view(mongo)
    assert audit(mongo) == {"released_copy_is_anonymous": True, "release_bookkeeping_matches_source": True}


def test_an_erasure_after_an_interrupted_first_release_leaves_nothing_of_it(mongo, small_export_rows, tmp_path):
    """A first release killed while staging its copy: the erasure drops what it staged (the bookkeeping written
    in place holds the patient's keyed id and values), and the next run releases from scratch."""
    header, rows = small_export_rows
    path = write_rows(tmp_path / "a.csv", header, rows[:900])
    assert materialize(path, mongo, selection=LOAD_ONLY).success
    rel = Release(mongo.hospitalizations(), keys_now().pseudonym_key())

    class Crash(Exception):
        pass

    class CrashingLease(Lease):
        def renew(self):
            if rel.db[STAGED_COPY].estimated_document_count():
                raise Crash  # part of the copy is staged

    with CrashingLease(rel.db, "crashed-run") as lease:
        rebuilt = rel.plan_rebuild(lease)
        with pytest.raises(Crash):
            rel.apply_rebuild(rebuilt, lease)
    patient = rel.stays.find_one()["p"]
    assert rel.db[STAGED_COPY].estimated_document_count() > 0
    rel.erase([patient], "erasing")
    left = [f"{db.name}.{name}" for db in (rel.db, rel.copy.database) for name in db.list_collection_names()
            if db[name].find_one({"$or": [{"p": patient}, {"patient_id": patient}, {"pending.p": patient}]})
            or name in (STAGED_COPY, privacy.COPY_COLLECTION)]
    assert left == []
    assert not any((settings.data_dir() / "release_spill").iterdir())
    assert materialize(path, mongo).success
    assert_copy_equals_view(mongo)
    assert audit(mongo)["release_bookkeeping_matches_source"] is True
