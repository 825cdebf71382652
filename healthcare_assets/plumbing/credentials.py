"""Where a refused password came from (Dagster loads `.env` over the environment): never reported as an
unreachable server, nor retried, since a wrong password does not come back."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from dotenv import dotenv_values

from healthcare_assets.plumbing import secrets_file

AUTHENTICATION_FAILED = 18  # the server's error code for a refused user name or password


class AuthenticationRefusedError(dg.Failure):
    """Refused credentials: a dg.Failure forbidding retries (the RetryPolicy is for lost connections)."""

    def __init__(self, description: str):
        super().__init__(description=description, allow_retries=False)

    def __str__(self) -> str:
        return self.description


def is_refused(exc: Exception) -> bool:
    return getattr(exc, "code", None) == AUTHENTICATION_FAILED


def origin(variable: str, given: str | None, data_dir: Path | None = None) -> str:
    """Where the value of `variable` in use comes from, in words, without the value: `given` (a resource's) or not."""
    if not given:
        return f"{variable} in {secrets_file.path(data_dir)}"
    dotenv = Path.cwd() / ".env"
    if dotenv.is_file() and dotenv_values(dotenv).get(variable) == given:
        return f"{variable} in {dotenv} (Dagster loads .env from the working directory over the environment)"
    return f"the environment variable {variable}"


def refused(server: str, user: str, came_from: str, advice: str) -> AuthenticationRefusedError:
    return AuthenticationRefusedError(
        f"MongoDB at {server} refused the password of user {user!r} (authentication failed: the server "
        f"is running and answered). That password came from {came_from}. {advice}")
