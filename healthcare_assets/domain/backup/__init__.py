"""Backups in mongodump's `--gzip` directory layout, their verification, restore and retention (format, trust
and memory: docs/backups.md). A backup never holds `admin` nor anything of secrets.env, and a restore never
undoes an erasure.

The modules: files (names, layout, hashing streams, read ranges), signing, keys, catalog, writing, reading
(verification and retention), plain_dump (a plain `mongodump --gzip` folder), restore (restore and the drill's
comparison) and erasures (what a restore does about erasures).
"""
