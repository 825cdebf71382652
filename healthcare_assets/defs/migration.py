"""One-time jobs for installations of earlier versions: encrypt names loaded in clear, re-key unkeyed _ids."""

import dagster as dg

from healthcare_assets.defs.load import WRITES_POOL
from healthcare_assets.domain import access, migration
from healthcare_assets.domain.cleaning import record_key_secret
from healthcare_assets.domain.loading import prepare_collection
from healthcare_assets.domain.master_keys import MasterKeys
from healthcare_assets.plumbing.keys import KeysResource
from healthcare_assets.plumbing.mongo import MongoResource


@dg.op(pool=WRITES_POOL)
def encrypt_clear_identifiers(context: dg.OpExecutionContext, mongo: MongoResource, keys: KeysResource) -> int:
    """Resumable; the validator (identifiers as BinData) is applied afterwards, as the next load would."""
    collection, master = mongo.hospitalizations(), MasterKeys.of(keys)
    changed = migration.encrypt_existing(collection, master, log=context.log.info)
    prepare_collection(collection)
    return changed + migration.encrypt_doctor_app_copy(access.doctor_app_copy(collection), master, log=context.log.info)


def _none_left(context: dg.OpExecutionContext, mongo: MongoResource, done: str, count, left: str,
               still: str, key: str) -> None:
    """Fails the run unless `count` finds no document left, in the collection and the doctor app's copy."""
    collection = mongo.hospitalizations()
    remaining = sum(count(c) for c in (collection, access.doctor_app_copy(collection)))
    context.log.info(f"{done} by this run; {remaining:,} with {left} left")
    if remaining:
        raise dg.Failure(description=f"{remaining:,} documents still {still}: run the job again",
                         metadata={key: remaining}, allow_retries=False)


@dg.op
def no_clear_identifier_remains(context: dg.OpExecutionContext, encrypted: int, mongo: MongoResource) -> None:
    """Fails the run unless every identifier is encrypted, in the collection and the doctor app's copy."""
    _none_left(context, mongo, f"{encrypted:,} documents encrypted", migration.clear_identifiers,
               "a clear identifier", "hold a clear name", "documents_with_clear_identifiers")


@dg.job(description="One time: encrypt the names of documents loaded before field-level encryption, "
                    "then prove that no clear name remains.")
def encrypt_existing_documents():
    no_clear_identifier_remains(encrypt_clear_identifiers())


@dg.op(pool=WRITES_POOL)
def rekey_unkeyed_ids(context: dg.OpExecutionContext, mongo: MongoResource, keys: KeysResource) -> int:
    """Resumable; nothing to do on a collection marked keyed."""
    secret = record_key_secret(MasterKeys.of(keys).pseudonym_key())
    return migration.rekey_deployment(mongo.hospitalizations(), secret, log=context.log.info)


@dg.op
def no_unkeyed_id_remains(context: dg.OpExecutionContext, rekeyed: int, mongo: MongoResource) -> None:
    """Fails the run unless no unkeyed _id is left; then marks the collection keyed: loads are accepted again."""
    _none_left(context, mongo, f"{rekeyed:,} documents re-keyed", migration.unkeyed_documents,
               "an unkeyed _id", "have an unkeyed _id", "documents_with_unkeyed_ids")
    migration.mark_keyed(mongo.hospitalizations())


@dg.job(description="One time, after upgrading: give documents loaded before record keys were keyed the keyed "
                    "_id a load computes now (and the doctor app's copy the same), then prove none is left.")
def rekey_existing_documents():
    no_unkeyed_id_remains(rekey_unkeyed_ids())
