"""The release stream's input (healthcare_assets.tooling.bench.release_stream): each stay of an
export as planning.projection() would read it from the collection, computed without a database.

A file is read and cleaned by the pipeline's own code (sources.RawCsvReader, cleaning.ChunkCleaner:
the same rows kept, duplicates removed, record keys and patient ids, under a key of this process
that is never written); each cleaned row becomes its document (schema.document_body), and
privacy.exact_values()'s projection is evaluated on it in Python, so the quasi-identifiers and the
sensitive values are those the release reads. The drops are generated files (seeded, one seed each).
"""

from __future__ import annotations

import resource
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from healthcare_assets.domain import privacy, schema
from healthcare_assets.domain.cleaning import ChunkCleaner
from healthcare_assets.domain.sources import RawCsvReader
from healthcare_assets.plumbing import staging
from healthcare_assets.tooling.bench.exports import generated
from healthcare_assets.tooling.bench.figures import ReleaseStreamFigures
from healthcare_assets.tooling.bench.release_stream import Stays, simulate
from healthcare_assets.tooling.bench.stream_figures import figures_of

DROPS, DROP_ROWS = 100, 1_000
FIRST_DROP_SEED = 1_001  # drop i is generated with seed FIRST_DROP_SEED + i: new to every export of the bench


def compile_projection(expression) -> Callable[[dict], Any]:
    """A $project expression of privacy.exact_values() as a function of a document, computed as the
    server computes it (field paths, $year, $ifNull, $arrayElemAt; any other operator is refused,
    not guessed). Compiled once: a file's every row goes through it."""
    if isinstance(expression, str) and expression.startswith("$"):
        parts = expression[1:].split(".")

        def path(document: dict) -> Any:
            for part in parts:
                document = document.get(part) if isinstance(document, dict) else None
            return document
        return path
    if not isinstance(expression, dict):
        return lambda _: expression
    if not any(k.startswith("$") for k in expression):
        fields = [(name, compile_projection(inner)) for name, inner in expression.items()]
        return lambda document: {name: value(document) for name, value in fields}
    (operator, argument), = expression.items()
    if operator == "$year":
        date = compile_projection(argument)
        return lambda document: date(document).year
    if operator == "$ifNull":
        first, default = compile_projection(argument[0]), compile_projection(argument[1])
        return lambda document: default(document) if (found := first(document)) is None else found
    if operator == "$arrayElemAt":
        items, at = compile_projection(argument[0]), argument[1]
        return lambda document: (found[at] if (found := items(document)) is not None and -len(found) <= at < len(found)
                                 else None)
    raise ValueError(f"the release stream cannot evaluate {operator}")


def candidates(path: str | Path, key: bytes) -> Iterator[dict]:
    """The stays of one export, cleaned, as the release reads them (planning.projection())."""
    project = compile_projection(privacy.exact_values())
    cleaner = ChunkCleaner(key)
    with open(path, "rb") as stream:
        for raw in RawCsvReader(stream, Path(path).name, staging.CHUNK_ROWS).chunks():
            cleaned = cleaner.clean(raw).cleaned
            columns = list(cleaned.columns)
            for values in zip(*(cleaned[c].tolist() for c in columns), strict=True):
                row = dict(zip(columns, values, strict=True))
                document = {"_id": row["record_key"], privacy.PERSON: row["patient_id"], **schema.document_body(row)}
                yield {"_id": row["record_key"], **project(document)}


def drop_files(folder: Path, drops: int, rows: int) -> Iterator[str]:
    """The drops, generated when first asked for (and kept in `folder` for the next size)."""
    for i in range(drops):
        yield generated(rows, FIRST_DROP_SEED + i, folder)


def run_stream(size: int, csv: str, folder: Path, drops: int = DROPS, drop_rows: int = DROP_ROWS) -> ReleaseStreamFigures:
    """The base export `csv` of `size` rows, then `drops` files of `drop_rows` rows, in this process."""
    started, key = time.perf_counter(), secrets.token_bytes(32)
    stays = Stays()
    for candidate in candidates(csv, key):
        stays.add(candidate)
    stream = simulate(stays, (list(candidates(path, key)) for path in drop_files(folder, drops, drop_rows)))
    out = figures_of(stream, size, drops, drop_rows)
    out.seconds = round(time.perf_counter() - started, 1)
    out.peak_rss_mb = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux
    return out
