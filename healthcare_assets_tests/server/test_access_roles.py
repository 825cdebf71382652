"""The permission matrix, against the embedded server with authentication on: every role ×
every operation asserts allow or deny; no credentials and a wrong password are both denied."""

import contextlib
from pathlib import Path

import pymongo
import pytest

from healthcare_assets.defs.resources import mongo_resource_from_env
from healthcare_assets.domain import access, encryption, master_keys, privacy
from healthcare_assets.domain.audit import AUDIT_COLLECTION
from healthcare_assets.domain.schema import ENCRYPTED_FIELDS
from healthcare_assets.plumbing import embedded_mongo
from healthcare_assets.tooling.generate import generate_csv
from healthcare_assets_tests.fixtures.access_matrix import EXPECTED, OPERATIONS
from healthcare_assets_tests.fixtures.environment import keys_now
from healthcare_assets_tests.fixtures.runs import materialize


@contextlib.contextmanager
def secured_server(data_dir: Path, export: Path):
    """A fresh embedded server (auth on after its first start) in `data_dir`, the export loaded,
    users provisioned; stopped, and the environment restored, however it ends."""
    patch = pytest.MonkeyPatch()
    patch.delenv("MONGODB_URI", raising=False)
    patch.setenv("HEALTHCARE_DATA_DIR", str(data_dir))
    try:
        mongo = mongo_resource_from_env()
        assert materialize(export, mongo).success
        hospitals = mongo.hospitalizations().distinct("administrative_info.hospital")
        own, other = hospitals[0], hospitals[1]
        access.provision_all(mongo, keys_now(), own)
        port = embedded_mongo.status(data_dir)["port"]
        template = mongo.hospitalizations().find_one({"administrative_info.hospital": own})  # passes the validator
        yield {"data_dir": data_dir, "port": port, "own": own, "other": other, "dbs": access.databases(access.DATABASE),
               "template": template}
    finally:  # a failed setup too: no daemon left running, no variable left set for the next module
        embedded_mongo.stop(data_dir)
        patch.undo()


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    """10,000 rows, so that most quasi-identifier groups reach k=11 and the analyst copy is not empty."""
    data_dir = tmp_path_factory.mktemp("secured")
    with secured_server(data_dir, generate_csv(rows=10_000, seed=3, out=data_dir / "export.csv")["path"]) as matrix_server:
        yield matrix_server


def client_for(secured, role: str, password: str | None = None) -> pymongo.MongoClient:
    r = access.role(role)
    password = password or access.passwords(secured["data_dir"])[role]
    uri = embedded_mongo.uri_for(secured["port"], r.user, password, secured["data_dir"])
    return pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000)


def operations(secured, client: pymongo.MongoClient, role: str) -> dict:
    dbs, coll = secured["dbs"], "hospitalizations"
    raw = client[dbs["main"]][coll]
    # a role writes the records it serves: the doctor app its hospital's copy, the others the collection
    writable = client[dbs["doctor_app"]][coll] if role == "DOCTOR_APP" else raw
    return {
        "read raw": lambda: raw.find_one(),
        "read anonymized": lambda: client[dbs["analytics"]][privacy.COPY_COLLECTION].find_one(),
        "insert": lambda: writable.insert_one({**secured["template"], "_id": f"probe-{role}"}),
        "update": lambda: writable.update_one({"administrative_info.hospital": secured["own"]}, {"$set": {"metadata.note": role}}),
        "create index": lambda: raw.create_index(f"probe_{role.lower()}"),
        "create user": lambda: client.admin.command("createUser", f"probe_{role.lower()}", pwd="x", roles=[]),
        "read another hospital": lambda: raw.find_one({"administrative_info.hospital": secured["other"]}),
        "read audit log": lambda: client[dbs["audit"]][AUDIT_COLLECTION].find_one(),
        "read key vault": lambda: client[encryption.KEY_VAULT_DB][encryption.KEY_VAULT_COLLECTION].find_one(),
        # a main-collection name (as the admin read it), decrypted with this role's connection and the master key
        "decrypt a name": lambda: decrypted(encryption.cipher(raw, keys_now()), secured["template"]["personal_info"]["name"]),
    }


def decrypted(cipher: encryption.FieldCipher, value):
    """The clear value; a refused read of the key vault raised as the server's refusal."""
    try:
        clear = cipher.decrypt(value)
    except pymongo.errors.EncryptionError as exc:
        raise exc.cause if isinstance(exc.cause, pymongo.errors.OperationFailure) else exc from None
    assert isinstance(clear, str) and clear
    return clear


def allowed(operation) -> bool:
    try:
        operation()
        return True
    except pymongo.errors.OperationFailure as exc:
        assert exc.code == 13, exc  # Unauthorized, not some other failure
        return False


@pytest.mark.parametrize("role", list(EXPECTED))
def test_permission_matrix(secured, role):
    client = client_for(secured, role)
    ops = operations(secured, client, role)
    got = [allowed(ops[name]) for name in OPERATIONS]
    assert dict(zip(OPERATIONS, got)) == dict(zip(OPERATIONS, EXPECTED[role]))


def test_doctor_app_sees_only_its_hospital(secured):
    slice_ = client_for(secured, "DOCTOR_APP")[secured["dbs"]["doctor_app"]]["hospitalizations"]
    hospitals = set(slice_.distinct("administrative_info.hospital")) - {None}
    assert hospitals == {secured["own"]}


def test_doctor_app_decrypts_its_copy_with_its_own_key_only(secured):
    """Its copy is encrypted under its hospital's data key, in the key vault of its own database:
    the only key it can read. The same names in the main collection are under other keys."""
    client = client_for(secured, "DOCTOR_APP")
    copy = client[secured["dbs"]["doctor_app"]]["hospitalizations"]
    vault = client[secured["dbs"]["doctor_app"]][encryption.KEY_VAULT_COLLECTION]
    assert [k["keyAltNames"] for k in vault.find()] == [[f"{copy.full_name}:hospital:{secured['own']}"]]
    own = encryption.doctor_app_cipher(copy, keys_now(), secured["own"])
    stored = copy.find_one()
    assert all(encryption.is_encrypted(stored[part][name]) for part, name in ENCRYPTED_FIELDS)
    clear = own.decrypt_document(stored)
    admin = client_for(secured, "ADMIN_MASTER")
    main = admin[secured["dbs"]["main"]]["hospitalizations"]
    source = encryption.cipher(main, keys_now()).decrypt_document(main.find_one({"_id": stored["_id"]}))
    assert [source[part][name] for part, name in ENCRYPTED_FIELDS] == [clear[part][name] for part, name in ENCRYPTED_FIELDS]
    assert main.find_one({"_id": stored["_id"]})["personal_info"]["name"] != stored["personal_info"]["name"]
    # a main-collection ciphertext needs a key of encryption.__keyVault: not in its own vault ...
    main_name = secured["template"]["personal_info"]["name"]
    with pytest.raises(pymongo.errors.EncryptionError, match="not all keys requested were satisfied"):
        own.decrypt(main_name)
    # ... and that vault it may not read
    with pytest.raises(pymongo.errors.EncryptionError) as refused:
        encryption.cipher(client[secured["dbs"]["main"]]["hospitalizations"], keys_now()).decrypt(main_name)
    assert isinstance(refused.value.cause, pymongo.errors.OperationFailure) and refused.value.cause.code == 13


def test_no_role_but_the_decrypting_ones_is_granted_a_key_vault():
    """As MongoDB 7 enforces it, per collection: the role documents themselves (the embedded server
    grants per database, so a grant on another collection of that database would pass there)."""
    grants = {r.name: {(d, c) for d, c, actions in r.privileges if "find" in actions} for r in access.roles()}
    vault = (encryption.KEY_VAULT_DB, encryption.KEY_VAULT_COLLECTION)
    assert {name for name, g in grants.items() if vault in g} == {"DATA_ENGINEER", "BACKEND_API"}  # + root
    doctor_vault = (access.databases(access.DATABASE)["doctor_app"], encryption.KEY_VAULT_COLLECTION)
    assert {name for name, g in grants.items() if doctor_vault in g} == {"DOCTOR_APP"}
    assert not any(d == encryption.KEY_VAULT_DB for r in access.roles() for _, d in r.inherits)


def test_a_client_without_the_master_key_reads_bindata_only(secured):
    """Every role that may read the collection sees BinData subtype 6 for both identifiers on
    every document; the key vault alone (wrapped keys) decrypts nothing without the master key."""
    for role in ("ADMIN_MASTER", "DATA_ENGINEER", "BACKEND_API"):
        docs = list(client_for(secured, role)[secured["dbs"]["main"]]["hospitalizations"].find())
        assert docs and all(encryption.is_encrypted(d[part][name]) for d in docs for part, name in ENCRYPTED_FIELDS)
    admin = client_for(secured, "ADMIN_MASTER")
    wrong = {master_keys.local_provider(b"w" * 96): {"key": b"w" * 96}}
    with encryption.client_encryption(admin, wrong) as other, pytest.raises(pymongo.errors.EncryptionError):
        other.decrypt(secured["template"]["personal_info"]["name"])


def test_analyst_copy_has_only_anonymized_fields(secured):
    doc = client_for(secured, "ANALYST_READONLY")[secured["dbs"]["analytics"]][privacy.COPY_COLLECTION].find_one()
    assert set(doc) - {"_id"} == set(privacy.VIEW_FIELDS)


def test_no_credentials_denied(secured):
    client = pymongo.MongoClient(embedded_mongo.uri_for(secured["port"], data_dir=secured["data_dir"]),
                                 serverSelectionTimeoutMS=5000)
    with pytest.raises(pymongo.errors.OperationFailure, match="requires authentication"):
        client[secured["dbs"]["main"]].hospitalizations.find_one()


def test_wrong_password_denied(secured):
    with pytest.raises(pymongo.errors.OperationFailure, match="authentication failed"):
        client_for(secured, "ADMIN_MASTER", password="not-the-password").admin.command("ping")


def test_provisioning_is_idempotent(secured):
    admin = client_for(secured, "ADMIN_MASTER")
    first = {u["user"] for u in admin.admin.command("usersInfo")["users"]}
    access.provision(admin, access.passwords(secured["data_dir"]))
    assert {u["user"] for u in admin.admin.command("usersInfo")["users"]} == first
    assert {r.user for r in access.roles()} <= first
