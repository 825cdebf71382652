"""What `make test` runs: the `slow` tests only when asked (always in CI), on two workers whose
skips for want of a tool still reach the run's last line."""

import os
import re
import subprocess
import sys

import pytest

from healthcare_assets_tests.fixtures.environment import REPO

TESTS = '''
import pytest
from healthcare_assets_tests.fixtures.environment import DEV_EXTRA, SYSTEM_DEPS, unavailable

def test_browser():
    unavailable("a-browser", SYSTEM_DEPS)

def test_linter():
    unavailable("a-linter", DEV_EXTRA)

@pytest.mark.slow
def test_slow():
    pass

def test_quick():
    pass
'''


def run_pytest(tmp_path, *options: str, ci: str | None = None) -> subprocess.CompletedProcess:
    test = tmp_path / "test_selection.py"
    test.write_text(TESTS)
    env = {k: v for k, v in os.environ.items() if k != "CI"} | ({"CI": ci} if ci else {})
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "healthcare_assets_tests.conftest",
                           "-p", "no:cacheprovider", "-c", str(REPO / "pyproject.toml"), "--rootdir", str(tmp_path),
                           *options, str(test)],
                          cwd=tmp_path, env=env, check=False, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_two_workers_still_end_with_what_was_skipped(tmp_path):
    result = run_pytest(tmp_path, "-n", "2", "-m", "not slow")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.rstrip().splitlines()[-1] == (
        "SKIPPED for want of a-browser (install: bash .ci/system-deps.sh); "
        "a-linter (install: pip install -e '.[dev]')")


def test_ci_refuses_a_run_without_the_slow_tests(tmp_path):
    result = run_pytest(tmp_path, "-n", "2", "-m", "not slow", ci="true")
    assert result.returncode == 4, result.stdout + result.stderr  # pytest's usage error: nothing ran
    assert "CI runs the slow tests too" in result.stderr


@pytest.mark.slow
def test_ci_with_two_workers_fails_for_a_missing_tool(tmp_path):
    result = run_pytest(tmp_path, "-n", "2", ci="true")
    assert result.returncode == 1 and re.search(r"\b2 failed, 2 passed\b", result.stdout), result.stdout
    assert "a-linter is not installed (CI must have it: pip install -e '.[dev]')" in result.stdout


def make_dry_run(*variables: str) -> str:
    return subprocess.run(["make", "-n", "-s", "-C", str(REPO), "test", *variables], check=True,
                          capture_output=True, text=True, timeout=60).stdout


def test_make_test_leaves_the_slow_tests_out_unless_asked_or_in_ci():
    assert '-m "not slow"' in make_dry_run("CI=")
    assert '-m "not slow"' not in make_dry_run("CI=", "SLOW=1")
    assert '-m "not slow"' not in make_dry_run("CI=true")
    assert "--durations=30" in make_dry_run("CI=true") and "--junitxml=.ci/junit.xml" in make_dry_run("CI=true")
