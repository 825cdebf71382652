"""The session's settings and fixture modules. Fixtures start real servers (the embedded MongoDB
daemon, moto's S3, PostgreSQL) on free ports; nothing is mocked. Tests import helpers from
healthcare_assets_tests.fixtures, never from here."""

from __future__ import annotations

import os

import pytest

from healthcare_assets.domain import master_keys

FIXTURES = ["environment", "servers", "runs", "processes", "published", "browser", "s3", "postgres", "corpus",
            "mongo_tools", "compose", "backups", "access_matrix", "release", "drop_sensor", "topology", "gdpr"]
for _name in FIXTURES:  # rewritten like conftest, so their asserts say what failed
    pytest.register_assert_rewrite(f"healthcare_assets_tests.fixtures.{_name}")
# the fixture modules that define fixtures (the others hold helpers only)
pytest_plugins = [f"healthcare_assets_tests.fixtures.{name}" for name in (
    "servers", "runs", "browser", "s3", "postgres", "mongo_tools", "compose", "backups", "access_matrix", "release",
    "drop_sensor")]

# imported after the rewrite is registered
from healthcare_assets_tests.fixtures.environment import (
    gather_missing_tool,
    missing_tools,
    note_missing_tool,
    refuse_ci_without_slow,
)

os.environ.setdefault("HEALTHCARE_PSEUDONYM_KEY", "test-only-pseudonym-key-of-at-least-32-bytes")  # test_privacy covers the unset case
# The session's master key (MONGODB_URI is set for most tests: production refuses a missing one);
# test_encryption covers the unset case.
os.environ.setdefault("HEALTHCARE_MASTER_KEY", master_keys.new_master_key())


def pytest_configure(config):
    refuse_ci_without_slow(config)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    note_missing_tool(report, call)
    return report


def pytest_runtest_logreport(report):
    gather_missing_tool(report)


def pytest_unconfigure(config):
    """One line after pytest's own summary, so that a quiet skip is not missed at the end of a run."""
    if line := missing_tools():
        print("\n" + line)
