"""The compose deployment, checked where no Docker engine runs: `docker-compose config` validates
docker-compose.yml with a .env made from .env.example; its structure (services, health checks,
start order, volumes, secrets), its consistency with the code (roles, module, ports) and the
Dockerfile's key lines are asserted; hadolint lints the Dockerfile."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from healthcare_assets import access
from healthcare_assets_tests.conftest import DEV_EXTRA, SYSTEM_DEPS, unavailable

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
DOCKERFILE = REPO / "Dockerfile"
INSTANCE = REPO / "deploy" / "dagster.yaml"
WORKSPACE = REPO / "deploy" / "workspace.yaml"

APP_SERVICES = {"provision-access", "user-code", "webserver", "daemon"}
ONE_SHOT = {"mongo-keyfile", "provision-access", "minio-bucket"}
LONG_RUNNING = {"mongo", "minio", "postgres", "user-code", "webserver", "daemon"}
# Who waits for whom, and for what: this is what brings `docker compose up` up in order.
START_ORDER = {
    "mongo": {"mongo-keyfile": "service_completed_successfully"},
    "provision-access": {"mongo": "service_healthy"},
    "minio-bucket": {"minio": "service_healthy"},
    "user-code": {"postgres": "service_healthy", "provision-access": "service_completed_successfully",
                  "minio-bucket": "service_completed_successfully"},
    "webserver": {"postgres": "service_healthy", "user-code": "service_healthy"},
    "daemon": {"postgres": "service_healthy", "user-code": "service_healthy"},
}
DAGSTER_POSTGRES = {f"DAGSTER_POSTGRES_{n}" for n in ("HOST", "PORT", "USER", "PASSWORD", "DB")}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|PSEUDONYM_KEY|MASTER_KEY|ACCESS_KEY")
REFERENCE = re.compile(r"\$\{(?P<name>[A-Z0-9_]+)(?P<op>:?[-?])?(?P<arg>[^}]*)\}")



def repository_files() -> list[str]:
    """The files a commit holds or could pick up: tracked, and untracked but not ignored."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            check=True, capture_output=True, text=True)
    return listed.stdout.splitlines()


@pytest.fixture(scope="module")
def compose() -> dict:
    """docker-compose.yml as written (anchors resolved, ${VAR} not substituted)."""
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    pairs = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f".env.example: not KEY=value: {line!r}"
            pairs[key.strip()] = value.strip()
    return pairs


def _compose_command() -> list[str]:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], check=False, capture_output=True).returncode == 0:
        return ["docker", "compose"]
    unavailable("docker-compose (or the docker compose plugin)", SYSTEM_DEPS)


def _compose_config(env_file: Path) -> subprocess.CompletedProcess:
    # A clean environment: variables of the calling shell must not stand in for the .env file.
    clean = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run([*_compose_command(), "--env-file", str(env_file), "-f", str(COMPOSE), "config"],
                          check=False, capture_output=True, text=True, env=clean, cwd=REPO, timeout=120)


def _strings(node) -> list[str]:
    """Every string of the parsed file (so comments do not count)."""
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return [node] if isinstance(node, str) else []


def _services_environment(compose: dict) -> dict[str, dict[str, str]]:
    return {name: dict(service.get("environment") or {}) for name, service in compose["services"].items()}


# ---- the compose file, validated by docker-compose itself ------------------------------------------

def test_compose_config_is_valid_with_env_from_example(tmp_path):
    env_file = tmp_path / ".env"
    shutil.copyfile(ENV_EXAMPLE, env_file)
    result = _compose_config(env_file)
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    assert set(resolved["services"]) == set(START_ORDER) | {"mongo-keyfile", "minio", "postgres"}
    # Substitution happened: the placeholders from .env.example reached the services.
    assert resolved["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"] == "change-me-postgres"
    for name, waits_for in START_ORDER.items():
        assert {k: v["condition"] for k, v in resolved["services"][name]["depends_on"].items()} == waits_for


def test_compose_refuses_to_start_without_secrets(tmp_path):
    empty = tmp_path / "empty.env"
    empty.write_text("")
    result = _compose_config(empty)
    assert result.returncode != 0
    assert "in .env" in result.stderr  # the ${VAR:?set VAR in .env} message names what is missing


# ---- structure --------------------------------------------------------------------------------------

def test_services_images_and_start_order(compose):
    services = compose["services"]
    assert set(services) == LONG_RUNNING | ONE_SHOT
    assert services["mongo"]["image"] == "mongo:7"
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["minio"]["image"].startswith("quay.io/minio/minio:RELEASE.")
    assert services["minio-bucket"]["image"].startswith("quay.io/minio/mc:RELEASE.")
    for name in APP_SERVICES:
        assert services[name]["build"] == "." and services[name]["image"] == "healthcare-assets:latest", name
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
    # The one depended on with service_healthy has a check; nothing waits on a one-shot's health.
    for waits_for in START_ORDER.values():
        for dependency, condition in waits_for.items():
            assert (condition == "service_healthy") == (dependency in LONG_RUNNING), dependency


def test_mongo_is_an_authenticated_single_node_replica_set(compose):
    mongo = compose["services"]["mongo"]
    command = mongo["command"]
    assert command[command.index("--replSet") + 1] == "rs0"
    keyfile = command[command.index("--keyFile") + 1]
    assert any(v.endswith(f":{Path(keyfile).parent}:ro") for v in mongo["volumes"])
    check = " ".join(mongo["healthcheck"]["test"])
    assert "rs.initiate" in check and "'rs0'" in check and "isWritablePrimary" in check
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


def test_no_literal_secrets(compose, env_example):
    assert not [s for s in _strings(compose) if "change-me" in s]
    for service, environment in _services_environment(compose).items():
        for key, value in environment.items():
            value = str(value)
            if SECRET_NAME.search(key) and key != "MINIO_ROOT_USER":
                ref = REFERENCE.fullmatch(value)
                assert ref and ref["op"] in (None, ":?", "?"), f"{service}.{key} must be a required ${{VAR}}: {value}"
            if "://" in value:
                password = urlsplit(value).password
                assert password is None or REFERENCE.fullmatch(password), f"{service}.{key} holds a password"
    for key, value in env_example.items():
        if SECRET_NAME.search(key) and key != "AWS_ACCESS_KEY_ID":
            assert value.startswith("change-me"), f".env.example: {key} is not a change-me placeholder"


def test_every_variable_is_in_env_example(compose, env_example):
    text = " ".join(_strings(compose)).replace("$$", "")  # $$ is the container's own shell variable
    referenced = {m["name"] for m in REFERENCE.finditer(text)}
    assert referenced <= set(env_example), f"missing from .env.example: {referenced - set(env_example)}"


def test_env_file_stays_out_of_git_and_the_image():
    assert ".env" in (REPO / ".gitignore").read_text().split()
    assert ".env" in (REPO / ".dockerignore").read_text().split()


# ---- consistency with the code ----------------------------------------------------------------------

def test_access_provisioning_uses_the_codes_role_definition(compose, env_example):
    service = compose["services"]["provision-access"]
    assert service["command"] == ["healthcare-assets", "provision-access"]
    environment = service["environment"]
    for role in access.roles():
        variable = role.password_variable
        assert variable in env_example, f"{variable} is missing from .env.example"
        assert REFERENCE.fullmatch(environment.get(variable, "")) and variable in environment[variable], variable
    # The server's first root user is the code's ADMIN_MASTER, with the same password variable.
    admin = access.role("ADMIN_MASTER")
    mongo_env = compose["services"]["mongo"]["environment"]
    assert mongo_env["MONGO_INITDB_ROOT_USERNAME"] == admin.user
    assert admin.password_variable in mongo_env["MONGO_INITDB_ROOT_PASSWORD"]
    for name in ("provision-access", "user-code"):
        uri = urlsplit(compose["services"][name]["environment"]["MONGODB_URI"])
        assert uri.username == admin.user and admin.password_variable in uri.password
        assert uri.hostname == "mongo" and parse_qs(uri.query)["replicaSet"] == ["rs0"]


def test_the_provisioning_command_is_the_clis():
    """The service runs the console script of healthcare_assets.cli, whose provision-access
    test_credentials runs end to end."""
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["healthcare-assets"] == "healthcare_assets.cli:main"


def test_pipeline_environment(compose):
    environment = _services_environment(compose)
    code = environment["user-code"]
    assert code["HEALTHCARE_DATA_DIR"] == "/data"
    assert code["AWS_ENDPOINT_URL"] == "http://minio:9000"
    assert code["HEALTHCARE_S3_PREFIX"].endswith(":-incoming/}")
    assert environment["minio-bucket"]["HEALTHCARE_S3_BUCKET"] == code["HEALTHCARE_S3_BUCKET"]
    for name in ("user-code", "webserver", "daemon"):
        assert DAGSTER_POSTGRES <= set(environment[name]), name
    # Only the code server (and its runs) holds the database and S3 credentials.
    for name in ("webserver", "daemon"):
        assert not {"MONGODB_URI", "AWS_SECRET_ACCESS_KEY"} & set(environment[name]), name


def test_code_location_is_the_one_dagster_dev_loads(compose):
    tool = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["dagster"]
    command = compose["services"]["user-code"]["command"]
    assert command[command.index("-m") + 1] == tool["module_name"]
    port = int(command[command.index("-p") + 1])
    server = yaml.safe_load(WORKSPACE.read_text())["load_from"][0]["grpc_server"]
    assert server == {"host": "user-code", "port": port, "location_name": tool["code_location_name"]}
    local = yaml.safe_load((REPO / "workspace.yaml").read_text())["load_from"][0]["python_module"]
    assert local["module_name"] == tool["module_name"]
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


# ---- the Dockerfile --------------------------------------------------------------------------------

def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_dockerfile_builds_this_package():
    instructions = _instructions()
    base = [arg for op, arg in instructions if op == "FROM"]
    assert len(base) == 1 and re.fullmatch(r"python:3\.1[1-3]-slim(-\w+)?", base[0]), base
    runs = " ".join(arg for op, arg in instructions if op == "RUN")
    assert re.search(r"pip install --no-cache-dir \"?\.\[deploy\]\"?", runs)
    copies = [arg.split() for op, arg in instructions if op == "COPY"]
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
