"""The expiring lease on the analysts' release: Dagster's pool serializes only runs, not the CLI."""

from __future__ import annotations

import datetime as dt
import time
from typing import Self

from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

LOCK = "release_lock"
LEASE_S = 600  # renewed between batches; a crashed holder's lease runs out after this
WAIT_S = 3600


class ReleaseLockError(RuntimeError):
    pass


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class Lease:

    def __init__(self, db: Database, owner: str, wait_s: float = WAIT_S):
        self.locks, self.owner, self.wait_s = db[LOCK], owner, wait_s

    def __enter__(self) -> Self:
        deadline = time.monotonic() + self.wait_s
        while True:
            now = utc_now()
            try:
                self.locks.find_one_and_update(
                    {"_id": "release", "$or": [{"expires_at": {"$lt": now}}, {"owner": self.owner}]},
                    {"$set": {"owner": self.owner, "expires_at": now + dt.timedelta(seconds=LEASE_S)}},
                    upsert=True)
                return self
            except DuplicateKeyError:  # held by another owner, whose lease has not run out
                if time.monotonic() > deadline:
                    holder = self.locks.find_one({"_id": "release"}) or {}
                    raise ReleaseLockError(f"the analysts' release is still held by {holder.get('owner')} "
                                           f"after {self.wait_s:.0f} s") from None
                time.sleep(0.5)

    def renew(self) -> None:
        expires = utc_now() + dt.timedelta(seconds=LEASE_S)
        if not self.locks.update_one({"_id": "release", "owner": self.owner},
                                     {"$set": {"expires_at": expires}}).matched_count:
            raise ReleaseLockError(f"{self.owner} lost the analysts' release lease (held past {LEASE_S} s)")

    def __exit__(self, *exc) -> None:
        self.locks.delete_one({"_id": "release", "owner": self.owner})

