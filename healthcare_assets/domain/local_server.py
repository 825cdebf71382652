"""The embedded server with this deployment's users (docs/security.md): its first start runs
without authentication, so every start refuses a storage whose users, roles or passwords are not exactly access.py's."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import pymongo

from healthcare_assets.domain import access
from healthcare_assets.plumbing import credentials, embedded_mongo, secrets_file, settings
from healthcare_assets.plumbing.mongo import MongoResource, authenticates, redact

log = logging.getLogger(__name__)


def ensure_running(data_dir: Path, given: Mapping[str, str] | None = None, database: str = access.DATABASE,
                   collection: str = access.COLLECTION) -> str:
    """Start the server unless it already runs, the `given` passwords (role name -> a resource's) applied; its URI."""
    data_dir, given = Path(data_dir).resolve(), given or {}
    return embedded_mongo.ensure_running(
        data_dir, first_start=lambda state: _provision(data_dir, state, given, database, collection),
        started=lambda state, fresh: _started(data_dir, state, fresh, given, database, collection))["uri"]


class NoDatabaseError(embedded_mongo.EmbeddedMongoError):
    """A command that only reads found no running database in the data directory."""


def require_database(data_dir: Path) -> None:
    if not embedded_mongo.paths(Path(data_dir).resolve())["provisioned"].exists():
        raise NoDatabaseError(f"no database in {Path(data_dir).resolve()}: run `make run` (or `healthcare-assets "
                              "mongo start`), or set HEALTHCARE_DATA_DIR / MONGODB_URI")


def running(data_dir: Path) -> dict:
    """For a command that only reads: never starts a server, nor creates a data directory, a storage or a secret."""
    data_dir = Path(data_dir).resolve()
    require_database(data_dir)
    state = embedded_mongo.status(data_dir)
    if state is None:
        raise NoDatabaseError(f"the database in {data_dir} is not running: start it with `healthcare-assets mongo "
                              "start` (a command that only reads does not start it)")
    return state


def client_uri(data_dir: Path, role: str = "ADMIN_MASTER", given: Mapping[str, str] | None = None) -> str:
    """The URI with one role's credentials (the pipeline's own, ADMIN_MASTER, writes every database and provisions)."""
    data_dir = Path(data_dir).resolve()
    state = embedded_mongo.read_state(data_dir)
    if state is None:
        raise embedded_mongo.EmbeddedMongoError(f"no embedded server runs for {data_dir}")
    password = access.passwords(data_dir, given).get(role)
    if password is None:
        raise embedded_mongo.EmbeddedMongoError(f"no password for {role}: set {access.role(role).password_variable}")
    return embedded_mongo.uri_for(state["port"], access.role(role).user, password, data_dir)


class EmbeddedMongoResource(MongoResource):
    """The embedded server of `data_dir` (empty: settings.data_dir()), started at first use unless `start` is off;
    `mongodb_uri` is not used: the URI is the running server's, with the admin's credentials."""

    data_dir: str = ""
    start: bool = True

    def _data_dir(self) -> Path:
        return Path(self.data_dir).resolve() if self.data_dir else settings.data_dir()

    def uri(self) -> str:
        if self.start:
            ensure_running(self._data_dir(), access.passwords_of(self), self.database, self.collection)
        else:
            running(self._data_dir())
        return client_uri(self._data_dir(), given=access.passwords_of(self))

    def refused(self, uri: str, user: str) -> credentials.AuthenticationRefusedError:
        return refused(self._data_dir(), user, access.passwords_of(self))

    def server_label(self) -> str:
        return redact(self.uri()) + " (embedded secantusdb)"


def refused(data_dir: Path, user: str, given: Mapping[str, str]) -> credentials.AuthenticationRefusedError:
    name, variable = next((r.name, r.password_variable) for r in access.roles() if r.user == user)
    stored, files = secrets_file.path(data_dir), embedded_mongo.paths(data_dir)
    if name in given:
        advice = (f"A password set in the environment is applied to the server with the admin_master password "
                  f"stored in {stored}, and that one was refused too or is missing. Set {variable} to the "
                  f"password the server has, or unset it (delete it from .env) to use the one in {stored}.")
    else:
        advice = (f"{stored} does not hold this server's passwords: put back the one it was provisioned with, "
                  f"or stop the server (`healthcare-assets mongo stop`) and delete {files['storage']} "
                  f"and {files['provisioned']} to provision a new one (its data is lost).")
    return credentials.refused(f"{embedded_mongo.HOST} (embedded secantusdb, storage {files['storage']})", user,
                               credentials.origin(variable, given.get(name), data_dir), advice)


def _provision(data_dir: Path, state: dict, given: Mapping[str, str], database: str, collection: str) -> None:
    with pymongo.MongoClient(state["uri"], serverSelectionTimeoutMS=10_000) as client:
        passwords = access.passwords(data_dir, given, generate=True)
        access.provision(client, passwords, database, collection)
        # every password the server has, the given ones too: it stays reachable when the variable goes away
        secrets_file.store({access.role(name).password_variable: pw for name, pw in passwords.items()}, data_dir)


def _started(data_dir: Path, state: dict, fresh: bool, given: Mapping, database: str, collection: str) -> None:
    """A daemon this call started serves only once its users, roles and passwords are checked, else it is stopped."""
    try:
        _apply_given_passwords(data_dir, state, given)
        if fresh:
            _check_access(data_dir, state, given, database, collection)
    except BaseException:
        if fresh:
            embedded_mongo.discard(data_dir, state)
        raise


def _admin_client(data_dir: Path, state: dict, password: str) -> pymongo.MongoClient:
    admin = access.role("ADMIN_MASTER")
    uri = embedded_mongo.uri_for(state["port"], admin.user, password, data_dir)
    return pymongo.MongoClient(uri, serverSelectionTimeoutMS=10_000)


def _apply_given_passwords(data_dir: Path, state: dict, given: Mapping[str, str]) -> None:
    """A changed password given (HEALTHCARE_<ROLE>_PASSWORD) is applied with the admin credentials of secrets.env and
    recorded there: a `.env` copied from .env.example, or a rotated secret, then just works. Never logs the value."""
    stored = secrets_file.read(data_dir)
    changed = sorted((r for r in access.roles() if given.get(r.name)
                      and stored.get(r.password_variable) not in (None, given[r.name])),
                     key=lambda r: r.name == "ADMIN_MASTER")  # the admin's own last: the others use it
    admin = access.role("ADMIN_MASTER")
    if not changed or admin.password_variable not in stored:
        return  # nothing to apply, or no admin password recorded (an older version): a refusal will say what to do
    with _admin_client(data_dir, state, stored[admin.password_variable]) as client:
        for r in changed:
            try:
                client.admin.command("updateUser", r.user, pwd=given[r.name])
            except pymongo.errors.OperationFailure as exc:
                if credentials.is_refused(exc):
                    raise refused(data_dir, admin.user, given) from None
                raise
            # recorded at once: the admin's own new password is what the next change must use
            secrets_file.store({r.password_variable: given[r.name]}, data_dir)
            origin = credentials.origin(r.password_variable, given[r.name], data_dir)
            log.warning("the embedded server's user %s now has the password of %s (changed with the admin credentials "
                        "in %s, and recorded there)", r.user, origin, secrets_file.path(data_dir))


def _user_problems(client: pymongo.MongoClient) -> list[str]:
    expected = {(r.user, "admin"): [{"role": r.name, "db": "admin"}] for r in access.roles()}
    # admin.system.users lists the users of every database (secantusdb ignores forAllDBs)
    found = {(u["user"], u["db"]): u.get("roles", []) for u in client.admin["system.users"].find()}
    return [f"user {user}@{db}" for (user, db), granted in sorted(found.items()) if expected.get((user, db)) != granted]


def _definition(document: dict) -> tuple[dict[str, set[str]], set[str]]:
    privileges: dict[str, set[str]] = {}
    for privilege in document.get("privileges") or []:
        resource = privilege.get("resource", {})
        name = (f"{resource['db']}.{resource['collection'] or '*'}" if set(resource) == {"db", "collection"}
                else ", ".join(f"{k}={v!r}" for k, v in sorted(resource.items())))
        privileges.setdefault(name, set()).update(privilege.get("actions") or [])
    return ({r: a for r, a in privileges.items() if a},
            {f"{r.get('role')}@{r.get('db')}" for r in document.get("roles") or []})


def _role_problems(client: pymongo.MongoClient, roles: tuple[access.Role, ...]) -> list[str]:
    found = {r["role"]: _definition(r) for r in client.admin.command(
        "rolesInfo", [{"role": r.name, "db": "admin"} for r in roles], showPrivileges=True)["roles"]}
    problems = []
    for r in roles:
        if r.name not in found:
            problems.append(f"role {r.name}: missing")
            continue
        (privileges, inherited), (want_privileges, want_inherited) = found[r.name], _definition(access.role_document(r))
        differences = [f"inherits {x}" for x in sorted(inherited - want_inherited)]
        differences += [f"lacks {x}" for x in sorted(want_inherited - inherited)]
        for resource in sorted(privileges.keys() | want_privileges.keys()):
            has, wants = privileges.get(resource, set()), want_privileges.get(resource, set())
            differences += [f"may {', '.join(sorted(has - wants))} on {resource}"] if has - wants else []
            differences += [f"may not {', '.join(sorted(wants - has))} on {resource}"] if wants - has else []
        if differences:
            problems.append(f"role {r.name}: " + "; ".join(differences))
    return problems


def _password_problems(data_dir: Path, state: dict, passwords: dict[str, str], given: Mapping[str, str]) -> list[str]:
    return [f"user {r.user}: the password of {credentials.origin(r.password_variable, given.get(r.name), data_dir)} "
            "does not authenticate" for r in access.roles() if r.name in passwords
            and not authenticates(embedded_mongo.uri_for(state["port"], r.user, passwords[r.name], data_dir))]


def _check_access(data_dir: Path, state: dict, given: Mapping[str, str], database: str, collection: str) -> None:
    """Refuse (the caller stops the daemon) unless users, roles and passwords are exactly access.py's: the first start
    ran without authentication, and another local process could have changed them in that window."""
    admin = access.role("ADMIN_MASTER")
    passwords = access.passwords(data_dir, given)
    with _admin_client(data_dir, state, passwords.get(admin.name, "")) as client:
        try:
            problems = _user_problems(client) + _role_problems(client, access.roles(database, collection))
        except pymongo.errors.OperationFailure as exc:
            if credentials.is_refused(exc):
                raise refused(data_dir, admin.user, given) from None  # a wrong password says nothing about the users
            problems = [f"{admin.user} cannot list them: {(exc.details or {}).get('codeName', exc.code)}"]
    problems += _password_problems(data_dir, state, passwords, given)
    if problems:
        provisioned = embedded_mongo.paths(data_dir)["provisioned"]
        raise embedded_mongo.EmbeddedMongoError(
            f"refusing the embedded server with storage {state['storage']}: its users, roles and passwords are not "
            f"exactly the roles of healthcare_assets/domain/access.py ({', '.join(problems)}). Its first start runs "
            "without authentication, and another local process may have changed them then. It was stopped. "
            f"(If MONGODB_DATABASE or MONGODB_COLLECTION, {database}.{collection} "
            "now, had other values when the roles were provisioned, start with those.) Otherwise find out who did "
            f"it, then delete {state['storage']} and {provisioned} to provision a new one.")
