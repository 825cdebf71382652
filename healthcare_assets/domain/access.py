"""Least-privilege roles and users, defined once. The embedded server grants per database, not per collection, so data
of different sensitivity lives in different databases (layout and key vaults: docs/security.md)."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pymongo

from healthcare_assets.domain import audit, encryption
from healthcare_assets.domain.deployment_databases import databases
from healthcare_assets.domain.master_keys import MasterKeys
from healthcare_assets.plumbing import credentials, secrets_file
from healthcare_assets.plumbing.idempotent_inserts import insert_keeping_existing

DATABASE, COLLECTION = "healthcare_db", "hospitalizations"  # MongoResource's defaults: for names, not privileges


@dataclass(frozen=True)
class Role:
    name: str
    description: str
    privileges: tuple[tuple[str, str, tuple[str, ...]], ...] = ()  # (database, collection, actions)
    inherits: tuple[tuple[str, str], ...] = ()  # (built-in role, database)

    @property
    def user(self) -> str:
        return self.name.lower()

    @property
    def password_variable(self) -> str:
        return f"HEALTHCARE_{self.name}_PASSWORD"

    @property
    def password_field(self) -> str:
        return f"{self.user}_password"  # MongoResource's, filled from password_variable


def roles(database: str = DATABASE, collection: str = COLLECTION) -> tuple[Role, ...]:
    dbs = databases(database)
    key_vault = (encryption.KEY_VAULT_DB, encryption.KEY_VAULT_COLLECTION, ("find",))
    return (
        Role("ADMIN_MASTER", "everything, including user management", inherits=(("root", "admin"),)),
        Role("DATA_ENGINEER", "read/write and indexes on the hospitalization database; decrypts names",
             privileges=(key_vault,), inherits=(("readWrite", dbs["main"]), ("dbAdmin", dbs["main"]))),
        Role("BACKEND_API", "read/write documents of the collection, decrypts names; no indexes, no admin",
             privileges=((dbs["main"], collection, ("find", "insert", "update", "remove")), key_vault)),
        Role("ANALYST_READONLY", "read the anonymized copy only",
             privileges=((dbs["analytics"], "", ("find",)),)),
        Role("DOCTOR_APP", "read and write one configured hospital's records, decrypted with its own data key",
             privileges=((dbs["doctor_app"], collection, ("find", "insert", "update")),
                         (dbs["doctor_app"], encryption.KEY_VAULT_COLLECTION, ("find",)))),
    )


def role(name: str, database: str = DATABASE) -> Role:
    return next(r for r in roles(database) if r.name == name)


def passwords_of(mongo) -> dict[str, str]:
    """Role name -> the password a MongoResource was given (its HEALTHCARE_<ROLE>_PASSWORD), for each role given one."""
    return {r.name: value for r in roles() if (value := getattr(mongo, r.password_field))}


def passwords(data_dir: Path | None = None, given: Mapping[str, str] | None = None, production: bool = False,
              generate: bool = False) -> dict[str, str]:
    """Role name -> password: `given` (a resource's; never a placeholder of .env.example in production), else for the
    embedded server generated once into the data directory's secrets.env (secrets_file)."""
    make = (lambda: secrets.token_urlsafe(24)) if generate else None
    variables = {r.password_variable: (given or {}).get(r.name, "") for r in roles()}
    found = secrets_file.values(variables, production, data_dir, make)
    return {r.name: found[r.password_variable] for r in roles() if r.password_variable in found}


def role_document(r: Role) -> dict:
    return {
        "privileges": [{"resource": {"db": d, "collection": c}, "actions": list(a)} for d, c, a in r.privileges],
        "roles": [{"role": name, "db": d} for name, d in r.inherits],
    }


def provision(client: pymongo.MongoClient, role_passwords: dict[str, str], database: str = DATABASE,
              collection: str = COLLECTION, has_password: Callable[[str, str], bool] | None = None,
              given: Mapping[str, str] | None = None) -> list[str]:
    """Idempotent; returns what was done per role (never a password). The admin's own user is done last: it may be the
    one this client logged in as. `given`: those of `role_passwords` a resource was given (the others: secrets.env)."""
    admin = client.admin
    existing_roles = {x["role"] for x in admin.command("rolesInfo")["roles"]}
    existing_users = {x["user"] for x in admin.command("usersInfo")["users"]}
    done = []
    for r in sorted(roles(database, collection), key=lambda r: r.name == "ADMIN_MASTER"):
        admin.command("updateRole" if r.name in existing_roles else "createRole", r.name, **role_document(r))
        password = role_passwords.get(r.name)
        if password is None:
            done.append(f"{r.name}: role only ({r.password_variable} is not set)")
            continue
        if r.user not in existing_users:
            admin.command("createUser", r.user, pwd=password, roles=[{"role": r.name, "db": "admin"}])
            done.append(f"{r.name}: created user {r.user}")
            continue
        changed = has_password is not None and not has_password(r.user, password)
        admin.command("updateUser", r.user, pwd=password, roles=[{"role": r.name, "db": "admin"}])
        came_from = credentials.origin(r.password_variable, (given or {}).get(r.name))
        done.append(f"{r.name}: updated user {r.user}, " + (f"password changed to the one of {came_from}" if changed
                    else "password unchanged" if has_password else "password set"))
    return done


def doctor_app_copy(collection: pymongo.collection.Collection) -> pymongo.collection.Collection:
    return collection.database.client[databases(collection.database.name)["doctor_app"]][collection.name]


def refresh_doctor_app(collection: pymongo.collection.Collection, keys: MasterKeys, hospital: str) -> int:
    """One hospital's records, names re-encrypted under its own data key; records the app already has are kept as the
    app left them. Returns how many records that database holds."""
    target = doctor_app_copy(collection)
    source, own = encryption.cipher(collection, keys), encryption.doctor_app_cipher(target, keys, hospital, create=True)
    present = set(target.distinct("_id"))  # one hospital's records
    new = [own.encrypt_document(source.decrypt_document(doc))
           for doc in collection.find({"administrative_info.hospital": hospital}) if doc["_id"] not in present]
    insert_keeping_existing(target, new)  # a record the app wrote meanwhile: the app's version stays
    return target.count_documents({})


def provision_all(mongo, keys: MasterKeys, hospital: str = "") -> list[str]:
    """As `provision-access` does it, on a MongoResource's server with its passwords (existing ones are tried on it)."""
    # imported here: plumbing.mongo starts the embedded server, whose first start provisions these roles
    from healthcare_assets.plumbing.mongo import authenticates, with_credentials

    db, uri, given = mongo.db(), mongo.uri(), passwords_of(mongo)
    done = provision(db.client, passwords(keys.data_dir, given, keys.production), db.name, mongo.collection,
                     lambda user, password: authenticates(with_credentials(uri, user, password)), given)
    if hospital:
        count = refresh_doctor_app(mongo.hospitalizations(), keys, hospital)
        done.append(f"DOCTOR_APP: {count} records of the configured hospital in {databases(db.name)['doctor_app']}")
    else:
        done.append("DOCTOR_APP: HEALTHCARE_DOCTOR_APP_HOSPITAL is not set, no records copied")
    audit.record(db, "provision_access", "roles and users", len(roles(db.name)))
    return done
