"""Seeded synthetic hospital CSV in the client's (v2 Kaggle) layout, with the public export's known defects."""

import argparse
import csv
import datetime as dt
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
from faker import Faker
from faker.providers.person.en_US import Provider as PersonProvider

from healthcare_assets.domain import schema
from healthcare_assets.plumbing import csv_cells, settings

# Shape of the original export (55,500 rows): defect counts scale with the row count.
REFERENCE_ROWS, REFERENCE_DUPLICATES, REFERENCE_NEGATIVE_BILLING = 55_500, 534, 106

AGE_MIN, AGE_MAX = 13, 89
ROOM_MIN, ROOM_MAX = 101, 500
FIRST_ADMISSION, LAST_ADMISSION = dt.date(2019, 5, 8), dt.date(2024, 5, 7)
STAY_MIN, STAY_MAX = 1, 30
BILLING_LOW, BILLING_HIGH = -2_000.0, 52_800.0

CHUNK_ROWS = 50_000
RESERVOIR_SIZE = 5_000  # candidate sources for duplicates, a uniform sample of earlier rows

# Pool sizes: Faker costs ~60 µs a name, so names are drawn once and sampled per row.
NAME_POOL, DOCTOR_POOL, HOSPITAL_POOL_MAX = 20_000, 4_000, 4_000
ROWS_PER_HOSPITAL = 10  # so each hospital appears in several rows, like the original

_HONORIFICS = frozenset(PersonProvider.prefixes_female) | frozenset(PersonProvider.prefixes_male)
_NAME_SUFFIXES = frozenset(PersonProvider.suffixes_female) | frozenset(PersonProvider.suffixes_male)


def split_name(name: str) -> tuple[str, str, str]:
    """'Mrs. Brandy Flowers MD' -> ('Mrs. ', 'Brandy Flowers', ' MD'): only the middle gets random case."""
    words = name.split(" ")
    prefix = suffix = ""
    if len(words) > 2 and words[0] in _HONORIFICS:
        prefix = words.pop(0) + " "
    if len(words) > 2 and words[-1] in _NAME_SUFFIXES:
        suffix = " " + words.pop()
    return prefix, " ".join(words), suffix


def scramble_company(name: str, rng: random.Random) -> str:
    """Reorder a company's words like the original export did, keeping any comma at the end."""
    words = name.replace(",", "").split(" ")
    if len(words) < 3:  # "Kim Inc", "Carr-Edwards": nothing to scramble
        return name
    style = rng.randrange(3)
    if style == 0:
        words = words[::-1]  # "Miller and Sons" -> "Sons and Miller"
    elif style == 1:
        words = words[-1:] + words[:-1]  # "Rich and Sons" -> "Sons Rich and"
    scrambled = " ".join(words)
    return scrambled + "," if "," in name else scrambled  # "Hernandez Rogers and Vang,"


class Pools(NamedTuple):
    prefixes: np.ndarray  # honorific + " " or ""
    cores: np.ndarray  # first and last name, fixed-width unicode for vectorized recasing
    suffixes: np.ndarray  # " " + suffix or ""
    doctors: np.ndarray
    hospitals: np.ndarray


def draw_pools(rows: int, seed: int) -> Pools:
    fake = Faker("en_US")
    fake.seed_instance(seed)
    scramble_rng = random.Random(f"{seed}/hospitals")  # str seeds are hashed stably (sha512)
    parts = [split_name(fake.name()) for _ in range(min(NAME_POOL, rows))]
    prefixes, cores, suffixes = (np.array(column) for column in zip(*parts))
    doctors = np.array([fake.name() for _ in range(min(DOCTOR_POOL, rows))], dtype=object)
    hospital_count = min(HOSPITAL_POOL_MAX, max(rows // ROWS_PER_HOSPITAL, 1))
    hospitals = []
    for _ in range(hospital_count):
        company = fake.company()
        if scramble_rng.random() < 0.5:  # about half are scrambled, as in the original
            company = scramble_company(company, scramble_rng)
        hospitals.append(company)
    return Pools(prefixes, cores, suffixes, doctors, np.array(hospitals, dtype=object))


def random_case(names: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Flip each ASCII letter to upper or lower case at random, vectorized over code points."""
    width = names.dtype.itemsize // 4
    codes = names.view(np.uint32).reshape(len(names), width).copy()
    lower = codes | np.uint32(0x20)  # in ASCII, bit 0x20 is a letter's only case difference
    letters = (lower >= ord("a")) & (lower <= ord("z"))
    upper = rng.random(codes.shape) < 0.5
    codes = np.where(letters, np.where(upper, lower & ~np.uint32(0x20), lower), codes)
    return codes.view(f"<U{width}").reshape(len(names))


def _original_rows(count: int, negative: np.ndarray, rng: np.random.Generator,
                   pools: Pools) -> tuple[list[tuple], np.ndarray]:
    """`count` fresh rows in CSV column order; `negative` marks the rows whose bill is below 0."""
    prefixes, cores, suffixes, doctors, hospitals = pools

    def pick(values: tuple[str, ...]) -> list[str]:
        return np.array(values, dtype=object)[rng.integers(0, len(values), count)].tolist()

    who = rng.integers(0, len(cores), count)
    cased = random_case(cores[who], rng).tolist()
    names = [p + c + s for p, c, s in zip(prefixes[who].tolist(), cased, suffixes[who].tolist())]
    span = (LAST_ADMISSION - FIRST_ADMISSION).days + 1
    admitted = np.datetime64(FIRST_ADMISSION, "D") + rng.integers(0, span, count)
    discharged = admitted + rng.integers(STAY_MIN, STAY_MAX + 1, count)
    # strictly below zero, never -0.0
    billing = np.where(negative, rng.uniform(BILLING_LOW, -0.01, count), rng.uniform(0.0, BILLING_HIGH, count))
    # the draws in this order, the file's bytes with them; billing as Python floats: csv writes their full repr
    columns = {"name": names, "age": rng.integers(AGE_MIN, AGE_MAX + 1, count).tolist(), "gender": pick(schema.GENDERS),
               "blood_type": pick(schema.BLOOD_TYPES), "medical_condition": pick(schema.CONDITIONS),
               "date_of_admission": admitted.astype(str).tolist(),
               "doctor": doctors[rng.integers(0, len(doctors), count)].tolist(),
               "hospital": hospitals[rng.integers(0, len(hospitals), count)].tolist(),
               "insurance_provider": pick(schema.INSURERS), "billing_amount": billing.tolist(),
               "room_number": rng.integers(ROOM_MIN, ROOM_MAX + 1, count).tolist(),
               "admission_type": pick(schema.ADMISSION_TYPES), "discharge_date": discharged.astype(str).tolist(),
               "medication": pick(schema.MEDICATIONS), "test_results": pick(schema.TEST_RESULTS)}
    return list(zip(*(columns[field] for field in schema.CSV_COLUMNS))), billing


def _rows(rows: int, seed: int, duplicates: int, negative_billing: int,
          originals_billing: list[np.ndarray]) -> Iterator[list[tuple]]:
    rng = np.random.default_rng(seed)
    pick_rng = random.Random(f"{seed}/duplicates")
    pools = draw_pools(rows, seed)
    # position 0 is never a duplicate, original 0 never negative: every duplicate has a row to copy
    duplicate_at = np.sort(rng.choice(rows - 1, duplicates, replace=False)) + 1
    negative_ids = np.sort(rng.choice(rows - duplicates - 1, negative_billing, replace=False)) + 1
    is_duplicate = set(duplicate_at.tolist())

    reservoir: list[tuple] = []
    seen = 0  # non-negative originals offered to the reservoir so far
    original_id = 0
    for start in range(0, rows, CHUNK_ROWS):
        stop = min(start + CHUNK_ROWS, rows)
        repeats = np.searchsorted(duplicate_at, stop) - np.searchsorted(duplicate_at, start)
        fresh_count = int(stop - start - repeats)
        negative = np.isin(np.arange(original_id, original_id + fresh_count), negative_ids)
        fresh, billing = _original_rows(fresh_count, negative, rng, pools)
        originals_billing.append(billing)

        chunk: list[tuple] = []
        next_fresh = 0
        for position in range(start, stop):
            if position in is_duplicate:
                chunk.append(reservoir[pick_rng.randrange(len(reservoir))])
                continue
            row = fresh[next_fresh]
            if not negative[next_fresh]:
                seen += 1
                if len(reservoir) < RESERVOIR_SIZE:
                    reservoir.append(row)
                else:
                    slot = pick_rng.randrange(seen)
                    if slot < RESERVOIR_SIZE:
                        reservoir[slot] = row
            chunk.append(row)
            next_fresh += 1
        original_id += fresh_count
        yield chunk


def _defect_counts(rows: int, duplicates: int | None, negative_billing: int | None) -> tuple[int, int]:
    duplicates = round(rows * REFERENCE_DUPLICATES / REFERENCE_ROWS) if duplicates is None else duplicates
    if negative_billing is None:
        negative_billing = round(rows * REFERENCE_NEGATIVE_BILLING / REFERENCE_ROWS)
    if rows < 1:
        raise ValueError(f"rows must be at least 1, got {rows}")
    if not 0 <= duplicates < rows:
        raise ValueError(f"duplicates must be from 0 to rows - 1 ({rows - 1}), got {duplicates}")
    originals = rows - duplicates
    if not 0 <= negative_billing < originals:
        raise ValueError(f"negative_billing must be between 0 and {originals - 1} "
                         f"(rows - duplicates - 1), got {negative_billing}")
    return duplicates, negative_billing


def generate_csv(rows: int, seed: int, out: str | Path, duplicates: int | None = None,
                 negative_billing: int | None = None) -> dict:
    """Write `rows` data rows (duplicates included) to `out`; return what was written."""
    duplicates, negative_billing = _defect_counts(rows, duplicates, negative_billing)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")  # never leave a half-written file at `out`
    originals_billing: list[np.ndarray] = []
    try:
        with open(partial, "w", newline="", encoding="utf-8") as handle:
            writer = csv_cells.Writer(handle, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
            writer.writerow(schema.CSV_COLUMNS.values())
            for chunk in _rows(rows, seed, duplicates, negative_billing, originals_billing):
                writer.writerows(chunk)
        # distinct bills prove the file holds exactly `duplicates` repeated rows
        billing = np.sort(np.concatenate(originals_billing))
        if np.any(billing[1:] == billing[:-1]):
            raise RuntimeError(f"seed {seed}: two original rows share a bill; use another seed")
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, out)
    return {"rows": rows, "duplicates": duplicates, "negative_billing": negative_billing, "path": str(out)}


def add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rows", type=int, default=REFERENCE_ROWS, help="data rows, duplicates included")
    parser.add_argument("--seed", type=int, default=42, help="same seed, same bytes")
    parser.add_argument("--out", type=Path, default=settings.repo_path(settings.DEFAULT_SOURCE_CSV),
                        help="CSV to write (default: the committed export, in the checkout)")
    parser.add_argument("--duplicates", type=int, help="exact duplicate rows (default: 534 per 55,500 rows)")
    parser.add_argument("--negative-billing", type=int,
                        help="rows with a negative billing amount (default: 106 per 55,500 rows)")


def run_generate(args: argparse.Namespace) -> int:
    summary = generate_csv(rows=args.rows, seed=args.seed, out=args.out, duplicates=args.duplicates,
                           negative_billing=args.negative_billing)
    print(f"wrote {summary['rows']:,} rows to {summary['path']} "
          f"({summary['duplicates']:,} duplicates, {summary['negative_billing']:,} negative bills)")
    return 0
