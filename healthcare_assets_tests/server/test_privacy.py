"""Pseudonyms are keyed; bands follow the tables; the key is never a constant in the code."""

import hashlib
from collections import Counter

import pandas as pd
import pytest

from healthcare_assets.domain import encryption, hierarchies, privacy
from healthcare_assets.domain.release.publishing import Release
from healthcare_assets.domain.release_audit import view_documents, view_findings
from healthcare_assets.tooling.generate import generate_csv
from healthcare_assets_tests.fixtures.environment import keys_now
from healthcare_assets_tests.fixtures.runs import check_results, materialize


def test_patient_id_is_a_keyed_hash_not_a_plain_one():
    frame = pd.DataFrame({"name": ["Bobby Jackson"], "gender": ["Male"], "blood_type": ["B-"]})
    keyed = privacy.patient_ids(frame, b"key-one").iloc[0]
    assert keyed == privacy.patient_id("Bobby Jackson", "Male", "B-", b"key-one")
    assert keyed != privacy.patient_ids(frame, b"key-two").iloc[0]
    identity = privacy.patient_identity("Bobby Jackson", "Male", "B-")
    assert keyed not in {hashlib.sha256(t.encode()).hexdigest() for t in ("Bobby Jackson", identity)}


def test_same_person_any_letter_case_same_id():
    assert privacy.patient_id("BOBBY JACKSON", "Male", "B-", b"k") == privacy.patient_id("Bobby Jackson", "Male", "B-", b"k")


@pytest.mark.parametrize("age, label", [(0, "0-17"), (17, "0-17"), (18, "18-29"), (89, "80-89"), (90, "90+"), (104, "90+")])
def test_age_bands(age, label):
    assert hierarchies.band(age, privacy.AGE_BANDS) == label


def test_what_a_stay_cost_is_never_released():
    """An insurer's statement shows the bill: it is a quasi-identifier, and no analysis needs it."""
    assert [f for f in privacy.VIEW_FIELDS if "billing" in f or "amount" in f] == []
    assert "administrative_info.billing_amount" not in str(privacy.release_projection(privacy.FINEST))


def test_unset_key_is_generated_once_per_installation(tmp_path, monkeypatch):
    monkeypatch.delenv("HEALTHCARE_PSEUDONYM_KEY")
    monkeypatch.setenv("HEALTHCARE_DATA_DIR", str(tmp_path))
    with pytest.warns(UserWarning, match="HEALTHCARE_PSEUDONYM_KEY is not set"):
        first = keys_now().pseudonym_key()
    with pytest.warns(UserWarning):
        assert keys_now().pseudonym_key() == first
    assert len(first) == 64
    assert oct((tmp_path / "secrets.env").stat().st_mode & 0o777) == "0o600"


@pytest.fixture
def chain_of_20k_rows(tmp_path, mongo):
    """20,000 rows through the chain (enough for most quasi-identifier groups to reach k); checks passed."""
    export = tmp_path / "export.csv"
    generate_csv(rows=20_000, seed=3, out=export)
    result = materialize(export, mongo)
    assert result.success
    assert all(check_results(result).values())
    return mongo


@pytest.mark.slow
def test_view_findings_on_the_real_view_are_clean(chain_of_20k_rows):
    scheme = Release(chain_of_20k_rows.hospitalizations(), b"").state()["scheme"]
    found = view_findings(chain_of_20k_rows.hospitalizations(), keys_now(), view_documents(chain_of_20k_rows.db()), scheme)
    assert len(found.groups) > 100
    assert found.names_checked == 3 * chain_of_20k_rows.hospitalizations().count_documents({})
    assert (dict(found.wrong_fields), +found.not_generalized, found.leaks) == ({}, Counter(), 0)
    assert min(found.groups.values()) >= privacy.K_ANONYMITY


@pytest.mark.slow
def test_view_findings_catch_each_kind_of_leak(chain_of_20k_rows):
    """A copy of the view broken five ways: each is counted."""
    source, db = chain_of_20k_rows.hospitalizations(), chain_of_20k_rows.db()
    scheme = Release(source, b"").state()["scheme"]
    tampered = db["tampered_view"]
    tampered.insert_many(list(db[privacy.VIEW_NAME].find({})))
    first = tampered.find_one()
    doctor = encryption.cipher(source, keys_now()).decrypt(source.find_one()["administrative_info"]["doctor"])
    tampered.update_one({"_id": first["_id"]}, {"$set": {"medication": doctor.upper(), "billing_range": "12,345",
                                                         "length_of_stay": "12", "name": "x"}})
    tampered.insert_many([{**{k: v for k, v in first.items() if k != "_id"}, "age_range": "95"} for _ in range(3)])
    tampered.insert_one({**{k: v for k, v in first.items() if k != "_id"}, "medication": [doctor]})  # not a label

    found = view_findings(source, keys_now(), tampered.find({}), scheme)
    assert found.wrong_fields == {"name": 1, "billing_range": 1, "_id": tampered.count_documents({})}
    assert found.leaks == 2
    assert +found.not_generalized == {"length_of_stay": 1, "medication": 2, "age_range": 3}
    assert min(found.groups.values()) == 1
