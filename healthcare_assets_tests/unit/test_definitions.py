"""Every definition loads, and every stage is gated by blocking checks."""

import itertools
import os
import subprocess
import sys

import dagster as dg
import pytest

from healthcare_assets.defs.anonymize import analysts_release_audit
from healthcare_assets.defs.resources import mongo_resource_from_env, resources
from healthcare_assets.defs.s3_drops import s3_drops
from healthcare_assets.domain import access, master_keys
from healthcare_assets.domain.local_server import EmbeddedMongoResource
from healthcare_assets.domain.master_keys import MasterKeys
from healthcare_assets.plumbing.mongo import MongoResource
from healthcare_assets_tests.fixtures.environment import REPO
from healthcare_assets_tests.fixtures.runs import DEFS

CHAIN = ["raw_csv", "cleaned_frame", "quality_report", "mongo_hospitalizations", "anonymized_view", "index_benchmarks"]


def test_definitions_load():
    dg.Definitions.validate_loadable(DEFS)
    graph = DEFS.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert set(CHAIN) <= keys


def test_chain_order():
    graph = DEFS.resolve_asset_graph()
    for upstream, downstream in itertools.pairwise(CHAIN):
        parents = {k.to_user_string() for k in graph.get(dg.AssetKey(downstream)).parent_keys}
        assert upstream in parents, f"{downstream} should depend on {upstream}"


def test_every_asset_has_group_kinds_and_blocking_checks():
    """Every stage is gated by blocking checks; the only non-blocking ones are the scheduled
    whole-collection audit, which no drop runs."""
    graph = DEFS.resolve_asset_graph()
    specs = [spec for d in [*DEFS.assets, *DEFS.asset_checks] for spec in d.check_specs]
    audit = {spec.key for spec in analysts_release_audit.check_specs}
    assert audit and all(not spec.blocking for spec in specs if spec.key in audit)
    for name in CHAIN:
        node = graph.get(dg.AssetKey(name))
        assert node.group_name and node.group_name != "default", name
        assert node.kinds, name
        gates = [spec for spec in specs if spec.asset_key == dg.AssetKey(name) and spec.key not in audit]
        assert gates, f"{name} has no asset check"
        assert all(spec.blocking for spec in gates), name


def test_a_drop_runs_every_gate_and_neither_the_audit_nor_the_benchmark():
    job = DEFS.resolve_job_def("s3_csv_drop_job")
    selected = job.asset_layer.asset_graph
    assert {k.to_user_string() for k in selected.executable_asset_keys} == set(CHAIN) - {"index_benchmarks"}
    assert not {spec.key for spec in analysts_release_audit.check_specs} & set(selected.asset_check_keys)


def test_resources_are_chosen_per_environment_and_read_at_run_time(monkeypatch, tmp_path):
    """MONGODB_URI set: MongoDB by that URI; unset: the embedded server. Each value is a dg.EnvVar,
    so the definitions hold the variables' names, never their values (a password in a URI)."""
    secret = "mongodb://admin_master:a-secret-password@db.example:27017/"
    monkeypatch.setenv("MONGODB_URI", secret)
    monkeypatch.setenv("HEALTHCARE_QUARANTINE_CEILING", "0.2")
    found = resources()
    assert type(found["mongo"]) is MongoResource and "a-secret-password" not in repr(found["mongo"])
    assert found["mongo"].mongodb_uri == dg.EnvVar("MONGODB_URI")
    assert found["settings"].quarantine_ceiling == dg.EnvVar("HEALTHCARE_QUARANTINE_CEILING")
    assert mongo_resource_from_env().mongodb_uri == secret  # outside a run (the CLI): the value itself

    monkeypatch.delenv("MONGODB_URI")
    monkeypatch.delenv("HEALTHCARE_QUARANTINE_CEILING")
    monkeypatch.setenv("HEALTHCARE_DATA_DIR", str(tmp_path))
    found = resources()
    assert isinstance(found["mongo"], EmbeddedMongoResource)
    assert found["mongo"].data_dir == dg.EnvVar("HEALTHCARE_DATA_DIR")
    assert found["settings"].ceiling() == 0.05  # unset: today's default


def test_the_keys_reach_a_run_as_env_vars_and_resolve_to_the_environments(monkeypatch, tmp_path):
    """The keys resource holds the master-key and pseudonym-key variables as dg.EnvVar (never their values); resolved,
    they are the environment's, HEALTHCARE_KMS_REGION falling back to AWS_REGION; the embedded server's installation
    is development's, with its data directory's secrets.env."""
    key, arn = master_keys.new_master_key(), "arn:aws:kms:eu-west-3:111122223333:key/1234abcd-12ab-34cd-56ef-12345678"
    pseudonym = "a-pseudonym-key-of-at-least-32-bytes-" + os.urandom(8).hex()
    monkeypatch.setenv("MONGODB_URI", "mongodb://db.example:27017/")
    monkeypatch.setenv(master_keys.MASTER_KEY_VARIABLE, key)
    monkeypatch.setenv(master_keys.KMS_ARN_VARIABLE, arn)
    monkeypatch.setenv(master_keys.PSEUDONYM_KEY_VARIABLE, pseudonym)
    monkeypatch.delenv(master_keys.KMS_REGION_VARIABLE, raising=False)
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    found = resources()
    assert found["keys"].master_key == dg.EnvVar(master_keys.MASTER_KEY_VARIABLE)
    assert found["keys"].pseudonym_key == dg.EnvVar(master_keys.PSEUDONYM_KEY_VARIABLE)
    assert found["keys"].kms_region == dg.EnvVar("AWS_REGION") and found["keys"].production
    resolved = resources(resolve=True)["keys"]  # the command line's: values, not names
    assert not any(secret in repr(r) for secret in (key, pseudonym) for r in [*found.values(), resolved])
    keys = MasterKeys.of(resolved)
    assert keys.production and keys.data_dir is None and keys.pseudonym_key() == pseudonym.encode()
    assert keys.master == key and keys.aws_master_key() == {"key": arn, "region": "eu-west-3"}
    assert pseudonym not in repr(keys) and key not in repr(keys)

    monkeypatch.delenv("MONGODB_URI")
    monkeypatch.setenv("HEALTHCARE_DATA_DIR", str(tmp_path))
    assert resources()["keys"].secrets_dir == dg.EnvVar("HEALTHCARE_DATA_DIR")
    keys = MasterKeys.of(resources(resolve=True)["keys"])
    assert not keys.production and keys.data_dir == tmp_path.resolve()
    assert keys.pseudonym_key() == pseudonym.encode()
    monkeypatch.delenv(master_keys.PSEUDONYM_KEY_VARIABLE)
    keys = MasterKeys.of(resources(resolve=True, data_dir=str(tmp_path / "other"))["keys"])
    assert keys.data_dir == (tmp_path / "other").resolve()  # the embedded server's data directory, whatever it is
    with pytest.warns(UserWarning, match=master_keys.PSEUDONYM_KEY_VARIABLE):
        made = keys.pseudonym_key()
    assert (tmp_path / "other" / "secrets.env").read_text().count(made.decode()) == 1


def test_role_passwords_reach_a_run_as_env_vars_never_shown_and_resolve_to_the_environments(monkeypatch, tmp_path):
    """MongoResource holds HEALTHCARE_<ROLE>_PASSWORD as dg.EnvVar fields (never their values); resolved, for the
    CLI, they are the environment's; neither is in the resource's repr."""
    given = {r.name: f"password-of-{r.user}-{os.urandom(4).hex()}" for r in access.roles()}
    for r in access.roles():
        monkeypatch.setenv(r.password_variable, given[r.name])
    for production in (True, False):
        if production:
            monkeypatch.setenv("MONGODB_URI", "mongodb://db.example:27017/")
        else:
            monkeypatch.delenv("MONGODB_URI")
            monkeypatch.setenv("HEALTHCARE_DATA_DIR", str(tmp_path))
        found, resolved = resources()["mongo"], mongo_resource_from_env(start=False)
        assert {r.name: getattr(found, r.password_field) for r in access.roles()} == {
            r.name: dg.EnvVar(r.password_variable) for r in access.roles()}
        assert access.passwords_of(resolved) == given
        shown = repr(found) + repr(resolved) + str(resolved)
        assert not [r.password_variable for r in access.roles() if r.password_variable in shown or given[r.name] in shown]
    assert not (tmp_path / "secrets.env").exists()  # built, nothing started or generated


def test_the_sensor_runs_by_default_only_where_a_bucket_is_configured(monkeypatch):
    monkeypatch.delenv("HEALTHCARE_S3_BUCKET", raising=False)
    assert s3_drops().sensors[0].default_status == dg.DefaultSensorStatus.STOPPED
    monkeypatch.setenv("HEALTHCARE_S3_BUCKET", "drops")
    assert s3_drops().sensors[0].default_status == dg.DefaultSensorStatus.RUNNING


def test_importing_the_code_location_reads_no_setting(tmp_path):
    """Definitions decide what the environment says when they are loaded, not when a module is
    imported: importing every module with a bucket and MONGODB_URI set, then loading the
    definitions without them, gives the defaults of an installation without them."""
    probe = ("import os, pkgutil, importlib, healthcare_assets as p\n"
             "for m in pkgutil.walk_packages(p.__path__, 'healthcare_assets.'):\n"
             "    importlib.import_module(m.name)\n"
             "del os.environ['HEALTHCARE_S3_BUCKET'], os.environ['MONGODB_URI']\n"
             "from healthcare_assets.definitions import defs\n"
             "d = defs()\n"
             "print(d.resolve_sensor_def('s3_csv_drop_sensor').default_status.value,"
             " *[s.default_status.value for s in d.schedules if s.name.startswith(('mongo_backup', 'restore'))])\n")
    env = {**os.environ, "HEALTHCARE_S3_BUCKET": "drops", "MONGODB_URI": "mongodb://db.example:27017/",
           "HEALTHCARE_DATA_DIR": str(tmp_path), "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["STOPPED", "STOPPED", "STOPPED"]
