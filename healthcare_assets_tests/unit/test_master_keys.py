"""The master keys held, without a server: which key-vault documents a restore may accept
(wrapping_problems, against hostile documents), the retired keys' variable, and forgetting
retired keys no backup needs."""

import base64
import uuid

import pytest
from bson.binary import Binary, UuidRepresentation

from healthcare_assets.domain import master_keys
from healthcare_assets.plumbing import secrets_file
from healthcare_assets_tests.fixtures.environment import keys_now

PRODUCTION_URI = "mongodb://admin_master:a-long-random-production-password@db.example:27017/"
ARN = "arn:aws:kms:eu-west-3:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
OLD_ARN = "arn:aws:kms:eu-west-1:111122223333:key/0000abcd-12ab-34cd-56ef-1234567890ab"
CURRENT, RETIRED, UNKNOWN = (master_keys.new_master_key() for _ in range(3))


def name(key: str) -> str:
    return master_keys.local_provider(base64.b64decode(key))


def data_key(master, alt: str = "healthcare_db.hospitalizations:personal_info.name") -> dict:
    document = {"_id": Binary.from_uuid(uuid.uuid4(), UuidRepresentation.STANDARD), "keyAltNames": [alt]}
    return {**document, "masterKey": master} if master is not ... else document


@pytest.fixture
def production(monkeypatch, tmp_path):
    """Production: every key from the environment; a local key, a retired one and AWS KMS."""
    monkeypatch.setenv("HEALTHCARE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MONGODB_URI", PRODUCTION_URI)
    monkeypatch.setenv(master_keys.MASTER_KEY_VARIABLE, CURRENT)
    monkeypatch.setenv(master_keys.RETIRED_KEYS_VARIABLE, RETIRED)
    monkeypatch.setenv("HEALTHCARE_KMS_KEY_ARN", ARN)
    monkeypatch.setenv("HEALTHCARE_KMS_REGION", "eu-west-3")
    monkeypatch.setenv(master_keys.RETIRED_ARNS_VARIABLE, OLD_ARN)
    return tmp_path / "data"


def test_keys_held_are_accepted(production):
    accepted = [data_key({"provider": name(CURRENT)}), data_key({"provider": name(RETIRED)}),
                data_key({"provider": "aws", "key": ARN, "region": "eu-west-3"}),
                data_key({"provider": "aws", "key": OLD_ARN, "region": "eu-west-1"})]
    assert keys_now().wrapping_problems(accepted) == []
    assert set(keys_now().kms_providers()) == {"aws", name(CURRENT), name(RETIRED)}


HOSTILE = {
    "unknown local digest": {"provider": name(UNKNOWN)},
    "aws with an endpoint": {"provider": "aws", "key": ARN, "region": "eu-west-3", "endpoint": "kms.evil.example"},
    "aws, another ARN": {"provider": "aws", "key": ARN.replace("1234abcd", "9999abcd"), "region": "eu-west-3"},
    "aws, another region": {"provider": "aws", "key": ARN, "region": "us-east-1"},
    "retired ARN, another region": {"provider": "aws", "key": OLD_ARN, "region": "eu-west-3"},
    "aws, ARN not a string": {"provider": "aws", "key": {"$ne": ""}, "region": "eu-west-3"},
    "named aws provider": {"provider": "aws:other", "key": ARN, "region": "eu-west-3"},
    "kmip": {"provider": "kmip", "keyId": "1", "endpoint": "kmip.evil.example:5696"},
    "azure": {"provider": "azure", "keyVaultEndpoint": "evil.vault.azure.net", "keyName": "k"},
    "gcp": {"provider": "gcp", "projectId": "p", "location": "l", "keyRing": "r", "keyName": "k"},
    "plain local": {"provider": "local"},
    "local name not a digest": {"provider": "local:ABCDEF0123456789"},
    "held local key with an endpoint": {"provider": name(CURRENT), "endpoint": "evil.example"},
    "provider not a string": {"provider": ["local"]},
    "masterKey not a document": "local",
    "masterKey missing": ...,
}


@pytest.mark.parametrize("case", HOSTILE)
def test_a_key_not_held_or_not_to_be_accepted_is_named_in_one_sentence(production, case):
    problems = keys_now().wrapping_problems([data_key({"provider": name(CURRENT)}), data_key(HOSTILE[case])])
    assert len(problems) == 1, problems
    assert problems[0].startswith("data key healthcare_db.hospitalizations:personal_info.name ")
    assert not any(key in problems[0] for key in (CURRENT, RETIRED, UNKNOWN))


def test_the_message_says_which_key_to_set(production):
    [problem] = keys_now().wrapping_problems([data_key({"provider": name(UNKNOWN)})])
    digest = name(UNKNOWN).partition(":")[2]
    assert f"master key local:{digest}, which this installation does not hold" in problem
    assert master_keys.MASTER_KEY_VARIABLE in problem and f"digest is {digest}" in problem
    [endpoint] = keys_now().wrapping_problems([data_key(HOSTILE["aws with an endpoint"])])
    assert "custom endpoint" in endpoint and "another host" in endpoint and "kms.evil.example" not in endpoint


def test_a_hostile_name_is_shown_short_and_printable(production):
    alt = "x\n\x1b[31mfake line" + "y" * 500
    [problem] = keys_now().wrapping_problems([data_key({"provider": "kmip"}, alt)])
    assert "\n" not in problem and "\x1b" not in problem and len(problem) < 400
    [no_alt] = keys_now().wrapping_problems([{"_id": 7, "masterKey": {"provider": "kmip"}}])
    assert no_alt.startswith("data key 7 ")
    key_id = uuid.uuid4()
    [by_id] = keys_now().wrapping_problems([{"_id": Binary.from_uuid(key_id), "masterKey": {"provider": "gcp"}}])
    assert by_id.startswith(f"data key {key_id} ")


@pytest.mark.parametrize("value", ["not base64!", base64.b64encode(b"short").decode()])
def test_a_malformed_retired_key_is_refused_by_name_never_by_value(production, monkeypatch, value):
    monkeypatch.setenv(master_keys.RETIRED_KEYS_VARIABLE, f"{RETIRED}, {value}")
    with pytest.raises(master_keys.MasterKeyError, match=rf"{master_keys.RETIRED_KEYS_VARIABLE} \(entry 2\)") as refused:
        keys_now().kms_providers()
    assert value not in str(refused.value) and RETIRED not in str(refused.value)


def test_a_placeholder_or_empty_retired_list_holds_no_key(production, monkeypatch):
    for value in ("change-me-retired-master-keys", "", " , "):
        monkeypatch.setenv(master_keys.RETIRED_KEYS_VARIABLE, value)
        assert set(keys_now().kms_providers()) == {"aws", name(CURRENT)}
    monkeypatch.setenv(master_keys.RETIRED_ARNS_VARIABLE, "arn:aws:s3:::not-a-kms-key")
    with pytest.raises(master_keys.MasterKeyError, match=master_keys.RETIRED_ARNS_VARIABLE):
        keys_now().kms_providers()


def test_production_only_reports_the_retired_keys_no_backup_needs(production, monkeypatch):
    monkeypatch.setenv(master_keys.RETIRED_KEYS_VARIABLE, f"{RETIRED},{UNKNOWN},{CURRENT}")
    in_use = {name(RETIRED), name(CURRENT), "aws:" + ARN}
    assert keys_now().retired_keys_needed(in_use) == master_keys.RetiredKeys(
        needed=[name(RETIRED)], removable=sorted(["aws:" + OLD_ARN, name(UNKNOWN)]))
    assert keys_now().forget_retired_keys(in_use) == sorted(["aws:" + OLD_ARN, name(UNKNOWN)])
    assert not secrets_file.path(production).exists()  # nothing written: the operator removes them


@pytest.mark.filterwarnings("ignore:HEALTHCARE_MASTER_KEY is not set")
def test_development_forgets_a_retired_key_only_when_no_backup_uses_it(monkeypatch, tmp_path):
    data_dir = tmp_path / "data"
    monkeypatch.setenv("HEALTHCARE_DATA_DIR", str(data_dir))
    for variable in ("MONGODB_URI", master_keys.MASTER_KEY_VARIABLE, master_keys.RETIRED_KEYS_VARIABLE,
                     "HEALTHCARE_KMS_KEY_ARN", master_keys.RETIRED_ARNS_VARIABLE):
        monkeypatch.delenv(variable, raising=False)
    secrets_file.store({"HEALTHCARE_PSEUDONYM_KEY": "kept-as-it-is", master_keys.MASTER_KEY_VARIABLE: CURRENT,
                        master_keys.RETIRED_KEYS_VARIABLE: f"{RETIRED},{UNKNOWN},{CURRENT}"})
    assert set(keys_now().kms_providers()) == {name(CURRENT), name(RETIRED), name(UNKNOWN)}

    assert keys_now().forget_retired_keys({name(RETIRED), name(UNKNOWN), name(CURRENT)}) == []
    assert keys_now().forget_retired_keys({name(RETIRED)}) == [name(UNKNOWN)]
    stored = secrets_file.read(data_dir)
    assert stored[master_keys.RETIRED_KEYS_VARIABLE] == f"{RETIRED},{CURRENT}"  # the current key is never dropped
    assert stored[master_keys.MASTER_KEY_VARIABLE] == CURRENT and stored["HEALTHCARE_PSEUDONYM_KEY"] == "kept-as-it-is"
    assert keys_now().forget_retired_keys(set()) == [name(RETIRED)]
    stored = secrets_file.read(data_dir)
    assert stored[master_keys.RETIRED_KEYS_VARIABLE] == CURRENT and stored[master_keys.MASTER_KEY_VARIABLE] == CURRENT
    assert secrets_file.path(data_dir).stat().st_mode & 0o077 == 0
    assert set(keys_now().kms_providers()) == {name(CURRENT)}
    # A key of the environment is held too, and left to whoever set it.
    monkeypatch.setenv(master_keys.RETIRED_KEYS_VARIABLE, UNKNOWN)
    assert set(keys_now().kms_providers()) == {name(CURRENT), name(UNKNOWN)}
    assert keys_now().forget_retired_keys(set()) == []
