"""The compose file's services where no Docker engine runs: `docker compose config` validates it
with a .env made from .env.example; its services, images, health checks, start order, volumes and
the Dagster instance and code location they run."""

from __future__ import annotations

import re
import shutil
import tomllib
from pathlib import Path

import yaml

from healthcare_assets_tests.fixtures.compose import (
    APP_SERVICES,
    COMPOSE,
    DAGSTER_POSTGRES,
    DEPLOYMENT_DOC,
    ENV_EXAMPLE,
    INSTANCE,
    LONG_RUNNING,
    ONE_SHOT,
    START_ORDER,
    WORKSPACE,
    compose_config,
    dash_leading_env,
    mongo_init_script,
    rendered_compose,
    repository_files,
    services_environment,
)
from healthcare_assets_tests.fixtures.environment import REPO


def test_compose_config_is_valid_with_env_from_example(tmp_path):
    env_file = tmp_path / ".env"
    shutil.copyfile(ENV_EXAMPLE, env_file)
    result = compose_config(env_file)
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    assert set(resolved["services"]) == set(START_ORDER) | {"mongo-keyfile", "minio", "postgres"}
    assert set(resolved["services"]) == LONG_RUNNING | ONE_SHOT
    # Substitution happened: the placeholders from .env.example reached the services.
    assert resolved["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"] == "change-me-postgres"
    for name, waits_for in START_ORDER.items():
        assert {k: v["condition"] for k, v in resolved["services"][name]["depends_on"].items()} == waits_for


def test_compose_refuses_to_start_without_secrets(tmp_path):
    empty = tmp_path / "empty.env"
    empty.write_text("")
    result = compose_config(empty)
    assert result.returncode != 0
    assert "in .env" in result.stderr  # the ${VAR:?set VAR in .env} message names what is missing


def test_the_image_is_built_once_by_the_code_server(tmp_path):
    """Compose v2 builds services in parallel: two `build:` with one tag race to export it. Only
    user-code builds; every other service of that image names it and never pulls it."""
    services = rendered_compose(dash_leading_env(tmp_path)[0])["services"]
    assert [name for name, service in services.items() if "build" in service] == ["user-code"]
    image = services["user-code"]["image"]
    users = {name for name, service in services.items() if service.get("image") == image}
    assert users == APP_SERVICES
    for name in users - {"user-code"}:
        assert services[name]["pull_policy"] == "never", name
    for name in ("webserver", "daemon"):
        assert services[name]["depends_on"]["user-code"]["condition"] == "service_healthy"


def test_the_docs_require_compose_v2():
    """Compose v1 (1.29) speaks Docker API 1.38; Docker Engine 29 refuses anything under 1.44."""
    for path in (REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), COMPOSE, ENV_EXAMPLE):
        text = path.read_text()
        assert not re.search(r"docker-compose (up|build|run|ps|down|pull|start|exec|logs)", text), path
    doc = DEPLOYMENT_DOC.read_text()
    assert "Compose v2" in doc and "1.38" in doc and "1.44" in doc


def test_services_images_and_start_order(compose):
    services = compose["services"]
    assert set(services) == LONG_RUNNING | ONE_SHOT
    assert services["mongo"]["image"] == "mongo:7"
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["minio"]["image"].startswith("quay.io/minio/minio:RELEASE.")
    assert services["minio-setup"]["image"].startswith("quay.io/minio/mc:RELEASE.")
    for name in APP_SERVICES:
        assert services[name]["image"] == "healthcare-assets:latest", name
    for name, waits_for in START_ORDER.items():
        assert {k: v["condition"] for k, v in services[name]["depends_on"].items()} == waits_for, name


def test_health_checks_and_restart_policies(compose):
    services = compose["services"]
    for name in LONG_RUNNING:
        check = services[name].get("healthcheck")
        assert check and check["test"] and check.get("interval"), f"{name} has no health check"
        assert services[name]["restart"] == "unless-stopped", name
    for name in ONE_SHOT:
        assert services[name]["restart"] == "no", name
    # A one-shot is waited for to complete; a long-running service to be healthy, or started
    # where the waiting one polls it itself.
    for waits_for in START_ORDER.values():
        for dependency, condition in waits_for.items():
            assert (condition == "service_completed_successfully") == (dependency in ONE_SHOT), dependency


def test_mongo_is_an_authenticated_single_node_replica_set(compose):
    mongo = compose["services"]["mongo"]
    command = mongo["command"]
    assert command[command.index("--replSet") + 1] == "rs0"
    keyfile = command[command.index("--keyFile") + 1]
    assert any(v.endswith(f":{Path(keyfile).parent}:ro") for v in mongo["volumes"])
    # Healthy = primary, asked without logging in: a password changed in .env cannot lock the stack.
    check = " ".join(mongo["healthcheck"]["test"])
    assert "db.hello().isWritablePrimary" in check and "rs.initiate" not in check
    assert not re.search(r"\s(-u|-p|--username|--password|--authenticationDatabase)\b|auth\(|PASSWORD", check), check
    # The replica set is initiated by the one-shot, only while the node has no configuration.
    init = mongo_init_script(compose)
    assert re.search(r'if \(!db\.hello\(\)\.setName\) \{[^}]*rs\.initiate\(\{_id: "rs0"', init), init
    # The key is generated at start into a volume, never a file of the repository (tracked, or
    # untracked and not ignored: what a commit could pick up; never .venv or .data)
    assert [f for f in repository_files() if "keyfile" in Path(f).name] == []
    assert "/dev/urandom" in " ".join(compose["services"]["mongo-keyfile"]["command"])


def test_named_volumes(compose):
    declared = set(compose["volumes"])
    used = {}
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            assert not source.startswith((".", "/")), f"{name} mounts a host path: {volume}"
            used.setdefault(source, set()).add((name, target))
    assert set(used) == declared
    must_persist = {("mongo", "/data/db"), ("postgres", "/var/lib/postgresql/data"), ("minio", "/data"),
                    ("user-code", "/data")}
    assert must_persist <= set().union(*used.values())


def test_pipeline_environment(compose):
    environment = services_environment(compose)
    code = environment["user-code"]
    assert code["HEALTHCARE_DATA_DIR"] == "/data"
    assert code["AWS_ENDPOINT_URL"] == "http://minio:9000"
    assert code["HEALTHCARE_S3_PREFIX"].endswith(":-incoming/}")
    for variable in ("HEALTHCARE_S3_BUCKET", "HEALTHCARE_S3_PREFIX"):
        assert environment["minio-setup"][variable] == code[variable], variable
    for name in ("user-code", "webserver", "daemon"):
        assert DAGSTER_POSTGRES <= set(environment[name]), name
    # Whatever encrypts or decrypts names (the runs; provisioning, which re-encrypts the doctor
    # app's copy) gets the master key's settings; only they hold it and the database credentials.
    encryption_settings = {"HEALTHCARE_MASTER_KEY", "HEALTHCARE_KMS_KEY_ARN", "HEALTHCARE_KMS_REGION"}
    for name in ("user-code", "provision-access"):
        assert encryption_settings <= set(environment[name]), name
    for name in ("webserver", "daemon"):
        assert not {"MONGODB_URI", "AWS_SECRET_ACCESS_KEY", "HEALTHCARE_MASTER_KEY"} & set(environment[name]), name


def test_code_location_is_the_one_dg_and_dagster_dev_load(compose):
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["dg"]["project"]
    module = f"{project['root_module']}.definitions"  # dg's default code location target
    command = compose["services"]["user-code"]["command"]
    assert command[command.index("-m") + 1] == module
    port = int(command[command.index("-p") + 1])
    server = yaml.safe_load(WORKSPACE.read_text())["load_from"][0]["grpc_server"]
    assert server == {"host": "user-code", "port": port, "location_name": project["code_location_name"]}
    assert f"DAGSTER_CLI_ASSET_MATERIALIZE_MODULE_NAME={module}" in (REPO / "Makefile").read_text()
    for name in ("webserver", "daemon"):
        assert "/opt/dagster/workspace.yaml" in compose["services"][name]["command"]


def test_instance_yaml_reads_postgres_from_the_environment(compose):
    instance = yaml.safe_load(INSTANCE.read_text())
    db = instance["storage"]["postgres"]["postgres_db"]
    from_env = {value["env"] for value in db.values() if isinstance(value, dict)}
    assert from_env == DAGSTER_POSTGRES  # nothing secret or host-specific is written in the file
    assert instance["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert instance["run_launcher"]["class"] == "DefaultRunLauncher"
    postgres_env = compose["services"]["postgres"]["environment"]
    code_env = compose["services"]["user-code"]["environment"]
    for ours, theirs in [("USER", "POSTGRES_USER"), ("PASSWORD", "POSTGRES_PASSWORD"), ("DB", "POSTGRES_DB")]:
        assert code_env[f"DAGSTER_POSTGRES_{ours}"] == postgres_env[theirs]


def _seconds(duration: str) -> int:
    """A compose duration (`1m30s`, `60s`) in seconds."""
    units = {"h": 3600, "m": 60, "s": 1}
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", duration)
    assert parts and duration, f"not a compose duration: {duration!r}"
    return sum(int(n) * units[u] for n, u in zip(parts.groups(), "hms", strict=True) if n)


def test_runs_the_code_server_takes_down_are_failed_and_retried(compose):
    """Runs execute in the code server's container (DefaultRunLauncher), so recreating it kills
    them; the launcher can neither check a run's process nor resume it, so the monitor ends such
    a run by its run time limit, frees the pool slots it held, and the drop job's runs are retried
    whole. test_topology shows it happen."""
    from dagster import DefaultRunLauncher

    from healthcare_assets.defs.s3_drops import s3_csv_drop_job

    instance = yaml.safe_load(INSTANCE.read_text())
    launcher = DefaultRunLauncher()
    assert instance["run_launcher"]["class"] == type(launcher).__name__
    assert not launcher.supports_check_run_worker_health and not launcher.supports_resume_run
    monitoring = instance["run_monitoring"]
    assert monitoring["enabled"] is True
    assert monitoring["max_resume_run_attempts"] == 0  # resuming would fail on this launcher, every poll
    assert monitoring["max_runtime_seconds"] > 0  # the only end of a STARTED run whose process died
    assert 0 < monitoring["poll_interval_seconds"] < monitoring["start_timeout_seconds"]
    assert instance["concurrency"]["pools"] and monitoring["free_slots_after_run_end_seconds"] > 0
    assert instance["run_retries"] == {"enabled": True, "max_retries": 0, "retry_on_asset_or_op_failure": False}
    tags = s3_csv_drop_job.tags
    assert int(tags["dagster/max_retries"]) > 0 and tags["dagster/retry_strategy"] == "ALL_STEPS"
    assert tags["dagster/retry_on_asset_or_op_failure"] == "false"
    # A run dequeued while the code server is away waits (in the queue) at least as long as
    # compose takes to declare a new one healthy, instead of failing.
    queue = instance["run_coordinator"]["config"]
    check = compose["services"]["user-code"]["healthcheck"]
    window = _seconds(check["start_period"]) + _seconds(check["interval"]) * check["retries"]
    assert queue["max_user_code_failure_retries"] * queue["user_code_failure_retry_delay"] >= window
