"""Pseudonyms are keyed; bands follow the tables; the key is never a constant in the code."""

import hashlib

import pandas as pd
import pytest

from healthcare_assets import privacy


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
    assert privacy.band(age, privacy.AGE_BANDS) == label


@pytest.mark.parametrize("amount, label", [(0, "0-10K"), (9_999.99, "0-10K"), (10_000, "10K-25K"), (52_000, "50K+")])
def test_billing_bands(amount, label):
    assert privacy.band(amount, privacy.BILLING_BANDS) == label


def test_unset_key_is_generated_once_per_installation(tmp_path, monkeypatch):
    monkeypatch.delenv("HEALTHCARE_PSEUDONYM_KEY")
    monkeypatch.setenv("HEALTHCARE_DATA_DIR", str(tmp_path))
    with pytest.warns(UserWarning, match="HEALTHCARE_PSEUDONYM_KEY is not set"):
        first = privacy.pseudonym_key()
    with pytest.warns(UserWarning):
        assert privacy.pseudonym_key() == first
    assert len(first) == 64
    assert oct((tmp_path / "secrets.env").stat().st_mode & 0o777) == "0o600"
