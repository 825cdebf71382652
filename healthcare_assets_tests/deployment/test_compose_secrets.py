"""The compose deployment's secrets: none literal, none on a command line (even one starting with
a dash), each only in the services that need it, every variable in .env.example, .env out of git
and the image; access provisioning is the code's."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from healthcare_assets.domain import access
from healthcare_assets_tests.fixtures.compose import (
    REFERENCE,
    SECRET_NAME,
    compose_strings,
    dash_leading_env,
    install_recorders,
    local_environment,
    rendered_compose,
    run_recorded_shell,
    services_environment,
    stdin_given,
)
from healthcare_assets_tests.fixtures.environment import REPO, SYSTEM_DEPS, unavailable


def test_no_secret_reaches_a_command_line_even_one_starting_with_a_dash(tmp_path):
    """Every command of the rendered file run with a .env whose secrets start with `-`: the shell
    snippets are executed by the shells the images use, with recorders standing in for mongosh,
    mc and pg_isready (this proves the quoting and where each value goes, not the programs
    themselves); mongo-init's JavaScript is then executed by node against the same environment."""
    env_file, values = dash_leading_env(tmp_path)
    services = rendered_compose(env_file)["services"]
    secret_values = [v for k, v in values.items() if SECRET_NAME.search(k)]
    bin_dir, log = tmp_path / "bin", tmp_path / "argv.jsonl"
    install_recorders(bin_dir, log, "mongosh", "mc", "pg_isready")
    ran, given = {}, {}
    for name, service in services.items():
        entrypoint, command = service.get("entrypoint") or [], service.get("command") or []
        if name != "mongo-keyfile" and entrypoint[-1:] == ["-c"]:  # the keyfile's script writes /keyfile
            ran[name] = run_recorded_shell(entrypoint[0], command[0], local_environment(name, service, tmp_path), bin_dir,
                                   log)
            given[name] = stdin_given(log)
        else:
            ran[name] = [[*entrypoint, *command]] if command else []
        check = (service.get("healthcheck") or {}).get("test", [])
        if check[:1] == ["CMD-SHELL"]:
            ran[name] += run_recorded_shell("/bin/sh", check[1], service.get("environment", {}), bin_dir, log)
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


def test_only_the_provisioning_one_shot_holds_the_roles_passwords(compose):
    """The code location has no provisioning job: the code server (and every run it starts) would
    otherwise need every role's password. Provisioning is the one-shot service's alone."""
    roles = {r.password_variable for r in access.roles()}
    for name, environment in services_environment(compose).items():
        held = {k for k in environment if re.fullmatch(r"HEALTHCARE_\w+_PASSWORD", k)}
        assert held == (roles if name == "provision-access" else set()), name
    from healthcare_assets_tests.fixtures.runs import DEFS

    jobs = {job.name for job in DEFS.resolve_all_job_defs()}
    assert "s3_csv_drop_job" in jobs and not {j for j in jobs if "provision" in j}, jobs


def test_no_literal_secrets(compose, env_example):
    assert not [s for s in compose_strings(compose) if "change-me" in s]
    for service, environment in services_environment(compose).items():
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
    text = " ".join(compose_strings(compose)).replace("$$", "")  # $$ is the container's own shell variable
    referenced = {m["name"] for m in REFERENCE.finditer(text)}
    assert referenced <= set(env_example), f"missing from .env.example: {referenced - set(env_example)}"


def test_env_file_stays_out_of_git_and_the_image():
    assert ".env" in (REPO / ".gitignore").read_text().split()
    assert ".env" in (REPO / ".dockerignore").read_text().split()


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
