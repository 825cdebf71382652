"""Everything under the data directory is owner-only whatever the umask: the folder 0700, and the
embedded server's storage, secrets, TLS keys, staged Parquet, quarantine and reports readable by
their owner alone (other local users must not read patient data)."""

import os
import stat

import pandas as pd
import pytest

from healthcare_assets.defs.resources import mongo_resource_from_env
from healthcare_assets.plumbing import embedded_mongo
from healthcare_assets_tests.fixtures.runs import check_results, materialize


@pytest.fixture
def umask_022():
    old = os.umask(0o022)  # the common default: 0644 files and 0755 folders unless the code decides
    yield
    os.umask(old)


def test_everything_under_the_data_directory_is_owner_only(umask_022, small_csv, tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    monkeypatch.delenv("MONGODB_URI", raising=False)
    monkeypatch.setenv("HEALTHCARE_DATA_DIR", str(data_dir))
    raw = pd.read_csv(small_csv, dtype=str, keep_default_na=False)
    raw.loc[5, "Age"] = "unknown"  # a row for quarantine
    export = tmp_path / "one_bad_row.csv"
    raw.to_csv(export, index=False)
    try:
        result = materialize(export, mongo_resource_from_env())
        assert result.success, check_results(result)
    finally:
        embedded_mongo.stop(data_dir)

    modes = {path.relative_to(data_dir).as_posix(): stat.S_IMODE(path.stat().st_mode) for path in data_dir.rglob("*")}
    for written in ("mongo/WiredTiger.wt", "mongo.log", "secrets.env", "tls/server.key", "tls/client.pem",
                    "reports/release_report.json", "reports/quality/index.html"):
        assert written in modes, sorted(modes)
    for pattern in ("/cleaned.parquet", "-one_bad_row.csv", "-one_bad_row.json"):  # staging, quarantine, report
        assert [name for name in modes if name.endswith(pattern)], (pattern, sorted(modes))
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert {name: oct(mode) for name, mode in modes.items() if mode & 0o077} == {}
