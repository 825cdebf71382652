"""The zero-infrastructure default: one local secantusdb daemon per data directory.

Every Dagster step runs in its own process, so the daemon is started detached and found again
through a state file; a file lock makes sure concurrent runs never start two daemons on one
storage directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pymongo

HOST = "127.0.0.1"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


class EmbeddedMongoError(RuntimeError):
    pass


def _paths(data_dir: Path) -> dict[str, Path]:
    return {
        "storage": data_dir / "mongo",
        "state": data_dir / "mongo.json",
        "lock": data_dir / "mongo.lock",
        "log": data_dir / "mongo.log",
    }


def uri_for(port: int) -> str:
    return f"mongodb://{HOST}:{port}/?directConnection=true"


@contextlib.contextmanager
def _locked(data_dir: Path):
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(_paths(data_dir)["lock"], "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _answers(uri: str, timeout_ms: int = 1000) -> bool:
    client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms)
    try:
        client.admin.command("ping")
        return True
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


def _start(data_dir: Path) -> dict:
    paths = _paths(data_dir)
    paths["storage"].mkdir(parents=True, exist_ok=True)
    port = _free_port()
    command = [sys.executable, "-m", "secantus", "--host", HOST, "--port", str(port),
               "--storage-path", str(paths["storage"]), "--log-level", "WARNING"]
    with open(paths["log"], "ab") as log:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # outlives the step process that started it
    uri = uri_for(port)
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
             "started_at": time.time()}
    paths["state"].write_text(json.dumps(state))
    return state


def ensure_running(data_dir: Path) -> str:
    """Start the daemon for this data directory unless it already runs; return its URI."""
    data_dir = Path(data_dir).resolve()
    with _locked(data_dir):
        state = status(data_dir)
        if state is None:
            old = _read_state(data_dir)
            if old and _is_our_daemon(old["pid"]):  # alive but not answering: replace it
                _terminate(old["pid"])
            state = _start(data_dir)
        return state["uri"]


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
