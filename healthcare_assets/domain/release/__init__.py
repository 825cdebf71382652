"""The analysts' release, kept in step with the collection one operation at a time.

Each change to what may be released is an operation, applied one at a time under a lease
(publishing one loaded file, or erasing patients): its cost follows the stays it touches, not the
collection. What analysts can read changes only by whole increments (domain.privacy).

An operation is planned from its own stays (nothing written), judged by the caller's checks, then
written to the ledger and applied; each step is idempotent, so whoever takes the lease next
finishes an interrupted one from its ledger plan. The scheme is chosen again, and the release
rebuilt whole (judged with the releases before it), when there is none yet, when the stays counted
have doubled since it was chosen, or when an operation would hold back more than
privacy.MAX_SUPPRESSED: doubling keeps the rebuild's cost per stay constant, amortized.

Modules: bookkeeping (scheme, groups, stays, ledger), lease, planning, rebuilding, publishing,
findings (what the checks count in a plan).
"""
