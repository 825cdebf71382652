"""The analysts' release, drop by drop: what each drop publishes, groups that reach k published
whole, checks that stop a release before anyone can read it, increments withdrawn whole after an
erasure, a stay in two files counted once."""

import pytest
from bson import json_util

from healthcare_assets.domain import gdpr, privacy, quality_pages
from healthcare_assets.domain.release.publishing import Release
from healthcare_assets.plumbing import document_counts
from healthcare_assets_tests.fixtures.environment import keys_now
from healthcare_assets_tests.fixtures.gdpr import cli
from healthcare_assets_tests.fixtures.release import (
    LOAD_ONLY,
    K,
    assert_copy_equals_view,
    audit,
    canonical,
    rare_group,
    rare_key,
    write_rows,
)
from healthcare_assets_tests.fixtures.runs import check_results, materialize, materialized

# ages in decades, everything else hidden: the rare stays (90+) are a group of their own
pytestmark = pytest.mark.usefixtures("age_only_scheme")


def test_each_drop_publishes_its_own_stays_and_a_group_is_published_whole_at_k(mongo, small_export_rows, tmp_path):
    header, rows = small_export_rows
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


def test_a_failing_privacy_check_publishes_nothing(mongo, small_export_rows, tmp_path, monkeypatch):
    header, rows = small_export_rows
    first = write_rows(tmp_path / "first.csv", header, rows[:800], rare=K - 3)
    assert materialize(first, mongo).success
    rel = Release(mongo.hospitalizations(), keys_now().pseudonym_key())
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


def test_wrong_bookkeeping_fails_k_anonymity_before_publishing(mongo, small_export_rows, tmp_path):
    header, rows = small_export_rows
    assert materialize(write_rows(tmp_path / "a.csv", header, rows[:600], rare=K - 2), mongo).success
    rel = Release(mongo.hospitalizations(), keys_now().pseudonym_key())
    key = rare_key(rel)
    rel.groups.update_one({"_id": key}, {"$set": {"pending.0.p": "someone else"}})  # not as in the source
    before = rel.copy.count_documents({})
    result = materialize(write_rows(tmp_path / "b.csv", header, rows[600:1000], rare=5), mongo)
    assert not result.success
    assert check_results(result)["k_anonymity_at_least_11"] is False
    assert rel.copy.count_documents({}) == before


def test_erasure_that_takes_a_group_under_k_withdraws_it_whole(mongo, data_dir, small_export_rows, tmp_path):
    header, rows = small_export_rows
    assert materialize(write_rows(tmp_path / "a.csv", header, rows[:700], rare=K), mongo).success
    rel = Release(mongo.hospitalizations(), keys_now().pseudonym_key())
    assert rel.copy.count_documents(rare_group(rel)) == K
    who = {"name": rows[0][header.index("Name")], "gender": "Female", "blood_type": "AB-"}
    stays = [d["_id"] for d in mongo.hospitalizations().find(gdpr.patient_query(mongo.hospitalizations(), keys_now(), **who), {"_id": 1})]
    own = rel.copy.count_documents({"_id": {"$in": [privacy.release_id(s, rel.key, rel.state()["epoch"]) for s in stays]}})
    removed = gdpr.erase_patient(mongo.hospitalizations(), keys_now(), gdpr.select(mongo.hospitalizations(), keys_now(), **who))
    assert removed[rel.copy.full_name] == own + K - 1  # theirs, and the ten others of their increment
    assert rel.copy.count_documents(rare_group(rel)) == 0
    assert rel.groups.find_one({"_id": rare_key(rel)})["records"] == K - 1
    source = mongo.hospitalizations()
    assert document_counts.adjust(source, 0) == source.count_documents({})  # the kept count follows erasures
    assert_copy_equals_view(mongo)
    assert audit(mongo) == {"released_copy_is_anonymous": True, "release_bookkeeping_matches_source": True}


def test_a_stay_in_two_files_is_counted_once(mongo, small_export_rows, tmp_path):
    header, rows = small_export_rows
    first = write_rows(tmp_path / "a.csv", header, rows[:700], rare=8)
    second = write_rows(tmp_path / "b.csv", header, rows[:700] + rows[700:900], rare=8)  # the first file again, and more
    assert materialize(first, mongo).success
    result = materialize(second, mongo)
    assert result.success
    assert materialized(result)["anonymized_view"]["stays_added"] == 200
    rel, _ = assert_copy_equals_view(mongo)
    assert rel.groups.find_one({"_id": rare_key(rel)})["records"] == 8  # not 16: no group reached k
    assert audit(mongo) == {"released_copy_is_anonymous": True, "release_bookkeeping_matches_source": True}


def test_summary_shows_the_analysts_copy(mongo, data_dir, small_export_rows, tmp_path):
    header, rows = small_export_rows
    assert materialize(write_rows(tmp_path / "a.csv", header, rows[:600], rare=K), mongo).success
    result = cli("summary", mongo=mongo, data_dir=data_dir)
    assert result.returncode == 0, result.stderr
    copy = Release(mongo.hospitalizations(), b"").copy
    assert f"{copy.full_name}: {copy.count_documents({}):,} documents" in result.stdout


def test_an_erasure_reaches_stays_the_source_no_longer_holds(mongo, small_export_rows, tmp_path):
    """A restore leaves an erased patient's stays out of the source: the erasure, applied again,
    finds them in the release's bookkeeping and takes their increment out of the copy."""
    header, rows = small_export_rows
    assert materialize(write_rows(tmp_path / "a.csv", header, rows[:700], rare=K), mongo).success
    rel = Release(mongo.hospitalizations(), keys_now().pseudonym_key())
    patient = mongo.hospitalizations().find_one({"personal_info.age": 95})["patient_id"]
    mongo.hospitalizations().delete_many({"patient_id": patient})
    document_counts.adjust(mongo.hospitalizations(), -1)
    plan, removed = rel.erase([patient], owner="restore")
    assert removed == K and rel.copy.count_documents(rare_group(rel)) == 0
    assert rel.stays.count_documents({"p": patient}) == 0 and plan.erased_stays
    assert_copy_equals_view(mongo)
    assert audit(mongo) == {"released_copy_is_anonymous": True, "release_bookkeeping_matches_source": True}


def _release_as_written(rel: Release) -> dict:
    """The release by content: the copy's documents without their keyed ids, the bookkeeping as kept."""
    def dumped(docs):
        return sorted(json_util.dumps(d, sort_keys=True) for d in docs)

    state = {k: v for k, v in rel.state().items() if k not in ("epoch", "chosen_at")}
    return {"state": dumped([state]), "copy": canonical(rel.copy.find({})), "groups": dumped(rel.groups.find({})),
            "stays": dumped(rel.stays.find({}))}


def test_a_first_release_read_from_its_staged_file_is_the_one_read_from_the_collection(
        mongo, small_export_rows, tmp_path, monkeypatch):
    header, rows = small_export_rows
    path = write_rows(tmp_path / "first.csv", header, rows[:900], rare=K - 4)
    with monkeypatch.context() as patched:
        patched.setattr(Release, "read_first_from", lambda *_: False)
        from_collection = materialize(path, mongo)
    rel = Release(mongo.hospitalizations(), keys_now().pseudonym_key())
    expected = _release_as_written(rel)
    for name in ("release_scheme", "release_groups", "release_stays", "release_ledger"):
        rel.db.drop_collection(name)
    rel.copy.drop()
    from_file = materialize(path, mongo)
    assert from_collection.success and from_file.success, check_results(from_file)
    assert [materialized(r)["anonymized_view"]["read_staged_file"] for r in (from_collection, from_file)] == [False, True]
    assert _release_as_written(rel) == expected and expected["copy"] and expected["groups"]
    assert_copy_equals_view(mongo)
    assert audit(mongo)["release_bookkeeping_matches_source"] is True


def test_a_first_release_reads_the_collection_when_it_holds_another_file(mongo, small_export_rows, tmp_path):
    header, rows = small_export_rows
    assert materialize(write_rows(tmp_path / "a.csv", header, rows[:400]), mongo, selection=LOAD_ONLY).success
    both = materialize(write_rows(tmp_path / "b.csv", header, rows[400:900]), mongo)
    assert both.success, check_results(both)
    assert materialized(both)["anonymized_view"]["read_staged_file"] is False
    assert Release(mongo.hospitalizations(), b"").state()["counted"] == 900  # a.csv's stays too
