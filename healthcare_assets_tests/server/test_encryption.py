"""Field-level encryption of the direct identifiers, on the embedded server with authentication:
what is stored, the key vault, the master key, rotation and the migration of clear documents."""

import base64
import os
import subprocess
import sys

import bson
import dagster as dg
import pymongo
import pytest

from healthcare_assets.defs.migration import encrypt_existing_documents
from healthcare_assets.defs.resources import mongo_resource_from_env
from healthcare_assets.domain import access, encryption, gdpr, master_keys, migration
from healthcare_assets.domain.loading import prepare_collection
from healthcare_assets.domain.schema import DOCUMENT_JSON_SCHEMA, ENCRYPTED_FIELDS
from healthcare_assets.plumbing import secrets_file
from healthcare_assets.plumbing.mongo import connect
from healthcare_assets_tests.fixtures.environment import REPO, keys_now, keys_resource
from healthcare_assets_tests.fixtures.runs import check_results, materialize, materialized
from healthcare_assets_tests.fixtures.servers import drop_deployment


@pytest.fixture(scope="module")
def encrypted_load(mongo_uri, small_csv, tmp_path_factory):
    """The small export loaded once for the module's read-only tests: (mongo, the load's metadata)."""
    patch = pytest.MonkeyPatch()
    patch.setenv("HEALTHCARE_DATA_DIR", str(tmp_path_factory.mktemp("encrypted")))
    mongo = mongo_resource_from_env(database="test_encrypted")
    try:
        result = materialize(small_csv, mongo)
        assert result.success and all(check_results(result).values()), check_results(result)
        yield mongo, materialized(result)["mongo_hospitalizations"]
    finally:
        drop_deployment(connect(mongo_uri), mongo.database)
        patch.undo()


@pytest.fixture(scope="module")
def encrypted_mongo(encrypted_load):
    return encrypted_load[0]


def test_every_document_holds_both_identifiers_as_bindata_subtype_6(encrypted_load):
    """Read with plain pymongo, as admin_master: no clear name on any document."""
    encrypted_mongo, load = encrypted_load
    docs = list(pymongo.MongoClient(encrypted_mongo.uri()).get_database(encrypted_mongo.database).hospitalizations.find())
    assert len(docs) == load["rows_loaded"] > 0  # every document the load wrote is looked at
    for part, name in ENCRYPTED_FIELDS:
        values = [d[part][name] for d in docs]
        assert all(isinstance(v, bson.Binary) and v.subtype == 6 for v in values), f"{part}.{name} in clear"
    assert migration.clear_identifiers(encrypted_mongo.hospitalizations()) == 0


def test_each_field_has_its_own_data_key_in_the_vault(encrypted_mongo):
    client = encrypted_mongo.client()
    vault = client[encryption.KEY_VAULT_DB][encryption.KEY_VAULT_COLLECTION]
    index = vault.index_information()["keyAltNames_1"]
    assert index["unique"] and index["partialFilterExpression"] == {"keyAltNames": {"$exists": True}}
    collection = encrypted_mongo.hospitalizations()
    names = sorted(encryption.key_names(collection).values())
    keys = list(vault.find({"keyAltNames": {"$in": names}}))
    assert sorted(k["keyAltNames"][0] for k in keys) == names == [
        f"{collection.full_name}:administrative_info.doctor", f"{collection.full_name}:personal_info.name"]
    assert {k["masterKey"]["provider"] for k in keys} == {master_keys.local_provider(keys_now().master_key())}
    # a patient and a doctor of the same name do not share a ciphertext
    cipher = encryption.cipher(collection, keys_now())
    same = "Ann Lee"
    assert cipher.encrypt("personal_info.name", same) != cipher.encrypt("administrative_info.doctor", same)
    # a second data key under an alt name in use is refused by the index
    with pytest.raises(pymongo.errors.EncryptionError, match="duplicate key|E11000"):
        cipher.encryption.create_data_key(*keys_now().provider(), key_alt_names=[names[0]])


def test_lookup_by_name_encrypts_the_value_and_is_an_index_scan(encrypted_mongo):
    collection = encrypted_mongo.hospitalizations()
    cipher = encryption.cipher(collection, keys_now())
    doc = collection.find_one({"_id": {"$exists": True}})
    name = cipher.decrypt(doc["personal_info"]["name"])
    query = gdpr.patient_query(collection, keys_now(), name)
    assert query["personal_info.name"] == doc["personal_info"]["name"]  # deterministic
    collection.create_index("personal_info.name")
    try:
        plan = collection.find(query).explain()["queryPlanner"]["winningPlan"]
        assert "IXSCAN" in str(plan)
        assert doc["_id"] in {d["_id"] for d in collection.find(query)}
        assert collection.count_documents({"personal_info.name": name}) == 0  # the clear name matches nothing
    finally:
        collection.drop_index("personal_info.name_1")


def test_the_validator_refuses_a_clear_name(encrypted_mongo):
    collection = encrypted_mongo.hospitalizations()
    doc = collection.find_one({"_id": {"$exists": True}})
    clear = encryption.cipher(collection, keys_now()).decrypt_document(doc)
    with pytest.raises(pymongo.errors.WriteError):
        collection.insert_one({**clear, "_id": "clear-probe"})
    assert DOCUMENT_JSON_SCHEMA["properties"]["personal_info"]["properties"]["name"] == {"bsonType": "binData"}


# ---- the master key ----------------------------------------------------------------------------

def test_development_master_key_is_generated_once_with_a_warning(data_dir, monkeypatch):
    monkeypatch.delenv("MONGODB_URI", raising=False)
    monkeypatch.delenv(master_keys.MASTER_KEY_VARIABLE, raising=False)
    with pytest.warns(UserWarning, match="development master key"):
        first = keys_now().master_key()
    assert len(first) == 96 and keys_now().master_key() == first
    stored = secrets_file.read(data_dir)[master_keys.MASTER_KEY_VARIABLE]
    assert base64.b64decode(stored) == first
    assert secrets_file.path(data_dir).stat().st_mode & 0o077 == 0


@pytest.mark.parametrize("value", ["", "change-me-master-key", base64.b64encode(b"short").decode(), "not base64!"])
def test_production_refuses_a_missing_placeholder_or_malformed_master_key(data_dir, monkeypatch, value):
    monkeypatch.setenv("MONGODB_URI", "mongodb://db.example:27017/")
    monkeypatch.setenv(master_keys.MASTER_KEY_VARIABLE, value)
    with pytest.raises(ValueError, match=master_keys.MASTER_KEY_VARIABLE) as refused:
        keys_now().master_key()
    assert not value or value not in str(refused.value)
    assert not secrets_file.path(data_dir).exists()  # never generated in production


def test_aws_kms_is_chosen_by_its_key_arn(monkeypatch):
    arn = "arn:aws:kms:eu-west-3:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    monkeypatch.setenv("HEALTHCARE_KMS_KEY_ARN", arn)
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("HEALTHCARE_KMS_REGION", raising=False)
    with pytest.raises(master_keys.MasterKeyError, match="HEALTHCARE_KMS_REGION"):
        keys_now().provider()
    monkeypatch.setenv("HEALTHCARE_KMS_REGION", "eu-west-3")
    assert keys_now().provider() == ("aws", {"key": arn, "region": "eu-west-3"})
    monkeypatch.setenv(master_keys.MASTER_KEY_VARIABLE, "change-me-master-key")  # .env.example's, unused
    assert keys_now().kms_providers() == {"aws": {}}  # credentials from the AWS environment


# ---- rotation ----------------------------------------------------------------------------------

def rotate_keys(mongo, **env: str) -> subprocess.CompletedProcess:
    """`healthcare-assets rotate-keys` in a process of its own, on this test's database."""
    env = {**os.environ, "MONGODB_DATABASE": mongo.database, "PYTHONPATH": str(REPO), **env}
    return subprocess.run([sys.executable, "-m", "healthcare_assets.tooling.cli", "rotate-keys"], env=env,
                          capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.slow
def test_rotate_keys_rewraps_every_data_key_under_the_new_master_key(mongo, small_csv, monkeypatch):
    assert materialize(small_csv, mongo).success
    collection = mongo.hospitalizations()
    before = {d["_id"]: d["personal_info"]["name"] for d in collection.find({}, {"personal_info.name": 1})}
    clear = {i: encryption.cipher(collection, keys_now()).decrypt(v) for i, v in list(before.items())[:50]}
    old, new = os.environ[master_keys.MASTER_KEY_VARIABLE], master_keys.new_master_key()
    vault = mongo.client()[encryption.KEY_VAULT_DB][encryption.KEY_VAULT_COLLECTION]
    mine = {"keyAltNames": {"$in": list(encryption.key_names(collection).values())}}
    wrapped = {k["_id"]: k["keyMaterial"] for k in vault.find(mine)}

    refused = rotate_keys(mongo)  # production: the new key must be given
    assert refused.returncode != 0 and master_keys.NEW_MASTER_KEY_VARIABLE in refused.stderr
    # From the first rotation on, the session's server may hold keys under `new`: whatever fails,
    # the finally puts them back (keys already under `old` are left as they are).
    try:
        result = rotate_keys(mongo, HEALTHCARE_NEW_MASTER_KEY=new)
        assert result.returncode == 0, result.stderr
        assert "re-wrapped" in result.stdout and new not in result.stdout + result.stderr
        keys = list(vault.find(mine))
        assert {k["masterKey"]["provider"] for k in keys} == {master_keys.local_provider(base64.b64decode(new))}
        assert all(wrapped[k["_id"]] != k["keyMaterial"] for k in keys)  # the same data keys, wrapped anew
        assert {d["_id"]: d["personal_info"]["name"] for d in collection.find({}, {"personal_info.name": 1})} == before
        monkeypatch.setenv(master_keys.MASTER_KEY_VARIABLE, new)
        assert {i: encryption.cipher(collection, keys_now()).decrypt(before[i]) for i in clear} == clear
        monkeypatch.setenv(master_keys.MASTER_KEY_VARIABLE, old)
        with pytest.raises(pymongo.errors.EncryptionError):
            encryption.cipher(collection, keys_now()).decrypt(next(iter(before.values())))
        # run again (an interrupted rotation is finished so): nothing is left under the old key
        again = rotate_keys(mongo, HEALTHCARE_NEW_MASTER_KEY=new)
        assert again.returncode == 0 and "re-wrapped    0" in again.stdout, again.stdout + again.stderr
    finally:  # the session's other keys (of other tests' databases) back under the session's key
        back = rotate_keys(mongo, HEALTHCARE_MASTER_KEY=new, HEALTHCARE_NEW_MASTER_KEY=old)
        assert back.returncode == 0, back.stderr


def test_development_rotation_keeps_the_new_key_before_it_rewraps(mongo, data_dir, small_csv, monkeypatch):
    uri = os.environ["MONGODB_URI"]
    monkeypatch.delenv("MONGODB_URI")  # a development installation, whose key is in secrets.env
    monkeypatch.delenv(master_keys.MASTER_KEY_VARIABLE)
    with pytest.warns(UserWarning, match="development master key"):
        old = keys_now().master_key()
    monkeypatch.setenv("MONGODB_URI", uri)
    monkeypatch.setenv(master_keys.MASTER_KEY_VARIABLE, base64.b64encode(old).decode())  # the same key
    assert materialize(small_csv, mongo).success
    collection = mongo.hospitalizations()
    doc = collection.find_one({"_id": {"$exists": True}})
    clear = encryption.cipher(collection, keys_now()).decrypt_document(doc)
    monkeypatch.delenv("MONGODB_URI")
    monkeypatch.delenv(master_keys.MASTER_KEY_VARIABLE)
    with pytest.warns(UserWarning):
        rewrapped = encryption.rotate_master_key(collection.database.client, keys_now(), [encryption.KEY_VAULT])
    assert rewrapped[encryption.KEY_VAULT] == 2  # this test's keys only: the others are under the session's
    stored = secrets_file.read(data_dir)
    new = base64.b64decode(stored[master_keys.MASTER_KEY_VARIABLE])
    assert new != old and stored[master_keys.NEW_MASTER_KEY_VARIABLE] == ""
    with pytest.warns(UserWarning):
        assert encryption.cipher(collection, keys_now()).decrypt_document(doc) == clear


# ---- migration of documents loaded in clear -----------------------------------------------------

@pytest.mark.slow
def test_encrypt_existing_documents_is_resumable_and_proves_no_clear_name_remains(mongo, small_csv):
    assert materialize(small_csv, mongo).success
    collection = mongo.hospitalizations()
    cipher = encryption.cipher(collection, keys_now())
    encrypted = {d["_id"]: d for d in collection.find()}
    hospital = next(iter(encrypted.values()))["administrative_info"]["hospital"]
    copy = access.doctor_app_copy(collection)
    access.refresh_doctor_app(collection, keys_now(), hospital)
    copied = {d["_id"]: d for d in copy.find()}
    # as an older version stored them: every identifier in clear, the validator of strings
    collection.database.command("collMod", collection.name, validator={})
    for doc in encrypted.values():
        collection.replace_one({"_id": doc["_id"]}, cipher.decrypt_document(doc))
    own = encryption.doctor_app_cipher(copy, keys_now(), hospital)
    for doc in copied.values():
        copy.replace_one({"_id": doc["_id"]}, own.decrypt_document(doc))
    assert migration.clear_identifiers(collection) == len(encrypted)
    assert migration.clear_identifiers(copy) == len(copied) > 0
    # a first run stopped half-way: half the documents done
    half = list(encrypted)[: len(encrypted) // 2]
    for i in half:
        collection.replace_one({"_id": i}, encrypted[i])
    assert migration.clear_identifiers(collection) == len(encrypted) - len(half)

    result = encrypt_existing_documents.execute_in_process(resources={"mongo": mongo, "keys": keys_resource()})
    assert result.success
    assert result.output_for_node("encrypt_clear_identifiers") == len(encrypted) - len(half) + len(copied)
    assert migration.clear_identifiers(collection) == migration.clear_identifiers(copy) == 0
    assert {d["_id"]: d for d in collection.find()} == encrypted  # deterministic: as the load writes them
    assert {d["_id"]: d for d in copy.find()} == copied  # under the hospital's own key
    assert collection.options()["validator"] == {"$jsonSchema": DOCUMENT_JSON_SCHEMA}
    # run again: nothing to do
    assert encrypt_existing_documents.execute_in_process(resources={"mongo": mongo, "keys": keys_resource()}).output_for_node(
        "encrypt_clear_identifiers") == 0


@pytest.mark.slow
def test_the_migration_check_fails_while_a_clear_name_remains(mongo, small_csv):
    assert materialize(small_csv, mongo).success
    collection = mongo.hospitalizations()
    doc = collection.find_one({"_id": {"$exists": True}})
    clear = encryption.cipher(collection, keys_now()).decrypt_document(doc)
    collection.replace_one({"_id": doc["_id"]}, clear, bypass_document_validation=True)
    assert migration.clear_identifiers(collection) == 1
    from healthcare_assets.defs.migration import no_clear_identifier_remains

    with pytest.raises(dg.Failure, match="1 documents still hold a clear name"):
        no_clear_identifier_remains(dg.build_op_context(), 0, mongo)
    prepare_collection(collection)
