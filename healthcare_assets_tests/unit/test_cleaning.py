"""Each cleaning rule: what it repairs, what it rejects (with which reason), what it counts."""

import hashlib
import random

import pandas as pd
import pytest

from healthcare_assets.domain.cleaning import (
    ChunkCleaner,
    SeenKeys,
    keyed_record_key,
    normalize_hospitals,
    normalize_names,
    record_key_secret,
)
from healthcare_assets.domain.schema import FIELDS

GOOD = {
    "name": "Bobby JacksOn", "age": "30", "gender": "Male", "blood_type": "B-",
    "medical_condition": "Cancer", "date_of_admission": "2024-01-31", "doctor": "Matthew Smith",
    "hospital": "Sons and Miller", "insurance_provider": "Blue Cross", "billing_amount": "18856.281305978155",
    "room_number": "328", "admission_type": "Urgent", "discharge_date": "2024-02-02",
    "medication": "Paracetamol", "test_results": "Normal",
}


def raw_chunk(*changes: dict, first_line: int = 2) -> pd.DataFrame:
    rows = []
    for i, change in enumerate(changes):
        row = {"line_number": first_line + i, "parse_error": "", **GOOD, **change}
        rows.append(row)
    return pd.DataFrame(rows, columns=["line_number", "parse_error", *FIELDS])


def clean(*changes: dict):
    return ChunkCleaner(b"test-key").clean(raw_chunk(*changes))


@pytest.mark.parametrize("raw, expected", [
    ("Bobby JacksOn", "Bobby Jackson"),
    ("mrs. brandy FLOWERS", "Mrs. Brandy Flowers"),
    ("desiree williams md", "Desiree Williams MD"),
    ("JOHN SMITH   jr.", "John Smith Jr."),
    ("dr. ann o'neil phd", "Dr. Ann O'Neil PhD"),
    ("henry ford iii", "Henry Ford III"),
])
def test_names_are_title_cased_with_honorifics_and_suffixes(raw, expected):
    assert normalize_names(pd.Series([raw])).iloc[0] == expected


def test_hospital_trailing_comma_and_spaces_removed():
    out = normalize_hospitals(pd.Series(["Hernandez Rogers and Vang,", " Sons  Rich and ", "Burke, Griffin and Cooper"]))
    assert out.tolist() == ["Hernandez Rogers and Vang", "Sons Rich and", "Burke, Griffin and Cooper"]


def test_clean_row_is_typed_and_keeps_its_values():
    result = clean({})
    row = result.cleaned.iloc[0]
    assert row["name"] == "Bobby Jackson"
    assert row["age"] == 30 and row["room_number"] == 328
    assert row["billing_amount"] == pytest.approx(18856.281305978155)
    assert row["date_of_admission"] == pd.Timestamp("2024-01-31")
    assert row["duration_days"] == 2
    assert len(row["record_key"]) == 32
    assert str(result.cleaned["date_of_admission"].dtype) == "datetime64[ms]"
    assert result.quarantined.empty


def test_the_record_key_is_keyed_by_a_key_of_its_own():
    """Equal rows, equal keys under one pseudonym key; another key, other record keys; and neither
    the row's plain hash nor an HMAC under the pseudonym key itself (which makes patient_ids)."""
    row = clean({}).cleaned.iloc[0]
    again = ChunkCleaner(b"test-key").clean(raw_chunk({}, {"name": "Ann Lee"})).cleaned
    assert again["record_key"].iloc[0] == row["record_key"] != again["record_key"].iloc[1]
    assert ChunkCleaner(b"other-key").clean(raw_chunk({})).cleaned["record_key"].iloc[0] != row["record_key"]
    text = "\x1f".join(str(v) for v in ("Bobby Jackson", 30, "Male", "B-", "Cancer", "2024-01-31", "Matthew Smith",
                                         "Sons and Miller", "Blue Cross", 18856.281305978155, 328, "Urgent",
                                         "2024-02-02", "Paracetamol", "Normal"))
    digest = hashlib.sha256(text.encode()).hexdigest()[:32]
    assert row["record_key"] == keyed_record_key(digest, record_key_secret(b"test-key"))
    assert row["record_key"] != digest
    assert row["record_key"] != keyed_record_key(digest, b"test-key")
    assert record_key_secret(b"test-key") != b"test-key"


def test_negative_billing_made_positive_and_counted():
    result = clean({"billing_amount": "-1234.5"}, {"billing_amount": "99.0"})
    assert result.cleaned["billing_amount"].tolist() == [1234.5, 99.0]
    assert result.counts["negative_billing_corrected"] == 1


def test_categories_canonicalized_and_counted():
    result = clean({"gender": "male", "medication": "ASPIRIN", "test_results": " normal "})
    row = result.cleaned.iloc[0]
    assert (row["gender"], row["medication"], row["test_results"]) == ("Male", "Aspirin", "Normal")
    assert result.counts["categories_canonicalized"] == 1  # one row, however many columns


@pytest.mark.parametrize("change, reason", [
    ({"age": "thirty"}, "Age: not a whole number (got 'thirty')"),
    ({"age": "30.5"}, "Age: not a whole number (got '30.5')"),
    ({"age": "150"}, "Age: outside 0..120 (got '150')"),
    ({"date_of_admission": "31/01/2024"}, "Date of Admission: not a date (YYYY-MM-DD) (got '31/01/2024')"),
    ({"discharge_date": "2024-01-01"}, "Discharge Date: before Date of Admission"),
    ({"gender": "Unknown"}, "Gender: not one of ['Female', 'Male'] (got 'Unknown')"),
    ({"name": ""}, "Name: required value is missing"),
    ({"billing_amount": "n/a"}, "Billing Amount: not a number (got 'n/a')"),
    ({"room_number": "12B"}, "Room Number: not a whole number (got '12B')"),
])
def test_rule_breaking_rows_are_quarantined_with_reason(change, reason):
    result = clean({}, change)
    assert len(result.cleaned) == 1
    assert result.quarantined["reason"].tolist() == [reason]
    assert result.quarantined["line_number"].tolist() == [3]
    # the raw values are kept, under the export's own headers
    assert result.quarantined["Name"].iloc[0] == change.get("name", GOOD["name"])


def test_wrong_field_count_is_quarantined():
    chunk = raw_chunk({})
    chunk.loc[0, "parse_error"] = "row has 14 fields, expected 15"
    result = ChunkCleaner(b"test-key").clean(chunk)
    assert result.cleaned.empty
    assert result.quarantined["reason"].iloc[0] == "row: wrong number of fields (row has 14 fields, expected 15)"


def test_duplicates_removed_within_and_across_chunks():
    cleaner = ChunkCleaner(b"test-key")
    first = cleaner.clean(raw_chunk({}, {}, {"age": "31"}))
    second = cleaner.clean(raw_chunk({"name": "BOBBY JACKSON"}, {"age": "32"}, first_line=10))
    assert first.counts["duplicates_removed"] == 1
    assert second.counts["duplicates_removed"] == 1  # same row after normalization, earlier chunk
    assert len(first.cleaned) + len(second.cleaned) == 3


def test_seen_keys_marks_what_a_set_would():
    """The digest array against a plain set, over chunks with repeats inside and across them,
    and digests that end in zero bytes (numpy's fixed-width bytes pad with them)."""
    rng = random.Random(7)
    pool = [f"{rng.getrandbits(128):032x}" for _ in range(300)] + ["ab" + "00" * 15, "ab" + "00" * 14 + "01"]
    seen, reference = SeenKeys(), set()
    for _ in range(20):
        chunk = [rng.choice(pool) for _ in range(rng.randint(0, 60))]
        expected = []
        for key in chunk:
            expected.append(key in reference)
            reference.add(key)
        assert seen.add(pd.Series(chunk, dtype=object)).tolist() == expected
    assert len(seen) == len(reference)


def test_every_row_is_accounted_for():
    result = clean({}, {}, {"age": "x"}, {"billing_amount": "-5"}, {"gender": "?"})
    c = result.counts
    assert c["rows_in"] == 5
    assert c["rows_in"] == c["rows_cleaned"] + c["rows_quarantined"] + c["duplicates_removed"]
    assert (c["rows_cleaned"], c["rows_quarantined"], c["duplicates_removed"]) == (2, 2, 1)
