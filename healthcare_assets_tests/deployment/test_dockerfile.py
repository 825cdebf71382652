"""The Dockerfile's key lines (pinned base, hash-checked locks, non-root user, port), the image's
dagster-postgres pin, hadolint and .dockerignore."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from healthcare_assets_tests.fixtures.compose import DOCKERFILE
from healthcare_assets_tests.fixtures.environment import DEV_EXTRA, REPO, unavailable


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_dockerfile_builds_this_package():
    instructions = _instructions()
    base = [arg for op, arg in instructions if op == "FROM"]
    # pinned: the tag for the reader, the digest for the bytes
    assert len(base) == 1 and re.fullmatch(r"python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}", base[0]), base
    runs = [arg for op, arg in instructions if op == "RUN"]
    # every dependency from the locks, hash-checked; the package itself resolves nothing more
    assert "pip install --no-cache-dir --require-hashes -r requirements.lock" in runs[0]
    assert "pip install --no-cache-dir --no-deps --require-hashes -r requirements-nodeps.lock" in runs[0]
    assert re.fullmatch(r"pip install --no-cache-dir --no-deps --no-build-isolation \.", runs[1]), runs[1]
    copies = [arg.split() for op, arg in instructions if op == "COPY"]
    assert copies[0] == ["requirements.lock", "requirements-nodeps.lock", "./"]
    assert ["pyproject.toml", "./"] in copies and ["healthcare_assets", "./healthcare_assets"] in copies
    assert ["deploy/dagster.yaml", "${DAGSTER_HOME}/dagster.yaml"] in copies
    users = [arg for op, arg in instructions if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert [arg for op, arg in instructions if op == "EXPOSE"] == ["4000"]
    assert "healthcare_assets.definitions" in dict(instructions)["CMD"]


def test_image_installs_dagster_postgres_matching_dagster():
    """The `deploy` extra the image installs pins dagster-postgres to the integrations' line of
    the pinned dagster (dagster 1.13.x <-> integrations 0.29.x), like dagster-aws."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = dict(re.match(r"([\w-]+)==(\S+)", dep).groups() for dep in project["dependencies"] if "==" in dep)
    deploy = project.get("optional-dependencies", {}).get("deploy", [])
    assert f"dagster-postgres=={pins['dagster-aws']}" in deploy, deploy
    import dagster_postgres

    assert dagster_postgres.__version__ == pins["dagster-aws"]


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        unavailable("hadolint", DEV_EXTRA)
    result = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], check=False, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerignore_keeps_the_build_context_small():
    ignored = set((REPO / ".dockerignore").read_text().split())
    assert {".git", ".venv", ".data", ".env"} <= ignored
