"""The exports the scale benchmark loads (the committed one, or generated), and each size's database."""

import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
COMMITTED_ROWS = 55_500
MID_ROWS = 200_000  # about 4x the committed export, and 1/5 of BIG_ROWS: each stage's growth is measured between them
BIG_ROWS = 1_000_000  # the collection a 1,000-row drop is compared in
SEED = 5


def generated(rows: int, seed: int, folder: Path) -> str:
    from healthcare_assets.tooling.generate import generate_csv

    path = folder / f"generated_{rows}_{seed}.csv"
    if not path.exists():
        generate_csv(rows=rows, seed=seed, out=path)
    return str(path)


def export_for(size: int, folder: Path) -> tuple[str, float]:
    """The export of `size` rows, and the seconds its generation took (0 for the committed one)."""
    if size == COMMITTED_ROWS:
        return str(REPO / "data" / "healthcare_dataset.csv"), 0.0
    started = time.perf_counter()
    path = generated(size, SEED, folder)
    return path, round(time.perf_counter() - started, 2)


def database_for(size: int) -> str:
    return f"bench_{size}"
