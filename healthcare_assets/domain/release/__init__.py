"""The analysts' release, kept in step one operation at a time (docs/release-policy.md, docs/operations.md)."""
