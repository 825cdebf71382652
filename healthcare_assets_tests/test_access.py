"""The permission matrix, against the embedded server with authentication on: every role ×
every operation asserts allow or deny; no credentials and a wrong password are both denied."""

import pymongo
import pytest

from healthcare_assets import access, privacy
from healthcare_assets.audit import AUDIT_COLLECTION
from healthcare_assets.generate import generate_csv
from healthcare_assets.resources import embedded_mongo
from healthcare_assets.resources.mongo import MongoResource
from healthcare_assets_tests.conftest import materialize

Y, N = True, False
OPERATIONS = ["read raw", "read anonymized", "insert", "update", "create index", "create user",
              "read another hospital", "read audit log"]
EXPECTED = {
    "ADMIN_MASTER":     [Y, Y, Y, Y, Y, Y, Y, Y],
    "DATA_ENGINEER":    [Y, N, Y, Y, Y, N, Y, N],
    "BACKEND_API":      [Y, N, Y, Y, N, N, Y, N],
    "ANALYST_READONLY": [N, Y, N, N, N, N, N, N],
    "DOCTOR_APP":       [N, N, Y, Y, N, N, N, N],
}


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    """A fresh embedded server (auth on after its first start), loaded, with users provisioned.
    10,000 rows, so that most quasi-identifier groups reach k=11 and the analyst copy is not empty."""
    data_dir = tmp_path_factory.mktemp("secured")
    export = generate_csv(rows=10_000, seed=3, out=data_dir / "export.csv")["path"]
    patch = pytest.MonkeyPatch()
    patch.delenv("MONGODB_URI", raising=False)
    patch.setenv("HEALTHCARE_DATA_DIR", str(data_dir))
    mongo = MongoResource()
    assert materialize(export, mongo).success
    hospitals = mongo.hospitalizations().distinct("administrative_info.hospital")
    own, other = hospitals[0], hospitals[1]
    patch.setenv("HEALTHCARE_DOCTOR_APP_HOSPITAL", own)
    access.provision_all(mongo.hospitalizations())
    port = embedded_mongo.status(data_dir)["port"]
    template = mongo.hospitalizations().find_one({"administrative_info.hospital": own})  # passes the validator
    yield {"data_dir": data_dir, "port": port, "own": own, "other": other, "dbs": access.databases(),
           "template": template}
    embedded_mongo.stop(data_dir)
    patch.undo()


def client_for(secured, role: str, password: str | None = None) -> pymongo.MongoClient:
    r = access.role(role)
    password = password or access.passwords(secured["data_dir"])[role]
    return pymongo.MongoClient(embedded_mongo.uri_for(secured["port"], r.user, password), serverSelectionTimeoutMS=5000)


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
    }


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


def test_analyst_copy_has_only_anonymized_fields(secured):
    doc = client_for(secured, "ANALYST_READONLY")[secured["dbs"]["analytics"]][privacy.COPY_COLLECTION].find_one()
    assert set(doc) - {"_id"} == set(privacy.VIEW_FIELDS)


def test_no_credentials_denied(secured):
    client = pymongo.MongoClient(embedded_mongo.uri_for(secured["port"]), serverSelectionTimeoutMS=5000)
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
