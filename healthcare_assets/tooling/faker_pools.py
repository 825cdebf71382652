"""Name, doctor and hospital pools, drawn once from a seeded Faker (en_US, like the original export)
and written with the export's defects: names in random letter case (honorifics and suffixes kept as
Faker wrote them), about half the hospital names with scrambled word order.
"""

from __future__ import annotations

import random
from typing import NamedTuple

import numpy as np
from faker import Faker
from faker.providers.person.en_US import Provider as PersonProvider

# Pool sizes: Faker costs ~60 µs a name, so names are drawn once and sampled per row.
NAME_POOL = 20_000
DOCTOR_POOL = 4_000
HOSPITAL_POOL_MAX = 4_000
ROWS_PER_HOSPITAL = 10  # so each hospital appears in several rows, like the original

_HONORIFICS = frozenset(PersonProvider.prefixes_female) | frozenset(PersonProvider.prefixes_male)
_NAME_SUFFIXES = frozenset(PersonProvider.suffixes_female) | frozenset(PersonProvider.suffixes_male)


def split_name(name: str) -> tuple[str, str, str]:
    """'Mrs. Brandy Flowers MD' -> ('Mrs. ', 'Brandy Flowers', ' MD').

    Only the middle part gets random case; honorifics stay as Faker wrote them.
    """
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
    """Name, doctor and hospital pools from a seeded Faker (en_US, like the original)."""
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
