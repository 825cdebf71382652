"""One detached secantusdb daemon per data directory, found again through a state file, started under a lock.
Its roles are no security boundary (bulkWrite is open to every user): the OS user is, with owner-only files,
umask 077 and mutual TLS, which also closes the first start's window without auth (docs/security.md)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote_plus

import psutil
import pymongo

from healthcare_assets.plumbing import certificates, settings

HOST = "127.0.0.1"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


class EmbeddedMongoError(RuntimeError):
    pass


def paths(data_dir: Path) -> dict[str, Path]:
    return {"storage": data_dir / "mongo", "state": data_dir / "mongo.json", "lock": data_dir / "mongo.lock",
            "log": data_dir / "mongo.log", "provisioned": data_dir / "mongo.provisioned"}


def _tls(data_dir: Path, issue: bool = False) -> dict[str, str]:
    """The TLS files: HEALTHCARE_MONGO_TLS_* when cert and key are set, else the installation's own."""
    if {"cert", "key"} <= set(found := settings.embedded_tls_files()):
        return found
    folder = Path(data_dir) / "tls"
    if issue:
        certificates.ensure(settings.private_dir(folder))
    return {k: str(v) for k, v in certificates.files(folder).items()}


def _mutual(tls: dict[str, str]) -> bool:
    return {"ca", "client"} <= set(tls)


def uri_for(port: int, user: str | None = None, password: str | None = None, data_dir: Path | None = None) -> str:
    """The daemon on `port`, with the client certificate of `data_dir`'s installation (default: this one)."""
    credentials = f"{quote_plus(user)}:{quote_plus(password)}@" if user else ""
    options = "directConnection=true" + ("&authSource=admin" if user else "") + "&tls=true"
    tls = _tls(data_dir or settings.data_dir())
    for name, option in (("ca", "tlsCAFile"), ("client", "tlsCertificateKeyFile")):
        if name in tls:
            options += f"&{option}={quote_plus(tls[name])}"
    return f"mongodb://{credentials}{HOST}:{port}/?{options}"


@contextlib.contextmanager
def _locked(data_dir: Path):
    settings.private_dir(data_dir)
    with open(paths(data_dir)["lock"], "w") as lock:
        os.fchmod(lock.fileno(), 0o600)
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def free_port() -> int:
    """Below Linux's ephemeral range (32768+): no outgoing connection takes it before the server binds."""
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
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE and "secantus" in " ".join(proc.cmdline())  # a recycled pid
    except psutil.Error:
        return False


def read_state(data_dir: Path) -> dict | None:
    try:
        return json.loads(paths(data_dir)["state"].read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def status(data_dir: Path) -> dict | None:
    state = read_state(data_dir)
    if state and _is_our_daemon(state["pid"]) and _answers(state["uri"]):
        return state
    return None


def _log_tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def _start(data_dir: Path, auth: bool) -> dict:
    files = paths(data_dir)
    settings.owner_only(settings.private_dir(files["storage"]))  # storage an older version left readable
    port = free_port()
    command = [sys.executable, "-m", "secantus", "--host", HOST, "--port", str(port),
               "--storage-path", str(files["storage"]), "--log-level", "WARNING"]
    if auth:
        command.append("--auth")
    tls = _tls(data_dir, issue=True)
    command += ["--tls-cert-file", tls["cert"], "--tls-key-file", tls["key"]]
    if _mutual(tls):
        command += ["--tls-ca-file", tls["ca"], "--tls-require-client-cert"]
    with open(files["log"], "ab") as log:
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
            raise EmbeddedMongoError(f"the embedded MongoDB server (secantusdb) did not start on {HOST}:{port} with "
                                     f"storage {files['storage']}; its log {files['log']} ends with:\n"
                                     f"{_log_tail(files['log'])}")
        time.sleep(0.2)
    state = {"pid": proc.pid, "port": port, "uri": uri, "storage": str(files["storage"]), "auth": auth, "tls": True,
             "mutual_tls": _mutual(tls), "tls_files": tls, "started_at": time.time()}
    settings.write_owner_only(files["state"], json.dumps(state))
    return state


def ensure_running(data_dir: Path, first_start: Callable[[dict], None] | None = None,
                   started: Callable[[dict, bool], None] | None = None) -> dict:
    """Start the daemon unless it runs (a new storage first without auth, for `first_start`); its state."""
    data_dir = Path(data_dir).resolve()
    with _locked(data_dir):
        state = status(data_dir)
        if state is not None and state.get("tls_files") != _tls(data_dir):
            raise EmbeddedMongoError(
                f"the embedded server for {data_dir} (pid {state['pid']}) runs with other TLS files "
                "than this process would use (HEALTHCARE_MONGO_TLS_* differ, or an older version "
                "started it without mutual TLS): stop it with `healthcare-assets mongo stop`, then "
                "start again.")
        fresh = state is None
        if fresh:
            old = read_state(data_dir)
            if old and _is_our_daemon(old["pid"]):  # alive but not answering: replace it
                terminate(old["pid"])
            if not paths(data_dir)["provisioned"].exists():
                _first_start(data_dir, first_start)
            state = _start(data_dir, auth=True)
        if started:
            started(state, fresh)
        return state


def _first_start(data_dir: Path, first_start: Callable[[dict], None] | None) -> None:
    state = _start(data_dir, auth=False)
    try:
        if first_start:
            first_start(state)
    finally:
        terminate(state["pid"])
    paths(data_dir)["provisioned"].touch(mode=0o600)


def discard(data_dir: Path, state: dict) -> None:
    """Stop a daemon that must not serve (called under ensure_running's lock) and forget it."""
    terminate(state["pid"])
    paths(data_dir)["state"].unlink(missing_ok=True)


def terminate(pid: int) -> None:
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
    data_dir = Path(data_dir).resolve()
    if not data_dir.exists():
        return None  # nothing to stop, and no data directory to create for it
    with _locked(data_dir):
        state = read_state(data_dir)
        if state and _is_our_daemon(state["pid"]):
            terminate(state["pid"])
        else:
            state = None
        paths(data_dir)["state"].unlink(missing_ok=True)
        return state
