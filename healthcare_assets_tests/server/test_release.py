"""The analysts' release, operation by operation: what each drop publishes, groups that reach k,
increments withdrawn whole, checks that stop a release before anyone can read it, an interrupted
operation finished by the next run, and the whole-collection audit that recounts everything."""

import csv
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import dagster as dg
import pytest
from bson import json_util

from healthcare_assets.defs.anonymize import analysts_release_audit
from healthcare_assets.defs.resources import pipeline_settings
from healthcare_assets.domain import gdpr, generalization, privacy, quality_pages
from healthcare_assets.domain.release import lease as release_lease
from healthcare_assets.domain.release.lease import Lease, ReleaseLockError
from healthcare_assets.domain.release.publishing import Release
from healthcare_assets.plumbing import document_counts
from healthcare_assets_tests.fixtures.runs import DEFS, check_results, materialize, materialized
from healthcare_assets_tests.server.test_gdpr import cli

K = privacy.K_ANONYMITY
LOAD_ONLY = [a for a in DEFS.assets if a.key.path[0] in ("raw_csv", "cleaned_frame", "quality_report",
                                                          "mongo_hospitalizations")]
# One stay that shares no quasi-identifier group with the generated export's, whatever the scheme:
# every quasi-identifier is set (90+, admitted 2030 for 3 days).
RARE = {"Age": "95", "Gender": "Female", "Blood Type": "AB-", "Medical Condition": "Asthma",
        "Date of Admission": "2030-01-05", "Discharge Date": "2030-01-08", "Insurance Provider": "Aetna",
        "Admission Type": "Elective"}
RARE_VALUES = {"age_range": 95, "gender": "Female", "blood_type": "AB-", "medical_condition": "Asthma",
               "admission_year": 2030, "length_of_stay": 3, "insurance_provider": "Aetna", "admission_type": "Elective"}
# ...with three values of each sensitive field, in turn, so that no value is over half of any group
DIVERSE = ({"Test Results": "Normal", "Medication": "Aspirin"}, {"Test Results": "Abnormal", "Medication": "Lipitor"},
           {"Test Results": "Inconclusive", "Medication": "Ibuprofen"})


def rows_of(path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as f:
        header, *rows = list(csv.reader(f))
    return header, list(map(list, dict.fromkeys(map(tuple, rows))))  # distinct rows


def write_rows(path, header, rows, rare: int = 0, sensitive: tuple[dict, ...] = DIVERSE):
    """The rows, the first `rare` of them moved into one rare quasi-identifier group, with the
    sensitive values given (taken in turn)."""
    out = []
    for i, row in enumerate(rows):
        row = list(row)
        if i < rare:
            for column, value in {**RARE, **sensitive[i % len(sensitive)]}.items():
                row[header.index(column)] = value
        out.append(row)
    with open(path, "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows([header, *out])
    return path


def rare_group(rel: Release) -> dict:
    """The rare stays' group under the scheme in force."""
    return privacy.generalize(RARE_VALUES, rel.state()["scheme"])


def rare_key(rel: Release) -> str:
    return privacy.group_key(rare_group(rel))


# The scheme for these tests: ages in decades, everything else hidden; the rare stays (90+) are a
# group of their own, which the generated exports (ages up to 89) never reach.
AGE_ONLY = {**{field: len(q.levels) - 1 for field, q in zip(privacy.QI_FIELDS, privacy.QUASI_IDENTIFIERS, strict=True)},
            "age_range": 0}


@pytest.fixture(autouse=True)
def age_only_scheme(monkeypatch):
    monkeypatch.setattr(generalization, "lattice", lambda: [AGE_ONLY])


def canonical(docs) -> list[str]:
    return sorted(json_util.dumps({k: v for k, v in d.items() if k != "_id"}, sort_keys=True) for d in docs)


def assert_copy_equals_view(mongo):
    rel = Release(mongo.hospitalizations(), privacy.pseudonym_key())
    copy, view = list(rel.copy.find({})), list(mongo.db()[privacy.VIEW_NAME].find({}))
    assert len(copy) == len(view)
    assert canonical(copy) == canonical(view)
    return rel, copy


def audit(mongo) -> dict[str, bool]:
    result = dg.materialize([*DEFS.assets, *DEFS.asset_checks], selection=dg.AssetSelection.checks(analysts_release_audit),
                            resources={"mongo": mongo, "settings": pipeline_settings()}, raise_on_error=False)
    return check_results(result)


@pytest.fixture
def export(small_csv):
    return rows_of(small_csv)


def test_each_drop_publishes_its_own_stays_and_a_group_is_published_whole_at_k(mongo, export, tmp_path):
    header, rows = export
    first = write_rows(tmp_path / "first.csv", header, rows[:900], rare=K - 4)  # the rare group: 7 stays
    second = write_rows(tmp_path / "second.csv", header, rows[900:1400], rare=4)  # 4 more: 11

    one = materialize(first, mongo)
    assert one.success, check_results(one)
    rel, copy = assert_copy_equals_view(mongo)
    key = rare_key(rel)
    group = rel.groups.find_one({"_id": key})
    assert group["records"] == K - 4 and len(group["pending"]) == K - 4
    assert rel.copy.count_documents(rare_group(rel)) == 0
    assert rel.state()["waiting_since"] == {"0": K - 4}  # the rare stays wait since the first release
    published = materialized(one)["anonymized_view"]["stays_published"]
    assert published == len(copy) == sum(d["records"] for d in rel.groups.find({"records": {"$gte": K}}))

    two = materialize(second, mongo)
    assert two.success, check_results(two)
    rel, copy = assert_copy_equals_view(mongo)
    assert rel.copy.count_documents(rare_group(rel)) == K  # the 7 held back and the 4 new ones
    assert rel.groups.find_one({"_id": key})["pending"] == []
    meta = materialized(two)["anonymized_view"]
    assert meta["stays_published"] == len(copy) - published
    # the 7 waited one drop; everything else the second file released went out at once; what it
    # did not release waits since it came
    state = rel.state()
    assert state["waits"] == {"0": meta["stays_published"] - (K - 4), "1": K - 4}
    waiting = sum(len(g["pending"]) for g in rel.groups.find({}))
    assert set(state["waiting_since"]) <= {"1"} and sum(state["waiting_since"].values()) == waiting
    assert waiting == meta["stays_pending"] + meta["stays_held_back"] == 500 - meta["stays_published"] + (K - 4)
    assert meta["median_drops_waited"] == 0.0
    assert audit(mongo) == {"released_copy_is_anonymous": True, "release_bookkeeping_matches_source": True}

    again = materialize(second, mongo)  # the same file again: nothing to publish
    assert again.success
    assert materialized(again)["anonymized_view"]["already_published"] is True
    assert rel.copy.count_documents({}) == len(copy)


def test_a_failing_privacy_check_publishes_nothing(mongo, export, tmp_path, monkeypatch):
    header, rows = export
    first = write_rows(tmp_path / "first.csv", header, rows[:800], rare=K - 3)
    assert materialize(first, mongo).success
    rel = Release(mongo.hospitalizations(), privacy.pseudonym_key())
    before = canonical(rel.copy.find({}))

    exact_values, generalize = privacy.exact_values, privacy.generalize
    monkeypatch.setattr(privacy, "exact_values", lambda: {  # a release that lets the doctor through
        **exact_values(), "_values": {**exact_values()["_values"], "doctor": "$administrative_info.doctor"}})
    monkeypatch.setattr(privacy, "generalize", lambda values, scheme: {**generalize(values, scheme),
                                                                       "doctor": values["doctor"]})
    monkeypatch.setattr(privacy, "VIEW_FIELDS", (*privacy.VIEW_FIELDS, "doctor"))
    second = write_rows(tmp_path / "second.csv", header, rows[800:1600], rare=5)  # the rare group would reach k
    result = materialize(second, mongo)
    assert not result.success
    assert check_results(result)["no_source_name_in_view"] is False
    [leak] = [e for e in result.get_asset_check_evaluations() if e.check_name == "no_source_name_in_view"]
    assert "source names (of" in leak.description and "none may" in leak.description
    assert {"figure", "limit", "setting", "look_at"} <= leak.metadata.keys()
    doctors = {row[header.index("Doctor")] for row in rows[800:1600]}
    page = quality_pages.report_path(result.run_id).read_text()
    assert "no_source_name_in_view" in quality_pages.index_path().read_text() and "no_source_name_in_view" in page
    assert not any(doctor in leak.description or doctor in page for doctor in doctors)
    assert canonical(rel.copy.find({})) == before
    sha = materialized(result)["mongo_hospitalizations"]["source_sha256"]
    assert rel.ledger.find_one({"_id": sha})["state"] == "loaded"  # loaded, not published


def test_wrong_bookkeeping_fails_k_anonymity_before_publishing(mongo, export, tmp_path):
    header, rows = export
    assert materialize(write_rows(tmp_path / "a.csv", header, rows[:600], rare=K - 2), mongo).success
    rel = Release(mongo.hospitalizations(), privacy.pseudonym_key())
    key = rare_key(rel)
    rel.groups.update_one({"_id": key}, {"$set": {"pending.0.p": "someone else"}})  # not as in the source
    before = rel.copy.count_documents({})
    result = materialize(write_rows(tmp_path / "b.csv", header, rows[600:1000], rare=5), mongo)
    assert not result.success
    assert check_results(result)["k_anonymity_at_least_11"] is False
    assert rel.copy.count_documents({}) == before


def test_erasure_that_takes_a_group_under_k_withdraws_it_whole(mongo, data_dir, export, tmp_path):
    header, rows = export
    assert materialize(write_rows(tmp_path / "a.csv", header, rows[:700], rare=K), mongo).success
    rel = Release(mongo.hospitalizations(), privacy.pseudonym_key())
    assert rel.copy.count_documents(rare_group(rel)) == K
    who = {"name": rows[0][header.index("Name")], "gender": "Female", "blood_type": "AB-"}
    stays = [d["_id"] for d in mongo.hospitalizations().find(gdpr.patient_query(mongo.hospitalizations(), **who), {"_id": 1})]
    own = rel.copy.count_documents({"_id": {"$in": [privacy.release_id(s, rel.key, rel.state()["epoch"]) for s in stays]}})
    removed = gdpr.erase_patient(mongo.hospitalizations(), gdpr.select(mongo.hospitalizations(), **who))
    assert removed[rel.copy.full_name] == own + K - 1  # theirs, and the ten others of their increment
    assert rel.copy.count_documents(rare_group(rel)) == 0
    assert rel.groups.find_one({"_id": rare_key(rel)})["records"] == K - 1
    source = mongo.hospitalizations()
    assert document_counts.adjust(source, 0) == source.count_documents({})  # the kept count follows erasures
    assert_copy_equals_view(mongo)
    assert audit(mongo) == {"released_copy_is_anonymous": True, "release_bookkeeping_matches_source": True}


def test_an_interrupted_release_is_finished_by_the_next_run(mongo, export, tmp_path):
    header, rows = export
    assert materialize(write_rows(tmp_path / "a.csv", header, rows[:500]), mongo).success
    second = write_rows(tmp_path / "b.csv", header, rows[500:1500])
    loaded = materialize(second, mongo, selection=LOAD_ONLY)
    sha = loaded.output_for_node("mongo_hospitalizations")["source_sha256"]
    rel = Release(mongo.hospitalizations(), privacy.pseudonym_key())

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


def test_audit_catches_a_copy_that_drifted_from_its_bookkeeping(mongo, export, tmp_path):
    header, rows = export
    assert materialize(write_rows(tmp_path / "a.csv", header, rows[:800], rare=K), mongo).success
    rel = Release(mongo.hospitalizations(), privacy.pseudonym_key())
    doc = rel.copy.find_one()
    rel.copy.insert_many([{**doc, "_id": f"extra{i}", "gender": "Male", "age_range": "90+", "blood_type": "O-",
                           "medical_condition": "Cancer"} for i in range(3)])
    found = audit(mongo)
    assert found == {"released_copy_is_anonymous": False, "release_bookkeeping_matches_source": False}


def test_a_copy_built_whole_by_an_earlier_version_is_rebuilt_once(mongo, export, tmp_path):
    header, rows = export
    first = write_rows(tmp_path / "a.csv", header, rows[:800], rare=K)
    assert materialize(first, mongo).success
    rel = Release(mongo.hospitalizations(), privacy.pseudonym_key())
    for bookkeeping in (rel.groups, rel.ledger, rel.schemes):
        bookkeeping.drop()  # as an earlier version left it: a copy, no bookkeeping
    rel.copy.update_many({}, {"$set": {"legacy": True}})
    result = materialize(write_rows(tmp_path / "b.csv", header, rows[800:1400]), mongo)
    assert result.success
    assert rel.copy.count_documents({"legacy": True}) == 0
    assert_copy_equals_view(mongo)
    assert Counter(d["state"] for d in rel.ledger.find({}, {"state": 1})) == {"applied": 2, "done": 1}


def test_two_releases_at_once_are_applied_one_after_the_other(mongo, export, tmp_path):
    """Two runs reach the publishing step together, each with half of a group that only reaches k
    with both halves. Under the lease the second plans after the first applied, so the group is
    published whole; without it both would plan from the same sizes and one count would be lost."""
    header, rows = export
    base = materialize(write_rows(tmp_path / "base.csv", header, rows[1000:1500]), mongo)
    assert base.success
    files = [write_rows(tmp_path / "a.csv", header, rows[:500], rare=6),
             write_rows(tmp_path / "b.csv", header, rows[500:1000], rare=6)]
    loads = [materialize(f, mongo, selection=LOAD_ONLY).output_for_node("mongo_hospitalizations") for f in files]
    start = threading.Barrier(2)

    def publish(loaded: dict) -> int:
        rel = Release(mongo.hospitalizations(), privacy.pseudonym_key())
        start.wait()
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


def test_a_stay_in_two_files_is_counted_once(mongo, export, tmp_path):
    header, rows = export
    first = write_rows(tmp_path / "a.csv", header, rows[:700], rare=8)
    second = write_rows(tmp_path / "b.csv", header, rows[:700] + rows[700:900], rare=8)  # the first file again, and more
    assert materialize(first, mongo).success
    result = materialize(second, mongo)
    assert result.success
    assert materialized(result)["anonymized_view"]["stays_added"] == 200
    rel, _ = assert_copy_equals_view(mongo)
    assert rel.groups.find_one({"_id": rare_key(rel)})["records"] == 8  # not 16: no group reached k
    assert audit(mongo) == {"released_copy_is_anonymous": True, "release_bookkeeping_matches_source": True}


def test_summary_shows_the_analysts_copy(mongo, data_dir, export, tmp_path):
    header, rows = export
    assert materialize(write_rows(tmp_path / "a.csv", header, rows[:600], rare=K), mongo).success
    result = cli("summary", mongo=mongo, data_dir=data_dir)
    assert result.returncode == 0, result.stderr
    copy = Release(mongo.hospitalizations(), b"").copy
    assert f"{copy.full_name}: {copy.count_documents({}):,} documents" in result.stdout


def test_a_rebuild_leaves_a_file_still_loading_to_its_own_run(mongo, export, tmp_path):
    """A rebuild that saw only part of a file being loaded must not mark it published: the rest of
    its stays would never be counted. It leaves the whole file to the run loading it."""
    header, rows = export
    assert materialize(write_rows(tmp_path / "a.csv", header, rows[:600]), mongo).success
    loaded = materialize(write_rows(tmp_path / "b.csv", header, rows[600:1000]), mongo, selection=LOAD_ONLY)
    sha = loaded.output_for_node("mongo_hospitalizations")["source_sha256"]
    rel = Release(mongo.hospitalizations(), privacy.pseudonym_key())
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


def test_an_erasure_reaches_stays_the_source_no_longer_holds(mongo, export, tmp_path):
    """A restore leaves an erased patient's stays out of the source: the erasure, applied again,
    finds them in the release's bookkeeping and takes their increment out of the copy."""
    header, rows = export
    assert materialize(write_rows(tmp_path / "a.csv", header, rows[:700], rare=K), mongo).success
    rel = Release(mongo.hospitalizations(), privacy.pseudonym_key())
    patient = mongo.hospitalizations().find_one({"personal_info.age": 95})["patient_id"]
    mongo.hospitalizations().delete_many({"patient_id": patient})
    document_counts.adjust(mongo.hospitalizations(), -1)
    plan, removed = rel.erase([patient], owner="restore")
    assert removed == K and rel.copy.count_documents(rare_group(rel)) == 0
    assert rel.stays.count_documents({"p": patient}) == 0 and plan.erased_stays
    assert_copy_equals_view(mongo)
    assert audit(mongo) == {"released_copy_is_anonymous": True, "release_bookkeeping_matches_source": True}
