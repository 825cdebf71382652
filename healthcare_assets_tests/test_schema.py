"""Schema versions are recognized from the header; an unknown header is explained."""

import pytest

from healthcare_assets.schema import CSV_COLUMNS, UnknownSchemaError, detect_schema_version

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
