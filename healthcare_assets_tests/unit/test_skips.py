"""A test without its tool skips on a developer machine and says so in the run's last line; in
CI (.ci/run sets CI=true) it fails instead."""

import os
import re
import subprocess
import sys

from healthcare_assets_tests.fixtures.environment import REPO

NEEDS_A_TOOL = '''
from healthcare_assets_tests.fixtures.environment import DEV_EXTRA, SYSTEM_DEPS, unavailable

def test_browser():
    unavailable("a-browser", SYSTEM_DEPS)

def test_linter():
    unavailable("a-linter", DEV_EXTRA)
'''


def run_pytest(tmp_path, ci: str | None) -> subprocess.CompletedProcess:
    test = tmp_path / "test_needs_a_tool.py"
    test.write_text(NEEDS_A_TOOL)
    env = {k: v for k, v in os.environ.items() if k != "CI"} | ({"CI": ci} if ci else {})
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "healthcare_assets_tests.conftest",
                           "-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(test)],
                          cwd=tmp_path, env=env, check=False, capture_output=True, text=True, timeout=300)


def test_a_local_run_ends_with_what_was_skipped_and_how_to_install_it(tmp_path):
    result = run_pytest(tmp_path, ci=None)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.rstrip().splitlines()[-1] == (
        "SKIPPED for want of a-browser (install: bash .ci/system-deps.sh); "
        "a-linter (install: pip install -e '.[dev]')")


def test_ci_fails_for_a_missing_tool(tmp_path):
    assert re.search(r"^export CI=true\nmake test$", (REPO / ".ci" / "run").read_text(), flags=re.MULTILINE)
    result = run_pytest(tmp_path, ci="true")
    assert result.returncode == 1 and "2 failed" in result.stdout, result.stdout + result.stderr
    assert "a-browser is not installed (CI must have it: bash .ci/system-deps.sh)" in result.stdout
