"""Schema versions are recognized from the header; an unknown header is explained."""

import pytest

from healthcare_assets.domain import encryption
from healthcare_assets.domain.schema import (
    CSV_COLUMNS,
    DOCUMENT_JSON_SCHEMA,
    UnknownSchemaError,
    detect_schema_version,
    schema_violations,
    to_document,
)
from healthcare_assets_tests.fixtures.environment import keys_now

V2 = list(CSV_COLUMNS.values())


def test_current_export_is_v2():
    assert detect_schema_version(V2).name == "v2"


def test_column_order_does_not_matter():
    assert detect_schema_version(list(reversed(V2))).name == "v2"


def test_older_export_without_test_results():
    version = detect_schema_version([c for c in V2 if c != "Test Results"])
    assert version.name == "v1-no-test-results"
    assert version.defaults == {"test_results": ""}


def test_renamed_column_is_explained():
    header = ["Patient Name" if c == "Name" else c for c in V2]
    with pytest.raises(UnknownSchemaError) as error:
        detect_schema_version(header, "export.csv")
    message = str(error.value)
    assert "export.csv" in message
    assert "missing columns ['Name']" in message
    assert "unexpected columns ['Patient Name']" in message


def test_extra_column_is_explained():
    with pytest.raises(UnknownSchemaError, match=r"unexpected columns \['Ward'\]"):
        detect_schema_version([*V2, "Ward"])


def _valid_document() -> dict:
    import datetime as dt

    row = {"record_key": "k" * 32, "patient_id": "p" * 64, "line_number": 2, "name": "Ann Lee", "age": 40,
           "gender": "Female", "blood_type": "O+", "medical_condition": "Asthma",
           "date_of_admission": dt.datetime(2024, 1, 2), "doctor": "Dr X", "hospital": "H", "insurance_provider": "Aetna",
           "billing_amount": 10.5, "room_number": 200, "admission_type": "Urgent", "discharge_date": dt.datetime(2024, 1, 5),
           "medication": "Aspirin", "test_results": "Normal", "duration_days": 3}
    return to_document(row, {"name": "x.csv", "sha256": "s" * 64}, dt.datetime(2024, 2, 1))


BREAKAGES = {
    "string age": lambda d: d["personal_info"].update(age="40"),
    "bool age": lambda d: d["personal_info"].update(age=True),
    "age over range": lambda d: d["personal_info"].update(age=121),
    "unknown gender": lambda d: d["personal_info"].update(gender="Other"),
    "integer billing": lambda d: d["administrative_info"].update(billing_amount=10),
    "negative billing": lambda d: d["administrative_info"].update(billing_amount=-1.0),
    "missing doctor": lambda d: d["administrative_info"].pop("doctor"),
    "missing part": lambda d: d.pop("medical_info"),
    "bad test result": lambda d: d["medical_info"].update(test_results=["Fine"]),
    "text date": lambda d: d["admission_info"].update(date_admission="2024-01-02"),
    "sources not a list": lambda d: d["metadata"].update(sources="s"),
    "clear name": lambda d: d["personal_info"].update(name="Ann Lee"),
    "clear doctor": lambda d: d["administrative_info"].update(doctor="Dr X"),
}


@pytest.mark.parametrize("breakage", [None, *BREAKAGES])
def test_schema_evaluator_agrees_with_the_server(mongo, breakage):
    """The load validates documents itself (the insert bypasses the server's validation), so its
    evaluator must reject exactly what the server's $jsonSchema validator rejects."""
    from pymongo.errors import WriteError

    doc = encryption.cipher(mongo.hospitalizations(), keys_now(), create=True).encrypt_document(_valid_document())
    if breakage:
        BREAKAGES[breakage](doc)
    db = mongo.db()
    collection = db.create_collection("validated", validator={"$jsonSchema": DOCUMENT_JSON_SCHEMA})
    try:
        collection.insert_one(doc)
        server_accepts = True
    except WriteError:
        server_accepts = False
    assert server_accepts == (breakage is None)
    assert (schema_violations(doc) == []) == server_accepts
