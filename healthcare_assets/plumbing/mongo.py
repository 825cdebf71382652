"""MongoResource and the client helpers every part shares (which server: defs/resources.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from urllib.parse import quote_plus

import dagster as dg
import pymongo
from pydantic import Field
from pymongo import uri_parser
from pymongo.collection import Collection
from pymongo.database import Database

from healthcare_assets.plumbing import credentials, secrets_file

_clients: dict[str, pymongo.MongoClient] = {}


class MongoUnreachableError(RuntimeError):
    pass


UNPARSED = "(a MongoDB URI that does not parse)"


def _split(uri: str) -> tuple[str, str, str] | None:
    """(scheme, credentials, hosts) as pymongo splits them. None when an '@' is left elsewhere: a '/' or
    '?' in a password was not percent-encoded, and what looks like the hosts may be a piece of it."""
    scheme, separator, rest = uri.partition("://")
    if not separator or scheme not in ("mongodb", "mongodb+srv"):
        return None
    netloc = rest.partition("?")[0].partition("/")[0]
    if "@" in rest[len(netloc):]:
        return None
    credentials, _, hosts = netloc.rpartition("@")
    return scheme, credentials, hosts


def redact(uri: str) -> str:
    """The hosts, from the parsed host list, never the URI's text: no credentials can reach logs. No DNS."""
    split = _split(uri)
    if split is None:
        return UNPARSED
    scheme, _, hosts = split
    srv = scheme == "mongodb+srv"
    try:
        nodes = uri_parser.split_hosts(hosts, default_port=None if srv else 27017)
    except (ValueError, pymongo.errors.PyMongoError):
        return UNPARSED
    label = ",".join(f"[{host}]:{port}" if ":" in host else f"{host}:{port}" if port else host for host, port in nodes)
    return f"{label} (SRV)" if srv else label


def _production_uri(uri: str) -> str:
    """MONGODB_URI (production, whatever else is set), refused when its password is still a placeholder of .env.example."""
    split = _split(uri)
    if split and split[1]:
        with contextlib.suppress(pymongo.errors.PyMongoError):  # pymongo itself reports a bad URI
            secrets_file.checked("MONGODB_URI's password", uri_parser.parse_userinfo(split[1])[1], production=True)
    return uri


def connect(uri: str, refused: Callable[[str, str], Exception] | None = None) -> pymongo.MongoClient:
    """A cached client, pinged so a dead server fails fast; a refused password raises `refused(uri, user)`."""
    client = _clients.get(uri)
    if client is None:
        options = {} if "serverselectiontimeoutms" in uri.lower() else {"serverSelectionTimeoutMS": 10_000}
        try:
            client = pymongo.MongoClient(uri, appname="healthcare-assets", retryWrites=True, tz_aware=False, **options)
        except pymongo.errors.ConfigurationError as exc:
            # pymongo's message can quote a piece of the URI, and of a password in it: not chained
            raise MongoUnreachableError(f"MongoDB URI {redact(uri)} is not valid: {type(exc).__name__}. Percent-encode "
                                        "'@', ':', '/', '?' and '%' in the user name and password of MONGODB_URI."
                                        ) from None
        try:
            client.admin.command("ping")
        except pymongo.errors.OperationFailure as exc:
            client.close()
            if credentials.is_refused(exc):  # the server answered: not a connection problem
                raise (refused or refused_by_server)(uri, uri_parser.parse_userinfo(_split(uri)[1])[0]) from None
            raise
        except pymongo.errors.PyMongoError as exc:
            client.close()
            raise MongoUnreachableError(f"cannot reach MongoDB at {redact(uri)}: {type(exc).__name__}. Check that the "
                                        "server is running and reachable from here, and the host, port, credentials "
                                        "and TLS options in MONGODB_URI (unset it to use the embedded server)."
                                        ) from exc
        _clients[uri] = client
    return client


def refused_by_server(uri: str, user: str) -> credentials.AuthenticationRefusedError:
    return credentials.refused(
        redact(uri), user, credentials.origin("MONGODB_URI", uri),
        "Put the user's current password in MONGODB_URI (percent-encoded), or give the user that password "
        "on the server as its administrator (`healthcare-assets provision-access` sets every other role's "
        "password from HEALTHCARE_<ROLE>_PASSWORD).")


def with_credentials(uri: str, user: str, password: str) -> str:
    """The same URI (hosts, options, TLS files) with another user's credentials, checked against admin."""
    scheme, _, hosts = _split(uri)
    rest = uri.partition("://")[2]
    tail = rest[len(rest.partition("?")[0].partition("/")[0]):]
    if "authsource=" not in tail.lower():
        tail = (tail if "?" in tail else (tail or "/") + "?") + ("&" if "=" in tail else "") + "authSource=admin"
    return f"{scheme}://{quote_plus(user)}:{quote_plus(password)}@{hosts}{tail}"


def authenticates(uri: str) -> bool:
    """Whether the server accepts the URI's credentials (False only when it refuses them)."""
    with pymongo.MongoClient(uri, serverSelectionTimeoutMS=10_000) as client:
        try:
            client.admin.command("ping")
            return True
        except pymongo.errors.OperationFailure as exc:
            if credentials.is_refused(exc):
                return False
            raise


class MongoResource(dg.ConfigurableResource):
    """`mongodb_uri` is a dg.EnvVar, read at run time: secrets never show up in the UI (keys: plumbing/keys.py)."""

    mongodb_uri: str = ""
    database: str = "healthcare_db"
    collection: str = "hospitalizations"
    # its users' passwords, HEALTHCARE_<ROLE>_PASSWORD (domain/access.py maps roles to them), kept out of the repr
    admin_master_password: str = Field(default="", repr=False)
    data_engineer_password: str = Field(default="", repr=False)
    backend_api_password: str = Field(default="", repr=False)
    analyst_readonly_password: str = Field(default="", repr=False)
    doctor_app_password: str = Field(default="", repr=False)

    def uri(self) -> str:
        if not self.mongodb_uri:
            raise MongoUnreachableError("no MongoDB URI is configured: set MONGODB_URI, or unset it to use "
                                        "the embedded server")
        return _production_uri(self.mongodb_uri)

    def refused(self, uri: str, user: str) -> credentials.AuthenticationRefusedError:
        return refused_by_server(uri, user)

    def client(self) -> pymongo.MongoClient:
        return connect(self.uri(), self.refused)

    def db(self) -> Database:
        return self.client()[self.database]

    def hospitalizations(self) -> Collection:
        return self.db()[self.collection]

    def server_label(self) -> str:
        return redact(self.uri())
