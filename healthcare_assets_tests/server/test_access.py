"""The permission matrix, against the embedded server with authentication on: every role ×
every operation asserts allow or deny; no credentials and a wrong password are both denied.

The command matrix holds every role × every command the embedded server accepts, on the embedded
server and, when HEALTHCARE_TEST_MONGODB7_URI names one, on MongoDB 7. The embedded server leaves
some commands open to every user (EMBEDDED_GAPS): those cells are expected to fail there, strictly,
so that a version that closes a gap fails the test until the gap is taken off the list."""

import contextlib
import os
import re
import secrets
import uuid
from pathlib import Path

import pymongo
import pytest
from bson import Binary, Code, Int64

from healthcare_assets.defs.resources import mongo_resource_from_env
from healthcare_assets.domain import access, encryption, local_server, master_keys, privacy
from healthcare_assets.domain.audit import AUDIT_COLLECTION, ERASURES_COLLECTION
from healthcare_assets.domain.schema import ENCRYPTED_FIELDS
from healthcare_assets.plumbing import embedded_mongo
from healthcare_assets.tooling.generate import generate_csv
from healthcare_assets_tests.fixtures.runs import materialize

Y, N = True, False
OPERATIONS = ["read raw", "read anonymized", "insert", "update", "create index", "create user",
              "read another hospital", "read audit log", "read key vault", "decrypt a name"]
EXPECTED = {
    "ADMIN_MASTER":     [Y, Y, Y, Y, Y, Y, Y, Y, Y, Y],
    "DATA_ENGINEER":    [Y, N, Y, Y, Y, N, Y, N, Y, Y],
    "BACKEND_API":      [Y, N, Y, Y, N, N, Y, N, Y, Y],
    "ANALYST_READONLY": [N, Y, N, N, N, N, N, N, N, N],
    "DOCTOR_APP":       [N, N, Y, Y, N, N, N, N, N, N],
}


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
        access.provision_all(mongo.hospitalizations(), mongo.uri(), own)
        port = embedded_mongo.status(data_dir)["port"]
        template = mongo.hospitalizations().find_one({"administrative_info.hospital": own})  # passes the validator
        yield {"data_dir": data_dir, "port": port, "own": own, "other": other, "dbs": access.databases(),
               "template": template}
    finally:  # a failed setup too: no daemon left running, no variable left set for the next module
        embedded_mongo.stop(data_dir)
        patch.undo()


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    """10,000 rows, so that most quasi-identifier groups reach k=11 and the analyst copy is not empty."""
    data_dir = tmp_path_factory.mktemp("secured")
    with secured_server(data_dir, generate_csv(rows=10_000, seed=3, out=data_dir / "export.csv")["path"]) as server:
        yield server


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
        "decrypt a name": lambda: decrypted(encryption.cipher(raw), secured["template"]["personal_info"]["name"]),
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
    own = encryption.doctor_app_cipher(copy, secured["own"])
    stored = copy.find_one()
    assert all(encryption.is_encrypted(stored[part][name]) for part, name in ENCRYPTED_FIELDS)
    clear = own.decrypt_document(stored)
    admin = client_for(secured, "ADMIN_MASTER")
    main = admin[secured["dbs"]["main"]]["hospitalizations"]
    source = encryption.cipher(main).decrypt_document(main.find_one({"_id": stored["_id"]}))
    assert [source[part][name] for part, name in ENCRYPTED_FIELDS] == [clear[part][name] for part, name in ENCRYPTED_FIELDS]
    assert main.find_one({"_id": stored["_id"]})["personal_info"]["name"] != stored["personal_info"]["name"]
    # a main-collection ciphertext needs a key of encryption.__keyVault: not in its own vault ...
    main_name = secured["template"]["personal_info"]["name"]
    with pytest.raises(pymongo.errors.EncryptionError, match="not all keys requested were satisfied"):
        own.decrypt(main_name)
    # ... and that vault it may not read
    with pytest.raises(pymongo.errors.EncryptionError) as refused:
        encryption.cipher(client[secured["dbs"]["main"]]["hospitalizations"]).decrypt(main_name)
    assert isinstance(refused.value.cause, pymongo.errors.OperationFailure) and refused.value.cause.code == 13


def test_no_role_but_the_decrypting_ones_is_granted_a_key_vault():
    """As MongoDB 7 enforces it, per collection: the role documents themselves (the embedded server
    grants per database, so a grant on another collection of that database would pass there)."""
    grants = {r.name: {(d, c) for d, c, actions in r.privileges if "find" in actions} for r in access.roles()}
    vault = (encryption.KEY_VAULT_DB, encryption.KEY_VAULT_COLLECTION)
    assert {name for name, g in grants.items() if vault in g} == {"DATA_ENGINEER", "BACKEND_API"}  # + root
    doctor_vault = (access.databases()["doctor_app"], encryption.KEY_VAULT_COLLECTION)
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
    with encryption.client_encryption(admin, providers=wrong) as other, pytest.raises(pymongo.errors.EncryptionError):
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


# ---- every command the server accepts --------------------------------------------------------

ADMIN = {"ADMIN_MASTER"}
DB_ADMINS = ADMIN | {"DATA_ENGINEER"}  # dbAdmin and readWrite on the raw database
RAW_USERS = DB_ADMINS | {"BACKEND_API"}  # find, insert, update, remove on the raw collection
EVERYONE = set(EXPECTED)


FAIL_POINT_APP = "matrix-probe-fail-point"
FAIL_POINT_CODE = 4242  # no server answers a ping with it on its own


def command_probes(dbs: dict[str, str]) -> dict[str, tuple[set[str], str, dict]]:
    """probe -> (the roles that may run it, database, command). One probe per command the embedded
    server accepts (a few commands have more), aimed at the raw collection, the audit database or
    the server. Each is harmless once authorized (absent names, filters that match nothing), so any
    answer but Unauthorized means the role got through."""
    raw, coll, audit = dbs["main"], "hospitalizations", dbs["audit"]
    none = {"_id": "matrix-probe-absent"}
    mark = {"$set": {"metadata.matrix_probe": True}}
    absent_user, absent_role = "matrix_probe_absent", "MATRIX_PROBE_ABSENT"
    read_raw = [{"role": "read", "db": raw}]
    privileges = [{"resource": {"db": raw, "collection": ""}, "actions": ["find"]}]
    users = [{"user": absent_user, "db": "admin"}]
    return {
        # the handshake, sessions and cursors: every user
        **{name: (EVERYONE, "admin", {name: 1}) for name in (
            "hello", "isMaster", "ismaster", "ping", "buildInfo", "buildinfo", "whatsmyuri",
            "connectionStatus", "startSession", "abortTransaction", "commitTransaction")},
        "endSessions": (EVERYONE, "admin", {"endSessions": []}),
        "refreshSessions": (EVERYONE, "admin", {"refreshSessions": []}),
        # MongoDB kills only the caller's own sessions; the embedded server any listed one (a random UUID)
        "killSessions": (EVERYONE, "admin", {"killSessions": [{"id": Binary(uuid.uuid4().bytes, 4)}]}),
        "saslStart": (EVERYONE, "admin", {"saslStart": 1, "mechanism": "SCRAM-SHA-256",
                                          "payload": Binary(b"n,,n=matrix_probe_absent,r=0000")}),
        "saslContinue": (EVERYONE, "admin", {"saslContinue": 1, "conversationId": 1, "payload": Binary(b"")}),
        "authenticate": (EVERYONE, "admin", {"authenticate": 1, "mechanism": "MONGODB-X509"}),
        "getMore": (EVERYONE, raw, {"getMore": Int64(1), "collection": coll}),
        "killCursors": (EVERYONE, raw, {"killCursors": coll, "cursors": [Int64(1)]}),  # one's own only
        # reading the raw collection
        "find": (RAW_USERS, raw, {"find": coll, "filter": none}),
        "count": (RAW_USERS, raw, {"count": coll, "query": none}),
        "distinct": (RAW_USERS, raw, {"distinct": coll, "key": "_id", "query": none}),
        "aggregate": (RAW_USERS, raw, {"aggregate": coll, "pipeline": [{"$match": none}], "cursor": {}}),
        "aggregate.merge-into-audit": (ADMIN, dbs["analytics"], {
            "aggregate": privacy.COPY_COLLECTION, "cursor": {},
            "pipeline": [{"$match": none}, {"$merge": {"into": {"db": audit, "coll": AUDIT_COLLECTION}}}]}),
        **{name: (RAW_USERS, raw, {name: coll, "map": Code("function () {}"), "out": {"inline": 1},
                                   "reduce": Code("function (key, values) { return 0; }"), "query": none})
           for name in ("mapReduce", "mapreduce")},
        "explain": (RAW_USERS, raw, {"explain": {"find": coll, "filter": none}, "verbosity": "queryPlanner"}),
        # writing it
        "insert": (RAW_USERS, raw, {"insert": coll, "documents": [{"_id": "matrix-probe"}]}),
        "update": (RAW_USERS, raw, {"update": coll, "updates": [{"q": none, "u": mark}]}),
        "delete": (RAW_USERS, raw, {"delete": coll, "deletes": [{"q": none, "limit": 1}]}),
        **{name: (RAW_USERS, raw, {name: coll, "query": none, "update": mark})
           for name in ("findAndModify", "findandmodify")},
        # bulkWrite names its namespaces itself, whatever database it is sent to (here: admin)
        "bulkWrite.insert-raw": (RAW_USERS, "admin", {
            "bulkWrite": 1, "ops": [{"insert": 0, "document": {"_id": "matrix-probe-bulk"}}],
            "nsInfo": [{"ns": f"{raw}.{coll}"}]}),
        "bulkWrite.update-raw": (RAW_USERS, "admin", {  # nMatched answers whether a name matches
            "bulkWrite": 1, "ops": [{"update": 0, "filter": {"personal_info.name": {"$regex": "^A"}},
                                     "updateMods": mark, "multi": False}],
            "nsInfo": [{"ns": f"{raw}.{coll}"}]}),
        "bulkWrite.delete-audit": (ADMIN, "admin", {
            "bulkWrite": 1, "ops": [{"delete": 0, "filter": none, "multi": False}],
            "nsInfo": [{"ns": f"{audit}.{ERASURES_COLLECTION}"}]}),
        # the raw database's collections and indexes
        "listCollections": (DB_ADMINS, raw, {"listCollections": 1, "nameOnly": True}),
        "listIndexes": (DB_ADMINS, raw, {"listIndexes": coll}),
        "createIndexes": (DB_ADMINS, raw, {"createIndexes": coll, "indexes": [
            {"key": {"metadata.matrix_probe": 1}, "name": "matrix_probe"}]}),
        "dropIndexes": (DB_ADMINS, raw, {"dropIndexes": coll, "index": "matrix_probe_absent"}),
        # not the raw collection: MongoDB lets a user who may insert into a collection create it
        "create": (DB_ADMINS, raw, {"create": "matrix_probe"}),
        "drop": (DB_ADMINS, raw, {"drop": "matrix_probe_absent"}),
        "dropDatabase": (DB_ADMINS, raw, {"dropDatabase": 1}),
        "renameCollection": (DB_ADMINS, "admin", {"renameCollection": f"{raw}.matrix_probe_absent",
                                                  "to": f"{raw}.matrix_probe_renamed"}),
        "collMod": (DB_ADMINS, raw, {"collMod": coll}),
        "dbStats": (DB_ADMINS, raw, {"dbStats": 1}),
        "dbstats": (DB_ADMINS, raw, {"dbstats": 1}),
        "collStats": (DB_ADMINS, raw, {"collStats": coll}),
        "validate": (DB_ADMINS, raw, {"validate": coll}),
        "profile": (DB_ADMINS, raw, {"profile": -1}),
        "createSearchIndexes": (DB_ADMINS, raw, {"createSearchIndexes": coll, "indexes": [
            {"name": "matrix_probe", "definition": {"mappings": {"dynamic": True}}}]}),
        "updateSearchIndex": (DB_ADMINS, raw, {"updateSearchIndex": coll, "name": "matrix_probe_absent",
                                               "definition": {"mappings": {"dynamic": True}}}),
        "dropSearchIndex": (DB_ADMINS, raw, {"dropSearchIndex": coll, "name": "matrix_probe_absent"}),
        # users and roles
        "createUser": (ADMIN, "admin", {"createUser": "admin_master", "pwd": "x", "roles": []}),  # exists
        "updateUser": (ADMIN, "admin", {"updateUser": absent_user, "customData": {}}),
        "dropUser": (ADMIN, "admin", {"dropUser": absent_user}),
        "dropAllUsersFromDatabase": (ADMIN, raw, {"dropAllUsersFromDatabase": 1}),  # it has none
        "usersInfo": (ADMIN, "admin", {"usersInfo": 1}),
        "grantRolesToUser": (ADMIN, "admin", {"grantRolesToUser": absent_user, "roles": read_raw}),
        "revokeRolesFromUser": (ADMIN, "admin", {"revokeRolesFromUser": absent_user, "roles": read_raw}),
        "rolesInfo": (ADMIN, "admin", {"rolesInfo": 1}),
        "createRole": (ADMIN, "admin", {"createRole": "ANALYST_READONLY", "privileges": [], "roles": []}),
        "updateRole": (ADMIN, "admin", {"updateRole": absent_role, "roles": []}),
        "dropRole": (ADMIN, "admin", {"dropRole": absent_role}),
        "dropAllRolesFromDatabase": (ADMIN, raw, {"dropAllRolesFromDatabase": 1}),  # it has none
        "grantPrivilegesToRole": (ADMIN, "admin", {"grantPrivilegesToRole": absent_role, "privileges": privileges}),
        "revokePrivilegesFromRole": (ADMIN, "admin", {"revokePrivilegesFromRole": absent_role,
                                                      "privileges": privileges}),
        "grantRolesToRole": (ADMIN, "admin", {"grantRolesToRole": absent_role, "roles": read_raw}),
        "revokeRolesFromRole": (ADMIN, "admin", {"revokeRolesFromRole": absent_role, "roles": read_raw}),
        # the server
        **{name: (ADMIN, "admin", {name: 1}) for name in (
            "serverStatus", "top", "hostInfo", "getCmdLineOpts", "currentOp", "fsync", "replSetGetStatus",
            "secantusAdmin.pruneOplog", "secantusAdmin.pruneTtl")},
        # MongoDB lists the databases a user has privileges on for anyone, all of them only with the action
        "listDatabases": (ADMIN, "admin", {"listDatabases": 1, "nameOnly": True, "authorizedDatabases": False}),
        "getParameter": (ADMIN, "admin", {"getParameter": 1, "logLevel": 1}),
        "setParameter": (ADMIN, "admin", {"setParameter": 1, "matrixProbeAbsent": 1}),
        "getLog": (ADMIN, "admin", {"getLog": "global"}),
        "killOp": (EVERYONE, "admin", {"killOp": 1, "op": 999_999_999}),  # one's own operations only
        "killAllSessions": (ADMIN, "admin", {"killAllSessions": users}),
        "killAllSessionsByPattern": (ADMIN, "admin", {"killAllSessionsByPattern": [{"users": users}]}),
        "replSetStepDown": (ADMIN, "admin", {"replSetStepDown": -1}),  # refused after authorization
        # armed for one `ping` of the probing connection only (FAIL_POINT_APP): the cell then
        # checks whether that ping failed, so a fail point armed or not is seen, not assumed
        "configureFailPoint": (ADMIN, "admin", {
            "configureFailPoint": "failCommand", "mode": {"times": 1},
            "data": {"failCommands": ["ping"], "errorCode": FAIL_POINT_CODE, "appName": FAIL_POINT_APP}}),
        # the embedded server's own administration (MongoDB has no such commands)
        **{f"secantusAdmin.{name}": (ADMIN, "admin", {f"secantusAdmin.{name}": 1, field: ""})
           for name, field in (("backupArchive", "outputPath"), ("archiveBaseSnapshot", "archiveDir"),
                               ("restoreArchive", "archivePath"), ("restoreToTimestamp", "source"))},
    }


# Commands secantusdb 0.7 leaves out of its permission table; it lets any command it has no entry
# for through, so every authenticated user runs them.
EMBEDDED_GAPS = {
    "bulkWrite": "bulkWrite is missing from secantusdb's permission table: any user reads and writes "
                 "every namespace with it",
    "killAllSessions": "killAllSessions is missing from secantusdb's permission table: any user ends "
                       "every user's sessions and transactions (it ignores the users filter)",
    "killAllSessionsByPattern": "killAllSessionsByPattern is missing from secantusdb's permission "
                                "table: any user ends every user's sessions and transactions",
    "replSetStepDown": "replSetStepDown is missing from secantusdb's permission table: any user can "
                       "step the server down, refusing every write for as long as it asks",
    "replSetGetStatus": "replSetGetStatus is missing from secantusdb's permission table: any user "
                        "reads the replica set's status",
    **{name: f"{name} is missing from secantusdb's permission table (it only answers that search "
             "indexes need Atlas)" for name in ("createSearchIndexes", "updateSearchIndex", "dropSearchIndex")},
}
# Commands MongoDB lets every user run on its own cursors and operations, which the embedded server
# keeps to the roles below: stricter, harmless.
EMBEDDED_ONLY_FOR = {"killCursors": DB_ADMINS, "killOp": ADMIN}

PROBES = list(command_probes(access.databases("healthcare_db")))


def server_identity(client: pymongo.MongoClient) -> dict:
    info = client.admin.command("buildInfo")
    embedded = "secantusVersion" in info
    return {"embedded": embedded,
            "name": f"secantusdb {info['secantusVersion']}" if embedded else f"MongoDB {info['version']}"}


@pytest.fixture(scope="module", params=["embedded", "MongoDB 7"])
def server(request, tmp_path_factory):
    """Where the command matrix runs: a fresh embedded server (its roles and users are provisioned
    at its first start), or the MongoDB 7 at HEALTHCARE_TEST_MONGODB7_URI, a throwaway server (the
    compose image) and its root user, not one of the roles' users: the roles and their users are
    provisioned there again, for databases named matrix_*. Its identity comes from buildInfo."""
    if request.param == "embedded":
        data_dir = tmp_path_factory.mktemp("matrix")
        local_server.ensure_running(data_dir)
        port, passwords = embedded_mongo.status(data_dir)["port"], access.passwords(data_dir)

        def connect_as(role: str, **options) -> pymongo.MongoClient:
            uri = embedded_mongo.uri_for(port, access.role(role).user, passwords[role], data_dir)
            return pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000, **options)

        with connect_as("ADMIN_MASTER") as admin:
            yield {**server_identity(admin), "dbs": access.databases(), "connect_as": connect_as}
        embedded_mongo.stop(data_dir)
        return

    uri = os.environ.get("HEALTHCARE_TEST_MONGODB7_URI")
    if not uri:
        pytest.skip("HEALTHCARE_TEST_MONGODB7_URI is not set: no MongoDB 7 to hold the matrix against")
    root = pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000)
    who = {u["user"] for u in root.admin.command("connectionStatus")["authInfo"]["authenticatedUsers"]}
    if who & {r.user for r in access.roles()}:
        pytest.fail("HEALTHCARE_TEST_MONGODB7_URI must name a root user other than the roles' users")
    dbs = access.databases(f"matrix_{uuid.uuid4().hex[:8]}_db")
    passwords = {r.name: secrets.token_urlsafe(24) for r in access.roles()}
    access.provision(root, passwords, dbs["main"])
    bare = re.sub(r"^(mongodb(?:\+srv)?://)[^@/?]*@", r"\1", uri)  # the roles' users instead of root

    def connect_as(role: str, **options) -> pymongo.MongoClient:
        return pymongo.MongoClient(bare, username=access.role(role).user, password=passwords[role],
                                   authSource="admin", serverSelectionTimeoutMS=5000, **options)

    yield {**server_identity(root), "dbs": dbs, "connect_as": connect_as}
    for database in dbs.values():
        root.drop_database(database)
    root.close()


def answer(client: pymongo.MongoClient, database: str, command: dict) -> bool | None:
    """True when the role got past authorization (the command ran, or failed for another reason),
    False when it was refused as Unauthorized, None when the server has no such command."""
    try:
        client[database].command(command)
    except pymongo.errors.OperationFailure as exc:
        if exc.code in (13, 59):  # Unauthorized, CommandNotFound
            return None if exc.code == 59 else False
    return True


@pytest.mark.parametrize("probe", PROBES)
@pytest.mark.parametrize("role", list(EXPECTED))
def test_command_matrix(server, role, probe, request):
    may, database, command = command_probes(server["dbs"])[probe]
    name = next(iter(command))
    if server["embedded"]:
        may = EMBEDDED_ONLY_FOR.get(name, may)
        if name in EMBEDDED_GAPS and role not in may:
            request.node.add_marker(pytest.mark.xfail(strict=True, raises=AssertionError, reason=f"{server['name']}: {EMBEDDED_GAPS[name]}"))
    if name == "configureFailPoint":
        check_fail_point(server, role, may, database, command)
        return
    with server["connect_as"](role) as client:
        got = answer(client, database, command)
    if got is None:  # e.g. bulkWrite before MongoDB 8, the embedded server's own commands on MongoDB
        if role in may:
            pytest.skip(f"{server['name']} has no command {name}")
        got = False
    assert got == (role in may), f"on {server['name']}, {role} {'ran' if got else 'was refused'} {probe}"


def runs_test_commands(server) -> bool:
    """Whether the server runs mongod's test-only commands: only then does an authorized
    configureFailPoint arm anything (the embedded server answers ok and arms nothing otherwise)."""
    with server["connect_as"]("ADMIN_MASTER") as admin:
        try:
            return bool(admin.admin.command("getParameter", 1, enableTestCommands=1)["enableTestCommands"])
        except (pymongo.errors.OperationFailure, KeyError):
            return False


def check_fail_point(server, role: str, may: set[str], database: str, command: dict) -> None:
    """The configureFailPoint cell, judged by what the fail point caused: the probing connection's
    next ping fails with FAIL_POINT_CODE exactly when the role may arm it and the server runs test
    commands. A server without them (the embedded server as installed, MongoDB by default) has no
    such command for anyone, and nothing is armed."""
    armable = runs_test_commands(server)
    try:
        with server["connect_as"](role, appname=FAIL_POINT_APP) as client:
            got = answer(client, database, command)
            try:
                client.admin.command("ping")
                fired = False
            except pymongo.errors.OperationFailure as exc:
                assert exc.code == FAIL_POINT_CODE, exc
                fired = True
    finally:  # never left armed for the module's other cells
        with server["connect_as"]("ADMIN_MASTER") as admin, contextlib.suppress(pymongo.errors.OperationFailure):
            admin.admin.command({"configureFailPoint": "failCommand", "mode": "off"})
    if got is None:
        assert not armable, f"{server['name']} says it runs test commands but has no configureFailPoint"
    else:
        assert got == (role in may), f"on {server['name']}, {role} {'ran' if got else 'was refused'} configureFailPoint"
    assert fired == (role in may and armable), (
        f"on {server['name']} (test commands {'on' if armable else 'off'}), {role}'s fail point "
        f"{'made' if fired else 'did not make'} its next ping fail")


def test_the_matrix_holds_every_command_of_the_embedded_server(server):
    if not server["embedded"]:
        pytest.skip(f"{server['name']} enforces its own table for its own commands; the matrix holds the "
                    "embedded server's")
    with server["connect_as"]("ADMIN_MASTER") as client:
        try:
            accepted = set(client.admin.command("listCommands")["commands"])
        except pymongo.errors.OperationFailure as exc:
            assert exc.code == 59, exc
            # no listCommands in this version: its dispatch table
            from secantus.commands import _HANDLERS

            accepted = set(_HANDLERS)
    probed = {next(iter(command)) for _, _, command in command_probes(server["dbs"]).values()}
    assert accepted - probed == set(), "commands missing from the matrix"
    assert probed - accepted == set(), "commands the server does not accept"
