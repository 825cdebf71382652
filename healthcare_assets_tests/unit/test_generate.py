"""The synthetic generator reproduces the client's export: layout, values, ranges, defects."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import pytest

from healthcare_assets.domain.schema import CATEGORIES, CSV_COLUMNS
from healthcare_assets.tooling.generate import add_generate_arguments, generate_csv, run_generate
from healthcare_assets_tests.fixtures.environment import COMMITTED_CSV

H = CSV_COLUMNS  # canonical field -> header


def read(path: Path) -> pd.DataFrame:
    # Everything as text, so "duplicate" means byte-identical fields, as in the file.
    return pd.read_csv(path, dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def generated_5550_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("generated") / "small.csv"
    summary = generate_csv(rows=5_550, seed=7, out=path)
    assert summary == {"rows": 5_550, "duplicates": 53, "negative_billing": 11, "path": str(path)}
    return path


# (which file, data rows, exact duplicate rows, negative billing amounts)
DATASETS = {
    "generated-5550": ("small", 5_550, 53, 11),
    "committed-55500": ("committed", 55_500, 534, 106),
}


@pytest.fixture(scope="module", params=list(DATASETS), ids=list(DATASETS))
def dataset(request, generated_5550_csv) -> tuple[Path, pd.DataFrame, int, int, int]:
    which, rows, duplicates, negatives = DATASETS[request.param]
    path = generated_5550_csv if which == "small" else COMMITTED_CSV
    return path, read(path), rows, duplicates, negatives


def test_header_and_file_format(dataset):
    path, frame, *_ = dataset
    raw = path.read_bytes()
    assert list(frame.columns) == list(CSV_COLUMNS.values())
    assert not raw.startswith(b"\xef\xbb\xbf"), "no BOM"
    assert b"\r" not in raw, "lines end with \\n only"
    raw.decode("utf-8")


def test_row_duplicate_and_negative_counts(dataset):
    _, frame, rows, duplicates, negatives = dataset
    billing = frame[H["billing_amount"]].astype(float)
    assert len(frame) == rows
    assert int(frame.duplicated().sum()) == duplicates  # rows equal to an earlier row
    assert int((billing < 0).sum()) == negatives


def test_duplicates_copy_only_non_negative_rows(dataset):
    # The two defects never overlap, so cleaning counts add up exactly.
    _, frame, *_ = dataset
    repeated = frame[frame.duplicated(keep=False)]
    assert len(repeated) > 0
    assert (repeated[H["billing_amount"]].astype(float) >= 0).all()


def test_numeric_ranges(dataset):
    _, frame, *_ = dataset
    age = frame[H["age"]].astype(int)
    room = frame[H["room_number"]].astype(int)
    billing = frame[H["billing_amount"]].astype(float)
    assert age.between(13, 89).all()
    assert room.between(101, 500).all()
    assert billing.min() >= -2_000.01 and billing.max() < 52_800
    # Full float precision, as in the original export (not rounded to cents).
    decimals = frame[H["billing_amount"]].str.split(".").str[1].str.len()
    assert decimals.median() > 10


def test_categories_use_exactly_the_value_sets(dataset):
    _, frame, *_ = dataset
    for field, values in CATEGORIES.items():
        assert set(frame[H[field]]) == set(values), field


def test_dates(dataset):
    _, frame, *_ = dataset
    admitted = pd.to_datetime(frame[H["date_of_admission"]], format="%Y-%m-%d")
    discharged = pd.to_datetime(frame[H["discharge_date"]], format="%Y-%m-%d")
    assert admitted.min() >= pd.Timestamp("2019-05-08")
    assert admitted.max() <= pd.Timestamp("2024-05-07")
    assert (discharged - admitted).dt.days.between(1, 30).all()


def test_names_have_random_case_and_some_honorifics(dataset):
    _, frame, *_ = dataset
    names = frame[H["name"]]
    mixed = names.str.contains(r"[a-z][A-Z]") & names.str.contains(r"[A-Z][a-z]")
    assert mixed.mean() > 0.8  # nearly every name has random case inside a word
    assert names.str.match(r"(?:Mr\.|Mrs\.|Ms\.|Miss|Dr\.) [A-Za-z]").any()
    assert names.str.contains(r"[A-Za-z] (?:MD|DDS|PhD|DVM|Jr\.|II|III)$").any()
    # Doctors keep Faker's normal case: no capital right after a lowercase letter.
    doctors = frame[H["doctor"]].str.replace(" PhD", "")
    assert not doctors.str.contains(r"[a-z][A-Z]").any()


def test_hospitals_repeat_and_include_scrambled_names(dataset):
    path, frame, rows, *_ = dataset
    hospitals = frame[H["hospital"]]
    assert hospitals.value_counts().min() >= 2  # a pool, so names repeat across rows
    assert hospitals.nunique() > rows // 20
    assert hospitals.str.endswith(",").any()  # "Hernandez Rogers and Vang,"
    assert hospitals.str.startswith("Sons ").any()  # "Sons and Miller"
    assert hospitals.str.contains(", ").any()  # "Burke, Griffin and Cooper", which needs quoting
    assert b',"' in path.read_bytes()


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    first, again, other = (tmp_path / name for name in ("a.csv", "b.csv", "c.csv"))
    generate_csv(rows=2_000, seed=3, out=first)
    generate_csv(rows=2_000, seed=3, out=again)
    generate_csv(rows=2_000, seed=4, out=other)
    assert first.read_bytes() == again.read_bytes()
    assert first.read_bytes() != other.read_bytes()


def test_explicit_defect_counts(tmp_path):
    clean = tmp_path / "clean.csv"
    generate_csv(rows=1_000, seed=1, out=clean, duplicates=0, negative_billing=0)
    frame = read(clean)
    assert len(frame) == 1_000
    assert frame.duplicated().sum() == 0
    assert (frame[H["billing_amount"]].astype(float) >= 0).all()

    dirty = tmp_path / "dirty.csv"
    generate_csv(rows=1_000, seed=1, out=dirty, duplicates=120, negative_billing=40)
    frame = read(dirty)
    assert len(frame) == 1_000
    assert frame.duplicated().sum() == 120
    assert (frame[H["billing_amount"]].astype(float) < 0).sum() == 40


@pytest.mark.parametrize(
    "rows, duplicates, negative_billing",
    [(0, None, None), (10, 10, 0), (10, -1, 0), (10, 5, 5), (10, 0, -1)],
)
def test_impossible_counts_are_rejected(tmp_path, rows, duplicates, negative_billing):
    out = tmp_path / "x.csv"
    with pytest.raises(ValueError):
        generate_csv(rows, 1, out, duplicates=duplicates, negative_billing=negative_billing)
    assert not out.exists()


def test_cli_arguments(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_generate_arguments(parser)
    out = tmp_path / "nested" / "cli.csv"
    args = parser.parse_args(
        ["--rows", "300", "--seed", "5", "--out", str(out), "--negative-billing", "2"]
    )
    assert run_generate(args) == 0
    frame = read(out)
    assert len(frame) == 300
    assert frame.duplicated().sum() == 3  # 300 * 534 / 55,500, rounded
    assert (frame[H["billing_amount"]].astype(float) < 0).sum() == 2
    assert str(out) in capsys.readouterr().out
