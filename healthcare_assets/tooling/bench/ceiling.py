"""The ceiling the load can reach: the very documents the load wrote, inserted again with a bare
insert_many on the same server, and the load's figures set against it."""

from __future__ import annotations

import datetime as dt
import time

from healthcare_assets.domain import encryption
from healthcare_assets.tooling.bench.figures import CeilingFigures, LoadFigures
from healthcare_assets.tooling.bench.targets import ratio


def measure_ceiling(db, cleaned_path: str, source: dict, cipher: encryption.FieldCipher) -> CeilingFigures:
    """Insert the load's documents again, batch by batch, with a bare insert_many: into a plain
    collection (the server's ceiling) and into one prepared like the pipeline's (validator and
    metadata.sources index), timing documents built, their names encrypted (under the load's
    data keys, a cipher with nothing cached yet, as a load starts) and inserted separately."""
    from healthcare_assets.domain.loading import LOAD_BATCH, prepare_collection
    from healthcare_assets.domain.schema import to_document
    from healthcare_assets.plumbing.staging import row_batches

    bare, validated = db["bench_ceiling_bare"], db["bench_ceiling_validated"]
    bare.drop()
    validated.drop()
    prepare_collection(validated)
    created_at = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
    timings = {"build_s": 0.0, "encrypt_s": 0.0, "bare_s": 0.0, "validated_s": 0.0}
    documents = 0
    for rows in row_batches(cleaned_path, LOAD_BATCH):
        started = time.perf_counter()
        docs = [to_document(row, source, created_at) for row in rows]
        timings["build_s"] += time.perf_counter() - started
        started = time.perf_counter()
        docs = [cipher.encrypt_document(doc) for doc in docs]
        timings["encrypt_s"] += time.perf_counter() - started
        for name, target in (("bare_s", bare), ("validated_s", validated)):
            started = time.perf_counter()
            target.insert_many(docs, ordered=False)  # the docs carry their _id: pymongo leaves them as they are
            timings[name] += time.perf_counter() - started
        documents += len(docs)
    bare.drop()
    validated.drop()
    rate = {k.replace("_s", "_docs_per_s"): round(documents / v) if v else None for k, v in timings.items()}
    # The load's work per document with and without encryption, one after the other (the load
    # itself encrypts a batch while the previous one is written: this is the worst case).
    clear = timings["build_s"] + timings["validated_s"]
    return CeilingFigures(documents=documents, batch=LOAD_BATCH, **{k: round(v, 2) for k, v in timings.items()}, **rate,
                          encryption_ratio=ratio(clear, clear + timings["encrypt_s"]))


def set_load_ratios(load: LoadFigures, ceiling: CeilingFigures) -> None:
    """The load against the insert_many ceiling: the whole step (deferred index builds included),
    its insert phase alone, and the whole step against a collection configured like the load's."""
    bare = ceiling.bare_docs_per_s
    load.ratio_to_bare_insert_many = ratio(load.docs_per_s, bare)
    load.insert_ratio_to_bare_insert_many = ratio(load.insert_docs_per_s, bare)
    load.ratio_to_validated_insert_many = ratio(load.docs_per_s, ceiling.validated_docs_per_s)
