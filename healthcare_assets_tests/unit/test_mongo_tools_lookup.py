"""Where the tests find MongoDB's mongodump and mongorestore (fixtures/mongo_tools.py), and where
.ci/run points them: the folder beside the checkout first."""

from __future__ import annotations

import os
import re
import subprocess

from healthcare_assets_tests.fixtures.environment import REPO
from healthcare_assets_tests.fixtures.mongo_tools import TOOLS, find_tools


def _tools_in(folder, names=TOOLS):
    folder.mkdir(parents=True)
    for name in names:
        (folder / name).write_text("#!/bin/sh\n")
        (folder / name).chmod(0o755)
    return folder


def test_the_named_folder_wins_and_must_hold_both(tmp_path, monkeypatch):
    on_path = _tools_in(tmp_path / "bin")
    monkeypatch.setenv("PATH", str(on_path))
    monkeypatch.delenv("HEALTHCARE_MONGO_TOOLS", raising=False)
    assert find_tools() == {name: str(on_path / name) for name in TOOLS}
    named = _tools_in(tmp_path / "named")
    monkeypatch.setenv("HEALTHCARE_MONGO_TOOLS", str(named))
    assert find_tools() == {name: str(named / name) for name in TOOLS}
    monkeypatch.setenv("HEALTHCARE_MONGO_TOOLS", str(_tools_in(tmp_path / "half", ["mongodump"])))
    assert find_tools() is None  # not the ones on PATH: a folder named is the one meant


def test_ci_exports_the_tools_beside_the_checkout_unless_set(tmp_path):
    block = re.search(r"^if \[ -z \"\$\{HEALTHCARE_MONGO_TOOLS:-\}\" \]; then\n.*?^fi\n",
                      (REPO / ".ci" / "run").read_text(), flags=re.MULTILINE | re.DOTALL)
    assert block, ".ci/run no longer looks for the tools"
    repo = tmp_path / "checkout"
    repo.mkdir()
    beside = _tools_in(tmp_path / "shared" / "tools" / "mongo-tools-100.9.5")
    script = "set -euo pipefail\n" + block.group(0) + 'echo "${HEALTHCARE_MONGO_TOOLS:-unset}"\n'
    env = {k: v for k, v in os.environ.items() if k != "HEALTHCARE_MONGO_TOOLS"}
    run = subprocess.run(["bash", "-c", script], cwd=repo, env=env, capture_output=True, text=True, check=True,
                         timeout=60)
    assert run.stdout.strip() == str(beside)
    run = subprocess.run(["bash", "-c", script], cwd=repo, env=env | {"HEALTHCARE_MONGO_TOOLS": "/set/before"},
                         capture_output=True, text=True, check=True, timeout=60)
    assert run.stdout.strip() == "/set/before"
