"""The analysts' release, kept in step with the collection one operation at a time.

Rebuilding the analysts' copy on every drop costs the whole collection, and two rebuilds at once
corrupt it. Instead each change to what may be released is an operation, applied one at a time
under a lease: publishing one loaded file, or erasing patients. Its cost follows the stays it
touches, not the collection.

What analysts can read changes only by whole increments (healthcare_assets.domain.privacy): a
file's stays wait in their group until the group's pending stays qualify together, and leave only
with the increment they were released in.

Its modules: bookkeeping (the scheme, groups, stays and ledger it keeps in the main database,
which analysts cannot read), lease (one holder at a time), planning (what an operation would
change), rebuilding (the whole release under a new scheme, judged with the earlier ones),
publishing (writing it) and findings (what the checks count in a plan).

An operation is planned from its own stays (nothing written), judged by the caller's checks, then
written to the ledger and applied: documents into the copy (ids derived from the record key and
the scheme's epoch, so a repeat is a no-op), each touched group set to its planned figures, the
ledger entry marked applied. Whoever takes the lease next first finishes an operation that was
interrupted, from its ledger plan: every step is idempotent.

The scheme is chosen again, and the release rebuilt whole, when there is none yet (the first
release), when the stays counted have doubled since it was chosen (a finer scheme may now
qualify), or when an operation would hold back more than privacy.MAX_SUPPRESSED. The rebuild costs
the collection, but doubling makes it rare: its cost per stay, amortized, stays constant. It is
judged like any operation, and with the releases before it, before any of it is written where
analysts can read.
"""

from healthcare_assets.domain.release.bookkeeping import loading
from healthcare_assets.domain.release.lease import Lease, ReleaseLockError
from healthcare_assets.domain.release.publishing import Release
from healthcare_assets.plumbing.idempotent_inserts import DUPLICATE_KEY

__all__ = ["DUPLICATE_KEY", "Lease", "Release", "ReleaseLockError", "loading"]
