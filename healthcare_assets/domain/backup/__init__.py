"""Backups in mongodump's `--gzip` directory layout, their verification, restore and retention (format, trust and
memory: docs/backups.md). A backup never holds `admin` nor secrets.env; a restore never undoes an erasure."""
