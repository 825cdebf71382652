"""export-patient: decrypted records in a new file only its owner can read, never replacing one;
without the master key it says which key to bring."""

import csv
import os
import subprocess
import sys

import pytest
from bson import json_util

from healthcare_assets.domain import gdpr, master_keys
from healthcare_assets_tests.fixtures.environment import keys_now
from healthcare_assets_tests.fixtures.gdpr import cli
from healthcare_assets_tests.fixtures.runs import materialize


@pytest.mark.slow
def test_export_is_a_new_owner_only_file_and_never_replaces_one(mongo, data_dir, small_csv, tmp_path):
    with open(small_csv, newline="") as f:
        name = gdpr.normalized(list(csv.reader(f))[10][0])
    assert materialize(small_csv, mongo).success
    old = os.umask(0o022)  # the common default: the file would be 0644 unless the code decides
    try:
        out = tmp_path / "patient.json"
        result = cli("export-patient", "--name", name, "--all", "--out", str(out), mongo=mongo, data_dir=data_dir)
        assert result.returncode == 0, result.stderr
        assert oct(os.stat(out).st_mode & 0o777) == "0o600"
        assert json_util.loads(out.read_text())["records"]

        # an existing file is not overwritten, a symlink not followed (its target untouched)
        before = out.read_bytes()
        target = tmp_path / "someone-elses.txt"
        target.write_text("not yours\n")
        target.chmod(0o644)
        link = tmp_path / "link.json"
        link.symlink_to(target)
        dangling = tmp_path / "dangling.json"
        dangling.symlink_to(tmp_path / "not-there-yet.json")
        for path in (out, link, dangling):
            refused = cli("export-patient", "--name", name, "--all", "--out", str(path), mongo=mongo, data_dir=data_dir)
            assert refused.returncode == 8, (path, refused.stdout, refused.stderr)
            assert f"{path}: already exists" in refused.stderr and "Traceback" not in refused.stderr, refused.stderr
        assert out.read_bytes() == before
        assert target.read_text() == "not yours\n" and oct(target.stat().st_mode & 0o777) == "0o644"
        assert not (tmp_path / "not-there-yet.json").exists()
    finally:
        os.umask(old)


def test_an_export_without_the_master_key_says_which_key_to_bring(mongo, data_dir, small_csv):
    """A host holding another master key than the one wrapping the data keys (a restore onto a new
    host, a lost variable): the command names the missing key by digest, with no traceback."""
    with open(small_csv, newline="") as f:
        name = gdpr.normalized(list(csv.reader(f))[10][0])
    assert materialize(small_csv, mongo).success
    wrapping = master_keys.local_provider(keys_now().master_key())
    env = {**os.environ, "MONGODB_DATABASE": mongo.database, "HEALTHCARE_DATA_DIR": str(data_dir),
           master_keys.MASTER_KEY_VARIABLE: master_keys.new_master_key()}
    result = subprocess.run([sys.executable, "-m", "healthcare_assets.tooling.cli", "export-patient", "--name", name,
                             "--all", "--out", str(data_dir / "export.json")], check=False, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 9, (result.stdout, result.stderr)
    assert wrapping in result.stderr and "HEALTHCARE_MASTER_KEY" in result.stderr
    assert "Traceback" not in result.stderr and not (data_dir / "export.json").exists()
