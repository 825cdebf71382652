"""A real PostgreSQL for Dagster's storage: a throwaway cluster (Debian's `postgresql` server
binaries) on a free loopback port, password-protected, and the DAGSTER_POSTGRES_* variables
deploy/dagster.yaml reads, as docker-compose.yml sets them."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from healthcare_assets.resources.embedded_mongo import free_port
from healthcare_assets_tests.conftest import SYSTEM_DEPS, unavailable

REPO = Path(__file__).resolve().parents[1]
DEPLOY_INSTANCE = REPO / "deploy" / "dagster.yaml"


def _pg_bin() -> Path | None:
    """The newest installed PostgreSQL server's bin directory (Debian layout)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return found[-1].parent if found else None


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL cluster in a temporary directory on a free loopback port, password-protected;
    yields its connection settings, then stops and deletes it."""
    bin_dir = _pg_bin()
    if bin_dir is None:
        unavailable("PostgreSQL (server binaries under /usr/lib/postgresql)", SYSTEM_DEPS)
    # initdb refuses to run as root: as root, the cluster belongs to the `postgres` user.
    as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    root = Path(tempfile.mkdtemp(prefix="healthcare-pg-"))  # not under pytest's 0700 root-only tmp
    settings = {"host": "127.0.0.1", "port": free_port(), "user": "dagster",
                "password": secrets.token_urlsafe(16), "db": "dagster"}
    (root / "pwfile").write_text(settings["password"])
    (root / "sock").mkdir()
    if as_owner:
        shutil.chown(root, "postgres")
        for path in root.iterdir():
            shutil.chown(path, "postgres")
    data, log = root / "data", root / "postgres.log"

    def pg(tool: str, *args: str) -> None:
        subprocess.run([*as_owner, str(bin_dir / tool), *args], check=True, capture_output=True, text=True,
                       timeout=120)

    try:
        pg("initdb", "-D", str(data), "-U", settings["user"], f"--pwfile={root / 'pwfile'}",
           "--auth-host=scram-sha-256", "--auth-local=peer", "-E", "UTF8", "--no-sync")
        pg("pg_ctl", "-D", str(data), "-l", str(log), "-w", "-t", "60", "start",
           "-o", f"-p {settings['port']} -k {root / 'sock'} -c listen_addresses=127.0.0.1 -c fsync=off")
    except subprocess.CalledProcessError as exc:
        tail = log.read_text()[-2000:] if log.exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"{exc.cmd[len(as_owner)]} failed: {exc.stderr}\n{tail}") from exc
    try:
        _create_database(settings)
        yield settings
    finally:
        subprocess.run([*as_owner, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                       check=False, capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def connect(settings: dict, db: str):
    import psycopg2  # installed with dagster-postgres

    return psycopg2.connect(host=settings["host"], port=settings["port"], user=settings["user"],
                            password=settings["password"], dbname=db, connect_timeout=10)


def _create_database(settings: dict) -> None:
    conn = connect(settings, "postgres")
    conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
    try:
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{settings["db"]}"')
    finally:
        conn.close()


def dagster_postgres_environment(settings: dict) -> dict[str, str]:
    """The variables deploy/dagster.yaml reads the storage from, as docker-compose.yml sets them."""
    return {f"DAGSTER_POSTGRES_{name}": str(settings[key])
            for name, key in [("HOST", "host"), ("PORT", "port"), ("USER", "user"), ("PASSWORD", "password"),
                              ("DB", "db")]}
