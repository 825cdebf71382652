"""Documents written out in _id order without holding them all: spilled to owner-only files by their _id's first two
characters, then each file read back and sorted alone (a keyed hex _id puts about 1/256 of them in each)."""

import os
import shutil
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import bson

from healthcare_assets.plumbing import settings


class SortedSpill:
    """One at a time per folder (the caller holds a lock): opening it removes what a killed process left there."""

    def __init__(self, folder: Path):
        shutil.rmtree(folder, ignore_errors=True)
        self.folder, self.count = settings.private_dir(folder), 0

    def add(self, documents: list[dict]) -> None:
        by_prefix = defaultdict(list)
        for document in documents:
            by_prefix[document["_id"][:2]].append(bson.encode(document))
        for prefix, encoded in by_prefix.items():
            # named by the prefix's UTF-8 bytes in hex: the names sort as the _ids do, and are safe as file names
            path = self.folder / f"p{prefix.encode().hex()}"
            with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600), "wb") as out:
                out.write(b"".join(encoded))
        self.count += len(documents)

    def in_order(self) -> Iterator[dict]:
        for path in sorted(self.folder.iterdir()):
            with open(path, "rb") as spilled:
                yield from sorted(bson.decode_file_iter(spilled), key=lambda document: document["_id"])

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
