"""Marking the analysts' release stale when the stays beneath it changed outside it.

The release's bookkeeping and the analysts' copy follow the collection one operation at a time.
Two changes can bypass those operations: re-keying the collection's _ids (the bookkeeping and the
copy's ids derive from the old ones), and a restore that kept erased patients' stays out of the
collection but could not take the release's lease to erase them there too. Both leave the
release's own signal that a whole rebuild is due, the one an interrupted rebuild leaves: the next
publication rebuilds the release and the copy from the collection as it is, judged as every
rebuild is, with the scheme and its history kept. The entry says who asked and why.
"""

from __future__ import annotations

import datetime as dt

from pymongo.database import Database

from healthcare_assets.domain.release.bookkeeping import LEDGER, REBUILD


def request_rebuild(db: Database, requested_by: str, reason: str) -> None:
    """`db`: the main database, where the release keeps its ledger."""
    db[LEDGER].update_one({"_id": REBUILD}, {"$set": {
        "kind": "rebuild", "state": "rebuilding", "requested_by": requested_by, "reason": reason,
        "requested_at": dt.datetime.now(dt.UTC).replace(tzinfo=None)}}, upsert=True)

