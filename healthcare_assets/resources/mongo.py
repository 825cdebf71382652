"""MongoResource: real MongoDB when MONGODB_URI is set, otherwise the embedded daemon."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import dagster as dg
import pymongo
from pymongo.collection import Collection
from pymongo.database import Database

from healthcare_assets.resources import embedded_mongo, settings

_clients: dict[str, pymongo.MongoClient] = {}


class MongoUnreachableError(RuntimeError):
    pass


def redact(uri: str) -> str:
    """host:port part of a URI, safe for logs and metadata (no credentials, no options)."""
    return urlsplit(uri).netloc.rpartition("@")[2] or uri


def connect(uri: str) -> pymongo.MongoClient:
    """A cached client for the URI, checked with a ping so a dead server fails fast and clearly."""
    client = _clients.get(uri)
    if client is None:
        options = {} if "serverselectiontimeoutms" in uri.lower() else {"serverSelectionTimeoutMS": 10_000}
        client = pymongo.MongoClient(uri, appname="healthcare-assets", retryWrites=True, tz_aware=False, **options)
        try:
            client.admin.command("ping")
        except pymongo.errors.PyMongoError as exc:
            client.close()
            raise MongoUnreachableError(
                f"cannot reach MongoDB at {redact(uri)}: {type(exc).__name__}. Check that the server "
                "is running and reachable from here, and the host, port, credentials and TLS options "
                "in MONGODB_URI (unset it to use the embedded server)."
            ) from exc
        _clients[uri] = client
    return client


class MongoResource(dg.ConfigurableResource):
    """Where the documents go. The URI is read from MONGODB_URI at run time, never stored in
    config, so credentials never show up in the UI or in run metadata."""

    database: str = "healthcare_db"
    collection: str = "hospitalizations"
    data_dir: str | None = None  # embedded storage root; None means $HEALTHCARE_DATA_DIR

    def uri(self) -> str:
        if settings.mongodb_uri():
            return settings.mongodb_uri()
        data_dir = Path(self.data_dir).resolve() if self.data_dir else settings.data_dir()
        embedded_mongo.ensure_running(data_dir)
        return embedded_mongo.client_uri(data_dir)

    def client(self) -> pymongo.MongoClient:
        return connect(self.uri())

    def db(self) -> Database:
        return self.client()[self.database]

    def hospitalizations(self) -> Collection:
        return self.db()[self.collection]

    def server_label(self) -> str:
        return redact(self.uri()) + ("" if settings.mongodb_uri() else " (embedded secantusdb)")


def mongo_resource_from_env() -> MongoResource:
    return MongoResource(
        database=settings.database_name(),
        collection=settings.collection_name(),
    )
