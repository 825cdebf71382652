"""The compose deployment, checked where no Docker engine runs: `docker-compose config` validates
docker-compose.yml with a .env made from .env.example; its structure (services, health checks,
start order, volumes, secrets), its consistency with the code (roles, module, ports) and the
Dockerfile's key lines are asserted; hadolint lints the Dockerfile."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
import yaml

from healthcare_assets.domain import access
from healthcare_assets_tests.fixtures.environment import DEV_EXTRA, REPO, SYSTEM_DEPS, unavailable

COMPOSE = REPO / "docker-compose.yml"
DEPLOYMENT_DOC = REPO / "docs" / "deployment.md"
ENV_EXAMPLE = REPO / ".env.example"
DOCKERFILE = REPO / "Dockerfile"
INSTANCE = REPO / "deploy" / "dagster.yaml"
WORKSPACE = REPO / "deploy" / "workspace.yaml"
MINIO_POLICIES = REPO / "deploy" / "minio"

APP_SERVICES = {"provision-access", "user-code", "webserver", "daemon"}
ONE_SHOT = {"mongo-keyfile", "mongo-init", "provision-access", "minio-setup"}
LONG_RUNNING = {"mongo", "minio", "postgres", "user-code", "webserver", "daemon"}
# Who waits for whom, and for what: this is what brings `docker compose up` up in order.
START_ORDER = {
    "mongo": {"mongo-keyfile": "service_completed_successfully"},
    # it waits for the server to answer itself: the node is healthy only once mongo-init made it primary
    "mongo-init": {"mongo": "service_started"},
    "provision-access": {"mongo-init": "service_completed_successfully", "mongo": "service_healthy"},
    "minio-setup": {"minio": "service_healthy"},
    "user-code": {"postgres": "service_healthy", "mongo": "service_healthy",
                  "provision-access": "service_completed_successfully",
                  "minio-setup": "service_completed_successfully"},
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


def _rendered(env_file: Path) -> dict:
    result = _compose_config(env_file)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def mongo_init_script(compose: dict) -> str:
    """The JavaScript mongo-init gives mongosh (the last --eval '…' of its shell script)."""
    command = compose["services"]["mongo-init"]["command"][0]
    return re.findall(r"--eval '(.*?)'", command, re.DOTALL)[-1]


def _dash_leading_env(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """.env.example with every change-me replaced by a secret that starts with `-` (what one
    token_urlsafe draw in 64 gives), and a Postgres user name that does too."""
    values = {}
    lines = []
    for line in ENV_EXAMPLE.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#") and (value.startswith("change-me") or key == "DAGSTER_POSTGRES_USER"):
            value = values[key] = f"-{secrets.token_hex(16)}"
        lines.append(f"{key}{sep}{value}")
    env_file = tmp_path / ".env"
    env_file.write_text("\n".join(lines) + "\n")
    return env_file, values


def _recording(bin_dir: Path, log: Path, *programs: str) -> None:
    """Stand-ins for the containers' programs: each appends its argv (JSON) to `log`, and what it
    was given on stdin, if anything, to `log`.stdin (JSON [argv, stdin]); exits 0."""
    bin_dir.mkdir(exist_ok=True)
    for program in programs:
        path = bin_dir / program
        path.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                        f"argv = [os.path.basename(sys.argv[0]), *sys.argv[1:]]\n"
                        f"given = sys.stdin.read()\n"
                        f"with open({str(log)!r}, 'a') as f:\n"
                        f"    f.write(json.dumps(argv) + '\\n')\n"
                        f"if given:\n"
                        f"    with open({str(log) + '.stdin'!r}, 'a') as f:\n"
                        f"        f.write(json.dumps([argv, given]) + '\\n')\n")
        path.chmod(0o755)


def _run_shell(shell: str, script: str, environment: dict, bin_dir: Path, log: Path) -> list[list[str]]:
    """The script as the container's shell runs it ($$ is Compose's escape for $), its programs
    replaced by recorders; returns the argv of every program it ran."""
    log.write_text("")
    Path(f"{log}.stdin").write_text("")
    env = {**{k: str(v) for k, v in environment.items()}, "PATH": f"{bin_dir}:/usr/bin:/bin"}
    result = subprocess.run([shell, "-c", script.replace("$$", "$")], env=env, check=False, capture_output=True,
                            text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in log.read_text().splitlines()]


def _stdin_given(log: Path) -> list[list]:
    """[argv, stdin] of every recorded program that was given something on its stdin."""
    return [json.loads(line) for line in Path(f"{log}.stdin").read_text().splitlines()]


def _local_environment(name: str, service: dict, tmp_path: Path) -> dict:
    """A service's environment for running its script here: minio-setup's policy templates, which
    Compose mounts as configs, are read from the repository (after checking that the mounts are
    these very files) and it writes the rendered policies under tmp_path."""
    environment = dict(service.get("environment") or {})
    if name == "minio-setup":
        templates = Path(environment["MINIO_POLICY_TEMPLATES"])
        mounted = {c["target"]: c["source"] for c in service["configs"]}
        assert set(mounted) == {str(templates / f.name) for f in MINIO_POLICIES.glob("*.json")}, mounted
        environment["MINIO_POLICY_TEMPLATES"] = str(MINIO_POLICIES)
        environment["TMPDIR"] = str(tmp_path)
    return environment


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
    assert set(resolved["services"]) == LONG_RUNNING | ONE_SHOT
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


def test_the_image_is_built_once_by_the_code_server(tmp_path):
    """Compose v2 builds services in parallel: two `build:` with one tag race to export it. Only
    user-code builds; every other service of that image names it and never pulls it."""
    services = _rendered(_dash_leading_env(tmp_path)[0])["services"]
    assert [name for name, service in services.items() if "build" in service] == ["user-code"]
    image = services["user-code"]["image"]
    users = {name for name, service in services.items() if service.get("image") == image}
    assert users == APP_SERVICES
    for name in users - {"user-code"}:
        assert services[name]["pull_policy"] == "never", name
    for name in ("webserver", "daemon"):
        assert services[name]["depends_on"]["user-code"]["condition"] == "service_healthy"


def test_no_secret_reaches_a_command_line_even_one_starting_with_a_dash(tmp_path):
    """Every command of the rendered file run with a .env whose secrets start with `-`: the shell
    snippets are executed by the shells the images use, with recorders standing in for mongosh,
    mc and pg_isready (this proves the quoting and where each value goes, not the programs
    themselves); mongo-init's JavaScript is then executed by node against the same environment."""
    env_file, values = _dash_leading_env(tmp_path)
    services = _rendered(env_file)["services"]
    secret_values = [v for k, v in values.items() if SECRET_NAME.search(k)]
    bin_dir, log = tmp_path / "bin", tmp_path / "argv.jsonl"
    _recording(bin_dir, log, "mongosh", "mc", "pg_isready")
    ran, given = {}, {}
    for name, service in services.items():
        entrypoint, command = service.get("entrypoint") or [], service.get("command") or []
        if name != "mongo-keyfile" and entrypoint[-1:] == ["-c"]:  # the keyfile's script writes /keyfile
            ran[name] = _run_shell(entrypoint[0], command[0], _local_environment(name, service, tmp_path), bin_dir,
                                   log)
            given[name] = _stdin_given(log)
        else:
            ran[name] = [[*entrypoint, *command]] if command else []
        check = (service.get("healthcheck") or {}).get("test", [])
        if check[:1] == ["CMD-SHELL"]:
            ran[name] += _run_shell("/bin/sh", check[1], service.get("environment", {}), bin_dir, log)
        elif check[:1] == ["CMD"]:
            ran[name].append(check[1:])
    for name, argvs in ran.items():
        for argv in argvs:
            assert not [v for v in secret_values if any(v in arg for arg in argv)], f"{name} passes a secret: {argv}"

    # The programs that need a secret get it from their environment or their stdin, whole.
    policy = str(tmp_path / "{}.json")
    assert ran["minio-setup"] == [
        ["mc", "mb", "--ignore-existing", "minio/healthcare-drop"],
        ["mc", "mb", "--ignore-existing", "--with-lock", "minio/healthcare-backups"],
        ["mc", "version", "enable", "minio/healthcare-backups"],
        ["mc", "retention", "set", "--default", "GOVERNANCE", "14d", "minio/healthcare-backups"],
        ["mc", "admin", "policy", "create", "minio", "healthcare-drop-zone", policy.format("drop-zone")],
        ["mc", "admin", "policy", "create", "minio", "healthcare-pipeline", policy.format("pipeline")],
        ["mc", "admin", "user", "add", "minio", "hospital-uploader"],
        ["mc", "admin", "policy", "attach", "minio", "healthcare-drop-zone", "--user", "hospital-uploader"],
        ["mc", "admin", "user", "add", "minio", "healthcare-pipeline"],
        ["mc", "admin", "policy", "attach", "minio", "healthcare-pipeline", "--user", "healthcare-pipeline"]]
    assert given["minio-setup"] == [
        [["mc", "admin", "user", "add", "minio", "hospital-uploader"], values["HEALTHCARE_DROP_S3_SECRET_KEY"] + "\n"],
        [["mc", "admin", "user", "add", "minio", "healthcare-pipeline"],
         values["HEALTHCARE_PIPELINE_S3_SECRET_KEY"] + "\n"]]
    assert not [n for n, g in given.items() if g and n != "minio-setup"]
    alias = urlsplit(services["minio-setup"]["environment"]["MC_HOST_minio"])
    assert (alias.username, alias.password, alias.hostname, alias.port) == (
        "minio-admin", values["MINIO_ROOT_PASSWORD"], "minio", 9000)
    assert ran["postgres"] == [["pg_isready", f"--username={values['DAGSTER_POSTGRES_USER']}", "--dbname=dagster"]]
    assert [argv[0] for argv in ran["mongo-init"]] == ["mongosh", "mongosh"]
    check = services["mongo"]["healthcheck"]["test"]
    assert not any("PASSWORD" in arg or arg.startswith(("-u", "-p")) for arg in check), check

    # mongo-init's script, first boot then any later boot, with mongosh's globals stubbed.
    script = ran["mongo-init"][1][ran["mongo-init"][1].index("--eval") + 1]
    environment = services["mongo-init"]["environment"]
    first = _run_mongosh_script(script, environment, configured=False, tmp_path=tmp_path)
    assert first == {"code": 0, "calls": [["auth", "admin", "admin_master", values["HEALTHCARE_ADMIN_MASTER_PASSWORD"]],
                                          ["initiate", {"_id": "rs0", "members": [{"_id": 0, "host": "mongo:27017"}]}]]}
    # Already a replica set (every boot after the first, whatever .env now says): no login at all.
    assert _run_mongosh_script(script, environment, configured=True, tmp_path=tmp_path) == {"code": 0, "calls": []}


MONGOSH_STUBS = """
const calls = [];
let configured = CONFIGURED;
globalThis.db = {
  hello: () => (configured ? {setName: "rs0", isWritablePrimary: true} : {isWritablePrimary: false}),
  getSiblingDB: (name) => ({auth: (user, pwd) => { calls.push(["auth", name, user, pwd]); return {ok: 1}; }}),
};
globalThis.rs = {initiate: (config) => { calls.push(["initiate", config]); configured = true; return {ok: 1}; }};
globalThis.sleep = () => {};
globalThis.quit = (code) => { console.log(JSON.stringify({code, calls})); process.exit(0); };
"""


def _run_mongosh_script(script: str, environment: dict, configured: bool, tmp_path: Path) -> dict:
    node = shutil.which("node")
    if node is None:
        unavailable("node", SYSTEM_DEPS)
    path = tmp_path / "mongo-init.js"
    path.write_text(MONGOSH_STUBS.replace("CONFIGURED", json.dumps(configured)) + script)
    result = subprocess.run([node, str(path)], env={**{k: str(v) for k, v in environment.items()}, "PATH": "/usr/bin:/bin"},
                            check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_backups_go_to_the_bucket_the_stack_creates_daily(tmp_path, mongo, moto_endpoint):
    """The code server's rendered environment, read by the code: the daily schedule is on, and a
    backup lands, encrypted, in the bucket minio-setup's command creates. Only the endpoints are
    this machine's (moto for MinIO, the embedded server for mongo); MinIO's own SSE-S3 with
    MINIO_KMS_SECRET_KEY is not exercised (moto does not need a key)."""
    env_file, _ = _dash_leading_env(tmp_path)
    services = _rendered(env_file)["services"]
    assert services["minio"]["environment"]["MINIO_KMS_SECRET_KEY"]  # MinIO refuses SSE-S3 without a key
    bin_dir, log = tmp_path / "bin", tmp_path / "argv.jsonl"
    _recording(bin_dir, log, "mc")
    setup = services["minio-setup"]
    ran = _run_shell(setup["entrypoint"][0], setup["command"][0], _local_environment("minio-setup", setup, tmp_path),
                     bin_dir, log)
    buckets = [argv[-1].removeprefix("minio/") for argv in ran if argv[1] == "mb"]
    code = {k: str(v) for k, v in services["user-code"]["environment"].items()}
    uri = urlsplit(code["HEALTHCARE_BACKUP_URI"])
    assert uri.scheme == "s3" and uri.netloc in buckets and code["HEALTHCARE_S3_BUCKET"] in buckets

    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1",
                      aws_access_key_id=code["AWS_ACCESS_KEY_ID"], aws_secret_access_key=code["AWS_SECRET_ACCESS_KEY"])
    for bucket in buckets:
        s3.create_bucket(Bucket=bucket)
    mongo.hospitalizations().insert_many([{"_id": f"r{n}", "n": n} for n in range(30)])
    env = {**code, "AWS_ENDPOINT_URL": moto_endpoint, "MONGODB_URI": mongo.uri(), "MONGODB_DATABASE": mongo.database,
           "PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), "HEALTHCARE_DATA_DIR": str(tmp_path / "data"),
           "DAGSTER_HOME": str(tmp_path)}
    probe = ("import json; from healthcare_assets.defs.backup import backups;"
             "print(json.dumps([s.default_status.value for s in backups().schedules]))")
    for command in ([sys.executable, "-c", probe], [sys.executable, "-m", "healthcare_assets.tooling.cli", "backup"]):
        result = subprocess.run(command, env=env, check=False, capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
        if command[1] == "-c":
            assert json.loads(result.stdout.splitlines()[-1]) == ["RUNNING", "RUNNING"]
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=uri.netloc)["Contents"]]
    prefix = uri.path.strip("/") + "/"
    manifests = [k for k in keys if k.startswith(prefix) and k.endswith("/manifest.json")]
    assert len(manifests) == 1, keys
    manifest = json.loads(s3.get_object(Bucket=uri.netloc, Key=manifests[0])["Body"].read())
    assert manifest["databases"][mongo.database][mongo.collection]["documents"] == 30
    assert {s3.head_object(Bucket=uri.netloc, Key=k)["ServerSideEncryption"] for k in keys} == {"AES256"}


def test_only_the_provisioning_one_shot_holds_the_roles_passwords(compose):
    """The code location has no provisioning job: the code server (and every run it starts) would
    otherwise need every role's password. Provisioning is the one-shot service's alone."""
    roles = {r.password_variable for r in access.roles()}
    for name, environment in _services_environment(compose).items():
        held = {k for k in environment if re.fullmatch(r"HEALTHCARE_\w+_PASSWORD", k)}
        assert held == (roles if name == "provision-access" else set()), name
    from healthcare_assets_tests.fixtures.runs import DEFS

    jobs = {job.name for job in DEFS.resolve_all_job_defs()}
    assert "s3_csv_drop_job" in jobs and not {j for j in jobs if "provision" in j}, jobs


def test_the_docs_require_compose_v2():
    """Compose v1 (1.29) speaks Docker API 1.38; Docker Engine 29 refuses anything under 1.44."""
    for path in (REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), COMPOSE, ENV_EXAMPLE):
        text = path.read_text()
        assert not re.search(r"docker-compose (up|build|run|ps|down|pull|start|exec|logs)", text), path
    doc = DEPLOYMENT_DOC.read_text()
    assert "Compose v2" in doc and "1.38" in doc and "1.44" in doc


# ---- structure --------------------------------------------------------------------------------------

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


def test_no_literal_secrets(compose, env_example):
    assert not [s for s in _strings(compose) if "change-me" in s]
    for service, environment in _services_environment(compose).items():
        for key, value in environment.items():
            value = str(value)
            if SECRET_NAME.search(key):
                ref = REFERENCE.fullmatch(value)
                assert ref and ref["op"] in (None, ":?", "?"), f"{service}.{key} must be a required ${{VAR}}: {value}"
            if "://" in value:
                password = urlsplit(value).password
                assert password is None or REFERENCE.fullmatch(password), f"{service}.{key} holds a password"
    for key, value in env_example.items():
        if SECRET_NAME.search(key) and not key.endswith(("_ACCESS_KEY", "_ROOT_USER")):  # user names
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
    """The service runs the console script of healthcare_assets.tooling.cli, whose provision-access
    test_credentials runs end to end."""
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["healthcare-assets"] == "healthcare_assets.tooling.cli:main"


def test_pipeline_environment(compose):
    environment = _services_environment(compose)
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


# ---- the Dockerfile --------------------------------------------------------------------------------

def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_dockerfile_builds_this_package():
    instructions = _instructions()
    base = [arg for op, arg in instructions if op == "FROM"]
    # pinned: the tag for the reader, the digest for the bytes
    assert len(base) == 1 and re.fullmatch(r"python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}", base[0]), base
    runs = [arg for op, arg in instructions if op == "RUN"]
    # every dependency from the locks, hash-checked; the package itself resolves nothing more
    assert "pip install --no-cache-dir --require-hashes -r requirements.lock" in runs[0]
    assert "pip install --no-cache-dir --no-deps --require-hashes -r requirements-nodeps.lock" in runs[0]
    assert re.fullmatch(r"pip install --no-cache-dir --no-deps --no-build-isolation \.", runs[1]), runs[1]
    copies = [arg.split() for op, arg in instructions if op == "COPY"]
    assert copies[0] == ["requirements.lock", "requirements-nodeps.lock", "./"]
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
