"""`healthcare-assets mongo start|stop|status|uri [--role ROLE]`: the embedded server, and its URI."""

import argparse
import json
import sys

from healthcare_assets.defs.resources import mongo_resource_from_env
from healthcare_assets.domain import access, local_server
from healthcare_assets.plumbing import embedded_mongo, settings
from healthcare_assets.plumbing.mongo import with_credentials

UNKNOWN_ROLE = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["start", "stop", "status", "uri"])
    parser.add_argument("--role", help="with `uri`: a URI with the credentials of this role's user "
                                       f"({', '.join(r.user for r in access.roles())}; any letter case)")


def run(args: argparse.Namespace) -> int:
    data_dir = settings.data_dir()
    if args.role is not None and args.action != "uri":
        print("--role goes with `healthcare-assets mongo uri`", file=sys.stderr)
        return UNKNOWN_ROLE
    if args.action == "start":
        mongo = mongo_resource_from_env(start=False)
        print(local_server.ensure_running(data_dir, access.passwords_of(mongo), mongo.database, mongo.collection))
    elif args.action == "uri":
        return _uri(args.role)
    elif args.action == "status":
        if not settings.environment().production:
            local_server.require_database(data_dir)
        state = embedded_mongo.status(data_dir)
        print(json.dumps(state, indent=2) if state else f"not running (storage {data_dir / 'mongo'})")
        return 0 if state else 3
    elif args.action == "stop":
        state = embedded_mongo.stop(data_dir)
        print(f"stopped pid {state['pid']} on port {state['port']}" if state else "not running")
    return 0


def role_named(given: str) -> access.Role | None:
    """The role named or its user's, any letter case (ASCII only: no other script's letter folds into one)."""
    if not given.isascii():
        return None
    return next((r for r in access.roles() if given.strip().lower() == r.user), None)


def _uri(role_name: str | None) -> int:
    """The server's URI (TLS options, no credentials); with a role, that role's user's credentials in it."""
    env = settings.environment()
    data_dir = env.data_dir_and_origin()[0]
    base = env.get("MONGODB_URI") or local_server.running(data_dir)["uri"]
    if role_name is None:
        print(base)
        if not env.production:
            print("(no credentials: `healthcare-assets mongo uri --role analyst_readonly` gives one that reads the "
                  "analysts' copy)", file=sys.stderr)
        return 0
    role = role_named(role_name)
    if role is None:
        print(f"unknown role {role_name!r}: one of {', '.join(r.user for r in access.roles())} "
              "(any letter case)", file=sys.stderr)
        return UNKNOWN_ROLE
    given = access.passwords_of(mongo_resource_from_env(start=False))
    password = access.passwords(data_dir, given, env.production).get(role.name)
    if password is None:
        print(f"no password for {role.user}: set {role.password_variable} (it is in neither the environment "
              f"nor {data_dir / 'secrets.env'})", file=sys.stderr)
        return UNKNOWN_ROLE
    uri = with_credentials(base, role.user, password) if env.production \
        else local_server.client_uri(data_dir, role.name, given)
    print(uri)
    print(f"this URI holds the password of {role.user}: keep it out of shell history, logs, notebooks and "
          "tickets", file=sys.stderr)
    return 0
