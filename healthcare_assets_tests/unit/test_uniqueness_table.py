"""The uniqueness table shown with the analysts' release: one row per set of quasi-identifiers,
before and as released, shares as percentages."""

import pytest

from healthcare_assets.domain.generalization import uniqueness_markdown
from healthcare_assets_tests.fixtures.runs import table_rows

BEFORE = [{"quasi_identifiers": "age_range, gender", "unique": 0.1234, "under_k": 0.5},
          {"quasi_identifiers": "+ admission_year", "unique": 0.25, "under_k": 1.0}]
RELEASED = [{"quasi_identifiers": "age_range, gender", "unique": 0.0, "under_k": 0.0},
            {"quasi_identifiers": "+ admission_year", "unique": 0.001, "under_k": 0.02}]


def test_each_row_says_before_and_released_as_percentages():
    lines = uniqueness_markdown(BEFORE, RELEASED).splitlines()
    cells = table_rows("\n".join(lines))
    assert cells[0] == ["quasi-identifiers", "stays unique before", "under k before", "stays unique released",
                        "under k released"]
    assert set(lines[1]) <= set("|-: ")
    assert cells[1:] == [["age_range, gender", "12.3%", "50.0%", "0.0%", "0.0%"],
                         ["+ admission_year", "25.0%", "100.0%", "0.1%", "2.0%"]]


def test_tables_of_different_lengths_are_refused():
    with pytest.raises(ValueError):
        uniqueness_markdown(BEFORE, RELEASED[:1])
