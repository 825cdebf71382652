"""<data dir>/secrets.env, a development installation's generated secrets. A change is made under a lock,
from a fresh read, renaming a whole 0600 file over the old: nothing generated twice or lost, never half read."""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from healthcare_assets.plumbing import settings

PLACEHOLDER = "change-me"  # how .env.example marks every secret to be replaced
MIN_KEY_BYTES = 32


class PlaceholderSecretError(ValueError):
    pass


_reading_only = False


@contextlib.contextmanager
def read_only():
    """For a command that only reads: nothing is written. value() then gives a secret stored nowhere as a
    throwaway one, never stored: nothing was ever made with it, so what it looks up, it does not find."""
    global _reading_only
    before, _reading_only = _reading_only, True
    try:
        yield
    finally:
        _reading_only = before


def values(given: Mapping[str, str], production: bool, data_dir: Path | None = None,
           generate: Callable[[], str] | None = None) -> dict[str, str]:
    """Variable -> value: `given`'s, else secrets.env's (with `generate`, made there the first time), else left out."""
    found = environment(given, given, production)
    stored = ensure({v: generate for v in given if v not in found}, data_dir) if generate else read(data_dir)
    return {v: value for v in given if (value := found.get(v) or stored.get(v))}


def value(variable: str, generate: Callable[[], str], *, given: str, production: bool, what: str, min_bytes: int = 0,
          development_placeholder_ignored: bool = False, data_dir: Path | None = None) -> str:
    """One secret: `given` (the environment's), else stored in secrets.env (made the first time), with a warning."""
    from_env = environment([variable], {variable: given}, production, min_bytes, development_placeholder_ignored)
    if variable in from_env:
        return from_env[variable]
    if _reading_only:
        return read(data_dir).get(variable) or generate()
    stored = ensure({variable: generate}, data_dir)
    warnings.warn(f"{variable} is not set: using the development {what} in {path(data_dir)}", stacklevel=3)
    return stored[variable]


def environment(variables: Iterable[str], given: Mapping[str, str], production: bool, min_bytes: int = 0,
                development_placeholder_ignored: bool = False) -> dict[str, str]:
    """Each set in `given`, checked(); `development_placeholder_ignored`: a development placeholder counts as unset."""
    found = {}
    for variable in variables:
        value = given.get(variable)
        if value and not (development_placeholder_ignored and not production and value.startswith(PLACEHOLDER)):
            found[variable] = checked(variable, value, production, min_bytes)
    return found


def path(data_dir: Path | None = None) -> Path:
    return Path(data_dir or settings.data_dir()) / "secrets.env"


def read(data_dir: Path | None = None) -> dict[str, str]:
    """Every stored value. A file that others can read (written by an older version) is made 0600."""
    file = path(data_dir)
    if not file.exists():
        return {}
    if file.stat().st_mode & 0o077:
        file.chmod(0o600)
    return dict(line.partition("=")[::2] for line in file.read_text().splitlines() if line)


def ensure(generators: dict[str, Callable[[], str]], data_dir: Path | None = None) -> dict[str, str]:
    return update(lambda stored: {name: make() for name, make in generators.items() if not stored.get(name)}, data_dir)


def store(values: dict[str, str], data_dir: Path | None = None) -> dict[str, str]:
    """Every stored value, after replacing those of `values` (what the embedded server now has)."""
    return update(lambda stored: {k: v for k, v in values.items() if stored.get(k) != v}, data_dir)


def update(changes: Callable[[dict[str, str]], dict[str, str]], data_dir: Path | None = None) -> dict[str, str]:
    if _reading_only:
        raise RuntimeError(f"a command that only reads was about to write {path(data_dir)}")
    file = path(data_dir)
    settings.private_dir(file.parent)
    with open(file.with_suffix(".lock"), "a") as lock:
        os.fchmod(lock.fileno(), 0o600)
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        stored = read(data_dir)
        changed = changes(stored)
        if changed:
            stored.update(changed)
            _replace(file, "".join(f"{k}={v}\n" for k, v in stored.items()))
    return stored


def _replace(file: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=".secrets.", suffix=".tmp")  # mkstemp: 0600
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, file)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def checked(variable: str, value: str, production: bool, min_bytes: int = 0) -> str:
    """Refused in production if a placeholder or short; the error names the variable, never the value."""
    if production:
        if value.startswith(PLACEHOLDER):
            raise PlaceholderSecretError(f"{variable} is still the {PLACEHOLDER} placeholder of .env.example: "
                                         "MONGODB_URI is set, so this is production; set a long random value")
        if len(value.encode()) < min_bytes:
            raise PlaceholderSecretError(f"{variable} is shorter than {min_bytes} bytes: MONGODB_URI is set, so this "
                                         f"is production; set a random value of at least {min_bytes} bytes")
    return value
