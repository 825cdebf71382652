"""The release policy: generalization chosen for the data, k-anonymity and l-diversity on every
quasi-identifier released, judged independently by pycanon, and each check failing on a release
that breaks it."""

import pandas as pd
import pytest

from healthcare_assets.domain import generalization, privacy
from healthcare_assets.domain.release.publishing import Release
from healthcare_assets.tooling.generate import generate_csv
from healthcare_assets_tests.fixtures.environment import keys_now
from healthcare_assets_tests.fixtures.release import (
    AGE_ONLY,
    DIVERSE,
    LOAD_ONLY,
    RARE_VALUES,
    audit,
    rows_of,
    write_rows,
)
from healthcare_assets_tests.fixtures.runs import check_results, materialize, materialized

K = privacy.K_ANONYMITY
MIDDLE = {"age_range": 1, "gender": 0, "blood_type": 1, "medical_condition": 0, "admission_year": 1,
          "length_of_stay": 0, "insurance_provider": 1, "admission_type": 0}
HIDDEN = {q.field: len(q.levels) - 1 for q in privacy.QUASI_IDENTIFIERS}


def released_table(rel: Release) -> pd.DataFrame:
    return pd.DataFrame(list(rel.copy.find({}, {"_id": 0})))


def test_python_and_the_server_generalize_alike(mongo, small_csv):
    """Drops label stays in Python, the view on the server: the two must agree on every stay."""
    result = materialize(small_csv, mongo, selection=LOAD_ONLY)
    assert result.success
    loaded = materialized(result)["mongo_hospitalizations"]["rows_loaded"]
    for scheme in (privacy.FINEST, MIDDLE, HIDDEN):
        pipeline = [{"$project": {**privacy.exact_values(), "labels": privacy.release_projection(scheme)}}]
        docs = list(mongo.hospitalizations().aggregate(pipeline))
        assert len(docs) == loaded > 0  # every stay the load wrote is compared
        mismatched = [d["_id"] for d in docs
                      if {f: d["labels"][f] for f in privacy.QI_FIELDS} != privacy.generalize(d["_values"], scheme)]
        assert mismatched == [], scheme
        assert all(privacy.allowed(f, d["labels"][f], scheme) for d in docs for f in privacy.VIEW_FIELDS)


@pytest.mark.parametrize("field, label, allowed", [
    ("length_of_stay", "12", False), ("length_of_stay", "8-14", True), ("admission_year", "2023", True),
    ("admission_year", "2023-2024", False), ("age_range", "95", False), ("age_range", "90+", True),
    ("blood_type", "AB", False), ("gender", "*", False), ("gender", "", False), ("test_results", "Normal", True),
    ("test_results", "#", False), ("billing_range", "12,345.67", False)])
def test_only_the_schemes_labels_are_allowed(field, label, allowed):
    assert privacy.allowed(field, label, privacy.FINEST) is allowed


def test_the_search_finds_the_least_loss_within_the_suppression_limit(tmp_path):
    """The early stop of choose() gives what evaluating every scheme of the lattice gives."""
    path = tmp_path / "export.csv"
    generate_csv(rows=3_000, seed=5, out=path)
    raw = pd.read_csv(path)
    admitted, discharged = pd.to_datetime(raw["Date of Admission"]), pd.to_datetime(raw["Discharge Date"])
    table = generalization.Table.from_frame(pd.DataFrame({
        "age_range": raw["Age"], "gender": raw["Gender"], "blood_type": raw["Blood Type"],
        "medical_condition": raw["Medical Condition"], "admission_year": admitted.dt.year,
        "length_of_stay": (discharged - admitted).dt.days, "insurance_provider": raw["Insurance Provider"],
        "admission_type": raw["Admission Type"], "test_results": raw["Test Results"],
        "medication": raw["Medication"], "patient_id": raw["Name"].str.casefold() + raw["Gender"] + raw["Blood Type"]}))
    chosen, tried = generalization.choose(table)
    every = [table.evaluate(s) for s in generalization.lattice()]
    feasible = [e for e in every if e.suppressed_share <= privacy.MAX_SUPPRESSED]
    assert tried < len(every)
    assert chosen.loss == pytest.approx(min(e.loss for e in feasible))
    assert chosen.suppressed_share <= privacy.MAX_SUPPRESSED and chosen.k >= K and chosen.share <= privacy.MAX_SHARE


def test_the_search_counts_patients_not_stays():
    """Eleven stays of one patient are one patient: the group is held back; eleven patients are not."""
    stay = {"age_range": 30, "gender": "Female", "blood_type": "A+", "medical_condition": "Asthma",
            "admission_year": 2020, "length_of_stay": 3, "insurance_provider": "Aetna", "admission_type": "Elective"}
    one = pd.DataFrame({**{f: [v] * 11 for f, v in stay.items()}, "test_results": ["Normal", "Abnormal"] * 5 + ["x"],
                        "medication": ["Aspirin", "Lipitor", "Ibuprofen"] * 3 + ["Aspirin", "Lipitor"],
                        "patient_id": ["same"] * 11})
    assert generalization.Table.from_frame(one).evaluate(privacy.FINEST).suppressed == 11
    many = one.assign(patient_id=[f"p{i}" for i in range(11)])
    found = generalization.Table.from_frame(many).evaluate(privacy.FINEST)
    assert (found.suppressed, found.k, round(found.share, 2)) == (0, 11, 0.45)


def test_the_independent_judges_measure_k_l_and_share_as_defined():
    table = pd.DataFrame({**{f: ["a"] * 12 for f in privacy.QI_FIELDS}, "test_results": ["Normal"] * 12,
                          "medication": ["Aspirin", "Lipitor", "Ibuprofen"] * 4})
    assert generalization.independent_measures(table) == (12, 1, 1.0)  # one test result for all twelve
    table.loc[:5, "test_results"] = "Abnormal"
    assert generalization.independent_measures(table) == (12, 2, 0.5)
    table.loc[0, "gender"] = "b"
    assert generalization.independent_measures(table)[0] == 1  # a singleton group
    assert generalization.independent_measures(table.iloc[:0]) == (0, 0, 0.0)


# ---- each blocking check fails on a release that breaks it, and nothing is published ----------

def _leak_length_of_stay(monkeypatch):
    generalize = privacy.generalize
    monkeypatch.setattr(privacy, "generalize", lambda values, scheme: {
        **generalize(values, scheme), "length_of_stay": str(values["length_of_stay"])})


def _publish_any_group(monkeypatch):  # a singleton group is published
    monkeypatch.setattr(privacy, "qualifies", lambda people, counts, stays: stays > 0)


def _ignore_diversity(monkeypatch):  # a group with one test result is published
    monkeypatch.setattr(privacy, "qualifies", lambda people, counts, stays: people >= K)


ONE_VALUE = ({"Test Results": "Normal", "Medication": "Aspirin"},)


@pytest.mark.parametrize("break_release, rare, sensitive, failing", [
    (_leak_length_of_stay, 0, ONE_VALUE, ["quasi_identifiers_are_generalized"]),
    (_publish_any_group, 2, DIVERSE, ["k_anonymity_at_least_11"]),
    (_publish_any_group, 1, ONE_VALUE, ["k_anonymity_at_least_11", "no_sensitive_value_over_half"]),  # a singleton
    (_ignore_diversity, K, ONE_VALUE, ["no_sensitive_value_over_half"]),
])
@pytest.mark.parametrize("first_release", [True, False], ids=["rebuild", "incremental"])
@pytest.mark.slow
def test_each_check_stops_a_release_that_breaks_it(mongo, small_csv, tmp_path, monkeypatch,
                                                  break_release, rare, sensitive, failing, first_release):
    header, rows = rows_of(small_csv)
    monkeypatch.setattr(generalization, "lattice", lambda: [AGE_ONLY])  # the rare stays: a group of their own
    rel = Release(mongo.hospitalizations(), keys_now().pseudonym_key())
    if not first_release:
        assert materialize(write_rows(tmp_path / "base.csv", header, rows[:1_200]), mongo).success
    before = sorted(map(str, rel.copy.find({})))
    break_release(monkeypatch)
    result = materialize(write_rows(tmp_path / "drop.csv", header, rows[1_200:1_800], rare, sensitive), mongo)
    assert not result.success
    assert [name for name, passed in check_results(result).items() if not passed] == failing
    assert sorted(map(str, rel.copy.find({}))) == before


@pytest.mark.slow
def test_a_homogeneous_group_is_held_back_until_it_is_diverse(mongo, small_csv, tmp_path, monkeypatch):
    header, rows = rows_of(small_csv)
    monkeypatch.setattr(generalization, "lattice", lambda: [AGE_ONLY])
    assert materialize(write_rows(tmp_path / "a.csv", header, rows[:1_000], K + 1, ONE_VALUE), mongo).success
    rel = Release(mongo.hospitalizations(), keys_now().pseudonym_key())
    group = privacy.generalize(RARE_VALUES, rel.state()["scheme"])
    assert rel.copy.count_documents(group) == 0  # 12 stays, all with the same result and medication
    assert rel.groups.find_one({"_id": privacy.group_key(group)})["published"] is False
    assert materialize(write_rows(tmp_path / "b.csv", header, rows[1_000:1_300], K, DIVERSE[1:]), mongo).success
    assert rel.copy.count_documents(group) == 0  # 12 of 23 alike: still over half
    assert materialize(write_rows(tmp_path / "c.csv", header, rows[1_300:1_500], 1, DIVERSE[1:]), mongo).success
    assert rel.copy.count_documents(group) == 2 * (K + 1)  # 12 of 24: at most half
    assert audit(mongo) == {"released_copy_is_anonymous": True, "release_bookkeeping_matches_source": True}


@pytest.mark.slow
def test_the_audits_independent_judge_catches_a_copy_broken_after_release(mongo, small_csv):
    assert materialize(small_csv, mongo).success
    rel = Release(mongo.hospitalizations(), keys_now().pseudonym_key())
    assert audit(mongo)["released_copy_is_anonymous"] is True
    first, second = rel.groups.find({"published": True}).limit(2)
    ids = [d["_id"] for d in rel.copy.find(first["group"], {"_id": 1})]
    rel.copy.delete_many({"_id": {"$in": ids[1:]}})  # one stay left in its group
    rel.copy.update_many(second["group"], {"$set": {"test_results": "Normal"}})  # one result for the group
    assert audit(mongo)["released_copy_is_anonymous"] is False
    assert generalization.independent_measures(released_table(rel))[:2] == (1, 1)


@pytest.mark.slow
def test_a_file_that_doubles_the_release_chooses_the_scheme_again(mongo, small_csv, tmp_path):
    header, rows = rows_of(small_csv)
    first = materialize(write_rows(tmp_path / "a.csv", header, rows[:400]), mongo)
    assert materialized(first)["anonymized_view"]["rebuilt"] is True
    second = materialize(write_rows(tmp_path / "b.csv", header, rows[400:600]), mongo)
    assert materialized(second)["anonymized_view"]["rebuilt"] is False
    third = materialize(write_rows(tmp_path / "c.csv", header, rows[600:1_900]), mongo)
    meta = materialized(third)["anonymized_view"]
    assert meta["stays_counted"] == mongo.hospitalizations().count_documents({})
    rel = Release(mongo.hospitalizations(), keys_now().pseudonym_key())
    assert rel.state()["attempted_on"] == meta["stays_counted"]  # chosen again: published, or refused when its
    assert meta["rebuilt"] is (meta["rebuild_refused"] is None)   # join with the live release would not qualify
    assert audit(mongo) == {"released_copy_is_anonymous": True, "release_bookkeeping_matches_source": True}
