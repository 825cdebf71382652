"""The analysts' release, kept in step with the collection one operation at a time under a lease (how, and why
it holds: docs/release-policy.md and docs/operations.md). Modules: bookkeeping (scheme, groups, stays, ledger),
lease, planning, rebuilding, publishing, findings (what the checks count in a plan).
"""
