"""Where a database password came from, and the error that says so when the server refuses it.

Dagster's CLI loads `.env` from the working directory over the environment, so a `.env` copied
from `.env.example` silently replaces the passwords an embedded server was provisioned with. A
refused password is therefore reported with its user and its origin (the environment, `.env`, or
`$HEALTHCARE_DATA_DIR/secrets.env`), never as an unreachable server, and never retried: a lost
connection may come back, a wrong password does not.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from dotenv import dotenv_values

from healthcare_assets.plumbing import secrets_file, settings

AUTHENTICATION_FAILED = 18  # the server's error code for a refused user name or password


class AuthenticationRefusedError(dg.Failure):
    """The server answered and refused the credentials. A dg.Failure that forbids retries, so the
    load's RetryPolicy (meant for lost connections) fails at once."""

    def __init__(self, description: str):
        super().__init__(description=description, allow_retries=False)

    def __str__(self) -> str:
        return self.description


def is_refused(exc: Exception) -> bool:
    return getattr(exc, "code", None) == AUTHENTICATION_FAILED


def origin(variable: str, data_dir: Path | None = None) -> str:
    """Where the value of `variable` in use comes from, in words, without the value."""
    given = settings.environment().variables.get(variable)
    if given is None:
        return f"{variable} in {secrets_file.path(data_dir)}"
    dotenv = Path.cwd() / ".env"
    if dotenv.is_file() and dotenv_values(dotenv).get(variable) == given:
        return f"{variable} in {dotenv} (Dagster loads .env from the working directory over the environment)"
    return f"the environment variable {variable}"


def refused(server: str, user: str, variable: str, advice: str, data_dir: Path | None = None) -> AuthenticationRefusedError:
    return AuthenticationRefusedError(
        f"MongoDB at {server} refused the password of user {user!r} (authentication failed: the server "
        f"is running and answered). That password came from {origin(variable, data_dir)}. {advice}")
