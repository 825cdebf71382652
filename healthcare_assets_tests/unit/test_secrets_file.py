"""secrets.env: first runs that generate at once agree on one pseudonym key and keep every
password; the file is 0600 whatever the umask; production refuses the placeholders of .env.example."""

import os
import stat
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from healthcare_assets.defs.resources import mongo_resource_from_env
from healthcare_assets.domain import access
from healthcare_assets.plumbing import secrets_file, settings
from healthcare_assets.plumbing.mongo import MongoResource
from healthcare_assets_tests.fixtures.environment import keys_now, passwords_now

PRODUCTION_URI = "mongodb://admin_master:a-long-random-production-password@127.0.0.1:9/"


def stored(data_dir) -> dict[str, str]:
    return dict(line.partition("=")[::2] for line in (data_dir / "secrets.env").read_text().splitlines())


@pytest.mark.filterwarnings("ignore:HEALTHCARE_PSEUDONYM_KEY is not set")
def test_first_runs_at_once_make_one_key_and_keep_every_password(tmp_path, monkeypatch):
    monkeypatch.delenv("HEALTHCARE_PSEUDONYM_KEY")
    monkeypatch.delenv("MONGODB_URI", raising=False)
    for attempt in range(10):
        data_dir = tmp_path / f"first-run-{attempt}"
        monkeypatch.setenv("HEALTHCARE_DATA_DIR", str(data_dir))
        start = threading.Barrier(8)

        def first_run(i, data_dir=data_dir, start=start):
            start.wait(timeout=60)  # half the steps need the key, half start the embedded server
            return keys_now().pseudonym_key() if i % 2 else access.passwords(data_dir, generate=True)

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(first_run, range(8)))
        secrets = stored(data_dir)
        assert {r for r in results if isinstance(r, bytes)} == {secrets["HEALTHCARE_PSEUDONYM_KEY"].encode()}
        passwords = {r.name: secrets[r.password_variable] for r in access.roles()}
        assert [r for r in results if isinstance(r, dict)] == [passwords] * 4


def test_an_existing_readable_secrets_file_is_made_owner_only(tmp_path, monkeypatch):
    monkeypatch.delenv("MONGODB_URI", raising=False)
    old = os.umask(0o022)
    try:
        (tmp_path / "secrets.env").write_text("HEALTHCARE_PSEUDONYM_KEY=" + "a1" * 32 + "\n")  # 0644, as before
        passwords = access.passwords(tmp_path, generate=True)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "secrets.env").stat().st_mode) == 0o600
    assert stored(tmp_path)["HEALTHCARE_PSEUDONYM_KEY"] == "a1" * 32
    assert passwords == {r.name: stored(tmp_path)[r.password_variable] for r in access.roles()}


@pytest.mark.parametrize("key", ["change-me-pseudonym-key", "x" * 31])
def test_production_refuses_a_placeholder_or_short_pseudonym_key(key, monkeypatch):
    monkeypatch.setenv("MONGODB_URI", PRODUCTION_URI)
    monkeypatch.setenv("HEALTHCARE_PSEUDONYM_KEY", key)
    with pytest.raises(ValueError, match="HEALTHCARE_PSEUDONYM_KEY") as error:
        keys_now().pseudonym_key()
    assert key not in str(error.value)


def test_production_refuses_placeholder_passwords(monkeypatch):
    monkeypatch.setenv("MONGODB_URI", PRODUCTION_URI)
    monkeypatch.setenv("HEALTHCARE_ANALYST_READONLY_PASSWORD", "change-me-analyst-readonly")
    with pytest.raises(ValueError, match="HEALTHCARE_ANALYST_READONLY_PASSWORD") as error:
        access.passwords(given=passwords_now(), production=True)
    assert "change-me-analyst-readonly" not in str(error.value)

    monkeypatch.setenv("MONGODB_URI", "mongodb://admin_master:change-me-admin-master@mongo:27017/?authSource=admin")
    with pytest.raises(ValueError, match="MONGODB_URI") as error:
        mongo_resource_from_env().uri()
    assert "change-me-admin-master" not in str(error.value)
    monkeypatch.delenv("MONGODB_URI")  # a resource given a server's URI holds it to production's rules all the same
    with pytest.raises(ValueError, match="MONGODB_URI"):
        MongoResource(mongodb_uri="mongodb://admin_master:change-me-admin-master@mongo:27017/").uri()


def test_real_secrets_pass_in_production_and_placeholders_in_development(tmp_path, monkeypatch):
    monkeypatch.setenv("HEALTHCARE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("HEALTHCARE_ANALYST_READONLY_PASSWORD", "a-long-random-password")
    monkeypatch.setenv("MONGODB_URI", PRODUCTION_URI)
    monkeypatch.setenv("HEALTHCARE_PSEUDONYM_KEY", "k" * 32)
    assert keys_now().pseudonym_key() == b"k" * 32
    assert access.passwords(given=passwords_now(), production=True)["ANALYST_READONLY"] == "a-long-random-password"
    assert mongo_resource_from_env().uri() == PRODUCTION_URI

    monkeypatch.delenv("MONGODB_URI")
    monkeypatch.setenv("HEALTHCARE_PSEUDONYM_KEY", "change-me-pseudonym-key")
    monkeypatch.setenv("HEALTHCARE_ANALYST_READONLY_PASSWORD", "change-me-analyst-readonly")
    assert keys_now().pseudonym_key() == b"change-me-pseudonym-key"
    assert access.passwords(given=passwords_now())["ANALYST_READONLY"] == "change-me-analyst-readonly"


def read_secret(generate, **options) -> str:
    env = settings.environment()
    return secrets_file.value("HEALTHCARE_TEST_SECRET", generate, given=env.get("HEALTHCARE_TEST_SECRET"),
                              production=env.production, what="token", **options)


def test_one_secret_from_the_environment_else_generated_once_with_a_warning(tmp_path, monkeypatch):
    monkeypatch.setenv("HEALTHCARE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("MONGODB_URI", raising=False)
    monkeypatch.delenv("HEALTHCARE_TEST_SECRET", raising=False)
    made = iter(["first-made", "second-made"])
    with pytest.warns(UserWarning, match="HEALTHCARE_TEST_SECRET is not set: using the development token"):
        assert read_secret(lambda: next(made)) == "first-made"
    with pytest.warns(UserWarning):
        assert read_secret(lambda: next(made)) == "first-made"
    monkeypatch.setenv("HEALTHCARE_TEST_SECRET", "from-the-environment")
    assert read_secret(lambda: next(made)) == "from-the-environment"
    assert stored(tmp_path)["HEALTHCARE_TEST_SECRET"] == "first-made"


def test_a_development_placeholder_is_unset_only_where_asked_and_refused_in_production(tmp_path, monkeypatch):
    monkeypatch.setenv("HEALTHCARE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("MONGODB_URI", raising=False)
    monkeypatch.setenv("HEALTHCARE_TEST_SECRET", "change-me-test-secret")
    assert read_secret(lambda: "made") == "change-me-test-secret"
    with pytest.warns(UserWarning, match="HEALTHCARE_TEST_SECRET is not set"):
        assert read_secret(lambda: "made", development_placeholder_ignored=True) == "made"
    monkeypatch.setenv("MONGODB_URI", PRODUCTION_URI)
    with pytest.raises(secrets_file.PlaceholderSecretError, match="HEALTHCARE_TEST_SECRET") as refused:
        read_secret(lambda: "made", development_placeholder_ignored=True)
    assert "change-me-test-secret" not in str(refused.value)


def test_values_without_a_generator_only_read_the_file(tmp_path, monkeypatch):
    monkeypatch.delenv("MONGODB_URI", raising=False)
    monkeypatch.delenv("HEALTHCARE_TEST_SECRET", raising=False)
    assert secrets_file.values({"HEALTHCARE_TEST_SECRET": ""}, False, tmp_path) == {}
    assert not (tmp_path / "secrets.env").exists()
    secrets_file.store({"HEALTHCARE_TEST_SECRET": "kept"}, tmp_path)
    assert secrets_file.values({"HEALTHCARE_TEST_SECRET": ""}, False, tmp_path) == {"HEALTHCARE_TEST_SECRET": "kept"}
