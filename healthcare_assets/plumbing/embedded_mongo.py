"""The zero-infrastructure default: one local secantusdb daemon per data directory.

Every Dagster step runs in its own process, so the daemon is started detached and found again
through a state file; a file lock makes sure concurrent runs never start two daemons on one
storage directory. Authentication is on: the very first start provisions the roles and users of
healthcare_assets.domain.access without auth, then restarts the daemon with --auth (the server has no
localhost exception); any local process could add a user in that window, so every start with
auth refuses a storage whose users are not exactly the roles' users.

The server's roles are not a security boundary (commands missing from its permission table, such
as bulkWrite, are open to every user), so the boundary is the OS user: everything here is
owner-only (the data directory 0700, the daemon started with umask 077), and the daemon requires
mutual TLS with certificates issued into the data directory (certificates.py), which only their
owner can read; that also closes the first start's window without authentication to other users.
HEALTHCARE_MONGO_TLS_CERT_FILE and _KEY_FILE replace them with files of your own (mutual when
_CA_FILE and _CLIENT_FILE are set too).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote_plus

import psutil
import pymongo

from healthcare_assets.domain import access
from healthcare_assets.plumbing import certificates, credentials, secrets_file, settings

HOST = "127.0.0.1"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0

log = logging.getLogger(__name__)


class EmbeddedMongoError(RuntimeError):
    pass


def _paths(data_dir: Path) -> dict[str, Path]:
    return {
        "storage": data_dir / "mongo",
        "state": data_dir / "mongo.json",
        "lock": data_dir / "mongo.lock",
        "log": data_dir / "mongo.log",
        "provisioned": data_dir / "mongo.provisioned",
    }


def _tls(data_dir: Path, issue: bool = False) -> dict[str, str]:
    """The TLS files (ca, cert, key, client): from HEALTHCARE_MONGO_TLS_* when its cert and key are
    set, otherwise the installation's own under the data directory (issued first when `issue`)."""
    names = {"cert": "HEALTHCARE_MONGO_TLS_CERT_FILE", "key": "HEALTHCARE_MONGO_TLS_KEY_FILE",
             "ca": "HEALTHCARE_MONGO_TLS_CA_FILE", "client": "HEALTHCARE_MONGO_TLS_CLIENT_FILE"}
    found = {k: os.environ[v] for k, v in names.items() if os.environ.get(v)}
    if {"cert", "key"} <= set(found):
        return found
    folder = Path(data_dir) / "tls"
    if issue:
        certificates.ensure(settings.private_dir(folder))
    return {k: str(v) for k, v in certificates.files(folder).items()}


def _mutual(tls: dict[str, str]) -> bool:
    return {"ca", "client"} <= set(tls)


def uri_for(port: int, user: str | None = None, password: str | None = None,
            data_dir: Path | None = None) -> str:
    """A URI of the daemon on `port`, presenting the client certificate of the installation whose
    data directory is `data_dir` (default: $HEALTHCARE_DATA_DIR) and verifying the server's."""
    credentials = f"{quote_plus(user)}:{quote_plus(password)}@" if user else ""
    options = "directConnection=true" + ("&authSource=admin" if user else "") + "&tls=true"
    tls = _tls(data_dir or settings.data_dir())
    for name, option in (("ca", "tlsCAFile"), ("client", "tlsCertificateKeyFile")):
        if name in tls:
            options += f"&{option}={quote_plus(tls[name])}"
    return f"mongodb://{credentials}{HOST}:{port}/?{options}"


def client_uri(data_dir: Path, role: str = "ADMIN_MASTER") -> str:
    """The running daemon's URI with one role's credentials (the pipeline itself uses ADMIN_MASTER:
    it writes every database and provisions users)."""
    data_dir = Path(data_dir).resolve()
    state = _read_state(data_dir)
    if state is None:
        raise EmbeddedMongoError(f"no embedded server runs for {data_dir}")
    password = access.passwords(data_dir).get(role)
    if password is None:
        raise EmbeddedMongoError(f"no password for {role}: set {access.role(role).password_variable}")
    return uri_for(state["port"], access.role(role).user, password, data_dir)


@contextlib.contextmanager
def _locked(data_dir: Path):
    settings.private_dir(data_dir)
    with open(_paths(data_dir)["lock"], "w") as lock:
        os.fchmod(lock.fileno(), 0o600)
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def free_port() -> int:
    """A free loopback port below Linux's ephemeral range (32768+), so that no outgoing
    connection can take it between this check and the server's own bind."""
    for port in random.sample(range(20_000, 32_000), 200):
        with socket.socket() as s:
            try:
                s.bind((HOST, port))
                return port
            except OSError:
                continue
    raise EmbeddedMongoError("no free port on 127.0.0.1 between 20000 and 32000")


def _answers(uri: str, timeout_ms: int = 1000) -> bool:
    client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms)
    try:
        client.admin.command("ping")
        return True
    except pymongo.errors.OperationFailure:
        return True  # it answered: "authentication required" is an answer
    except pymongo.errors.PyMongoError:
        return False
    finally:
        client.close()


def _is_our_daemon(pid: int) -> bool:
    # Guards against a recycled pid belonging to some other program.
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE and "secantus" in " ".join(proc.cmdline())
    except psutil.Error:
        return False


def _read_state(data_dir: Path) -> dict | None:
    try:
        return json.loads(_paths(data_dir)["state"].read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def status(data_dir: Path) -> dict | None:
    """The running daemon's state (pid, port, uri, storage), or None when it is not running."""
    state = _read_state(data_dir)
    if state and _is_our_daemon(state["pid"]) and _answers(state["uri"]):
        return state
    return None


def _log_tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def _start(data_dir: Path, auth: bool) -> dict:
    paths = _paths(data_dir)
    settings.owner_only(settings.private_dir(paths["storage"]))  # storage an older version left readable
    port = free_port()
    command = [sys.executable, "-m", "secantus", "--host", HOST, "--port", str(port),
               "--storage-path", str(paths["storage"]), "--log-level", "WARNING"]
    if auth:
        command.append("--auth")
    tls = _tls(data_dir, issue=True)
    command += ["--tls-cert-file", tls["cert"], "--tls-key-file", tls["key"]]
    if _mutual(tls):
        command += ["--tls-ca-file", tls["ca"], "--tls-require-client-cert"]
    with open(paths["log"], "ab") as log:
        os.fchmod(log.fileno(), 0o600)
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                umask=0o077,  # its storage files hold patient data
                                start_new_session=True)  # outlives the step process that started it
    uri = uri_for(port, data_dir=data_dir)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not _answers(uri, timeout_ms=500):
        if proc.poll() is not None or time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            raise EmbeddedMongoError(
                f"the embedded MongoDB server (secantusdb) did not start on {HOST}:{port} with storage "
                f"{paths['storage']}; its log {paths['log']} ends with:\n{_log_tail(paths['log'])}"
            )
        time.sleep(0.2)
    state = {"pid": proc.pid, "port": port, "uri": uri, "storage": str(paths["storage"]),
             "auth": auth, "tls": True, "mutual_tls": _mutual(tls), "tls_files": tls,
             "started_at": time.time()}
    settings.write_owner_only(paths["state"], json.dumps(state))
    return state


def ensure_running(data_dir: Path) -> str:
    """Start the daemon for this data directory unless it already runs; return its URI."""
    data_dir = Path(data_dir).resolve()
    with _locked(data_dir):
        state = status(data_dir)
        if state is not None and state.get("tls_files") != _tls(data_dir):
            raise EmbeddedMongoError(
                f"the embedded server for {data_dir} (pid {state['pid']}) runs with other TLS files "
                "than this process would use (HEALTHCARE_MONGO_TLS_* differ, or an older version "
                "started it without mutual TLS): stop it with `healthcare-assets mongo stop`, then "
                "start again.")
        if state is None:
            old = _read_state(data_dir)
            if old and _is_our_daemon(old["pid"]):  # alive but not answering: replace it
                _terminate(old["pid"])
            if not _paths(data_dir)["provisioned"].exists():
                _provision(data_dir)
            state = _start(data_dir, auth=True)
            _apply_environment_passwords(data_dir, state)
            _check_users(data_dir, state)
        else:
            _apply_environment_passwords(data_dir, state)
        return state["uri"]


def refused(data_dir: Path, user: str) -> credentials.AuthenticationRefusedError:
    """The error for a role's password the embedded server refused, with what to do about it."""
    variable = next(r.password_variable for r in access.roles() if r.user == user)
    stored = secrets_file.path(data_dir)
    if variable in os.environ:
        advice = (f"A password set in the environment is applied to the server with the admin_master password "
                  f"stored in {stored}, and that one was refused too or is missing. Set {variable} to the "
                  f"password the server has, or unset it (delete it from .env) to use the one in {stored}.")
    else:
        advice = (f"{stored} does not hold this server's passwords: put back the one it was provisioned with, "
                  f"or stop the server (`healthcare-assets mongo stop`) and delete {_paths(data_dir)['storage']} "
                  f"and {_paths(data_dir)['provisioned']} to provision a new one (its data is lost).")
    return credentials.refused(f"{HOST} (embedded secantusdb, storage {_paths(data_dir)['storage']})", user,
                               variable, advice, data_dir)


def _apply_environment_passwords(data_dir: Path, state: dict) -> None:
    """Give each role's user the password HEALTHCARE_<ROLE>_PASSWORD sets when it differs from the
    one the server has (recorded in secrets.env), using the admin credentials recorded there, and
    record it: a `.env` copied from .env.example, or a rotated secret, then just works. Logged
    with the variable and where it came from, never the value."""
    stored = secrets_file.read(data_dir)
    changed = sorted((r for r in access.roles() if os.environ.get(r.password_variable)
                      and stored.get(r.password_variable) not in (None, os.environ[r.password_variable])),
                     key=lambda r: r.name == "ADMIN_MASTER")  # the admin's own last: the others use it
    if not changed:
        return
    admin = access.role("ADMIN_MASTER")
    if admin.password_variable not in stored:
        return  # provisioned by a version that did not record it: a refusal will say what to do
    uri = uri_for(state["port"], admin.user, stored[admin.password_variable], data_dir)
    with pymongo.MongoClient(uri, serverSelectionTimeoutMS=10_000) as client:
        for r in changed:
            try:
                client.admin.command("updateUser", r.user, pwd=os.environ[r.password_variable])
            except pymongo.errors.OperationFailure as exc:
                if credentials.is_refused(exc):
                    raise refused(data_dir, admin.user) from None
                raise
            # recorded at once: the admin's own new password is what the next change must use
            secrets_file.store({r.password_variable: os.environ[r.password_variable]}, data_dir)
            log.warning("the embedded server's user %s now has the password of %s (it differed from the one "
                        "the server had; changed with the admin credentials in %s, and recorded there)",
                        r.user, credentials.origin(r.password_variable, data_dir), secrets_file.path(data_dir))


def _provision(data_dir: Path) -> None:
    """First start only: create roles and users while auth is off, then stop."""
    state = _start(data_dir, auth=False)
    client = pymongo.MongoClient(state["uri"], serverSelectionTimeoutMS=10_000)
    try:
        given = access.passwords(data_dir, generate=True)
        access.provision(client, given)
        # secrets.env records every password the server has, from the environment too: the server
        # stays reachable when the variable goes away, and a later change can be applied with it
        secrets_file.store({access.role(name).password_variable: pw for name, pw in given.items()}, data_dir)
    finally:
        client.close()
        _terminate(state["pid"])
    _paths(data_dir)["provisioned"].touch(mode=0o600)


def _check_users(data_dir: Path, state: dict) -> None:
    """Refuse (and stop the daemon) unless the users are exactly the roles' users, each with its
    own role only: the first start ran without authentication, and another local process could
    have added a user, or changed one, in that window."""
    expected = {(r.user, "admin"): [{"role": r.name, "db": "admin"}] for r in access.roles()}
    admin = access.role("ADMIN_MASTER")
    uri = uri_for(state["port"], admin.user, access.passwords(data_dir).get(admin.name, ""), data_dir)
    client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=10_000)
    try:
        # admin.system.users lists the users of every database (secantusdb ignores forAllDBs)
        found = {(u["user"], u["db"]): u.get("roles", []) for u in client.admin["system.users"].find()}
        problem = ", ".join(f"{user}@{db}" for (user, db), granted in sorted(found.items())
                            if expected.get((user, db)) != granted)
    except pymongo.errors.OperationFailure as exc:
        if credentials.is_refused(exc):
            raise refused(data_dir, admin.user) from None  # a wrong password says nothing about the users
        problem = f"{admin.user} cannot list them: {(exc.details or {}).get('codeName', exc.code)}"
    finally:
        client.close()
    if problem:
        _terminate(state["pid"])
        _paths(data_dir)["state"].unlink(missing_ok=True)
        raise EmbeddedMongoError(
            f"refusing the embedded server with storage {state['storage']}: its users are not exactly "
            f"the roles of healthcare_assets/domain/access.py ({problem}). Its first start runs without "
            "authentication, and another local process may have changed them then. It was stopped; find "
            f"out who did it, then delete {state['storage']} and {_paths(data_dir)['provisioned']} to "
            "provision a new one.")


def _terminate(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while _is_our_daemon(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _is_our_daemon(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(psutil.Error, ChildProcessError):
        psutil.Process(pid).wait(timeout=5)  # reap it when it is our child (tests)


def stop(data_dir: Path) -> dict | None:
    """Stop the daemon for this data directory; return the state it had, or None if none ran."""
    data_dir = Path(data_dir).resolve()
    with _locked(data_dir):
        state = _read_state(data_dir)
        if state and _is_our_daemon(state["pid"]):
            _terminate(state["pid"])
        else:
            state = None
        _paths(data_dir)["state"].unlink(missing_ok=True)
        return state
