"""The command matrix: every role × every command the embedded server accepts, on the embedded
server and, when HEALTHCARE_TEST_MONGODB7_URI names one, on MongoDB 7; cells the embedded server
leaves open (EMBEDDED_GAPS) are strict expected failures there. configureFailPoint cells arm a
fail point and see it fire."""

import contextlib

import pymongo
import pytest

from healthcare_assets_tests.fixtures.access_matrix import (
    EMBEDDED_GAPS,
    EMBEDDED_ONLY_FOR,
    EXPECTED,
    FAIL_POINT_APP,
    FAIL_POINT_CODE,
    PROBES,
    command_probes,
)


def answer(client: pymongo.MongoClient, database: str, command: dict) -> bool | None:
    """True when the role got past authorization (the command ran, or failed for another reason),
    False when it was refused as Unauthorized, None when the server has no such command."""
    try:
        client[database].command(command)
    except pymongo.errors.OperationFailure as exc:
        if exc.code in (13, 59):  # Unauthorized, CommandNotFound
            return None if exc.code == 59 else False
    return True


@pytest.mark.parametrize("probe", PROBES)
@pytest.mark.parametrize("role", list(EXPECTED))
def test_command_matrix(matrix_server, role, probe, request):
    may, database, command = command_probes(matrix_server["dbs"])[probe]
    name = next(iter(command))
    if matrix_server["embedded"]:
        may = EMBEDDED_ONLY_FOR.get(name, may)
        if name in EMBEDDED_GAPS and role not in may:
            request.node.add_marker(pytest.mark.xfail(strict=True, raises=AssertionError, reason=f"{matrix_server['name']}: {EMBEDDED_GAPS[name]}"))
    if name == "configureFailPoint":
        check_fail_point(matrix_server, role, may, database, command)
        return
    with matrix_server["connect_as"](role) as client:
        got = answer(client, database, command)
    if got is None:  # e.g. bulkWrite before MongoDB 8, the embedded server's own commands on MongoDB
        if role in may:
            pytest.skip(f"{matrix_server['name']} has no command {name}")
        got = False
    assert got == (role in may), f"on {matrix_server['name']}, {role} {'ran' if got else 'was refused'} {probe}"


def runs_test_commands(matrix_server) -> bool:
    """Whether the server runs mongod's test-only commands: only then does an authorized
    configureFailPoint arm anything (the embedded server answers ok and arms nothing otherwise)."""
    with matrix_server["connect_as"]("ADMIN_MASTER") as admin:
        try:
            return bool(admin.admin.command("getParameter", 1, enableTestCommands=1)["enableTestCommands"])
        except (pymongo.errors.OperationFailure, KeyError):
            return False


def check_fail_point(matrix_server, role: str, may: set[str], database: str, command: dict) -> None:
    """The configureFailPoint cell, judged by what the fail point caused: the probing connection's
    next ping fails with FAIL_POINT_CODE exactly when the role may arm it and the server runs test
    commands. A server without them (the embedded server as installed, MongoDB by default) has no
    such command for anyone, and nothing is armed."""
    armable = runs_test_commands(matrix_server)
    try:
        with matrix_server["connect_as"](role, appname=FAIL_POINT_APP) as client:
            got = answer(client, database, command)
            try:
                client.admin.command("ping")
                fired = False
            except pymongo.errors.OperationFailure as exc:
                assert exc.code == FAIL_POINT_CODE, exc
                fired = True
    finally:  # never left armed for the module's other cells
        with matrix_server["connect_as"]("ADMIN_MASTER") as admin, contextlib.suppress(pymongo.errors.OperationFailure):
            admin.admin.command({"configureFailPoint": "failCommand", "mode": "off"})
    if got is None:
        assert not armable, f"{matrix_server['name']} says it runs test commands but has no configureFailPoint"
    else:
        assert got == (role in may), f"on {matrix_server['name']}, {role} {'ran' if got else 'was refused'} configureFailPoint"
    assert fired == (role in may and armable), (
        f"on {matrix_server['name']} (test commands {'on' if armable else 'off'}), {role}'s fail point "
        f"{'made' if fired else 'did not make'} its next ping fail")


def test_the_matrix_holds_every_command_of_the_embedded_server(matrix_server):
    if not matrix_server["embedded"]:
        pytest.skip(f"{matrix_server['name']} enforces its own table for its own commands; the matrix holds the "
                    "embedded server's")
    with matrix_server["connect_as"]("ADMIN_MASTER") as client:
        try:
            accepted = set(client.admin.command("listCommands")["commands"])
        except pymongo.errors.OperationFailure as exc:
            assert exc.code == 59, exc
            # no listCommands in this version: its dispatch table
            from secantus.commands import _HANDLERS

            accepted = set(_HANDLERS)
    probed = {next(iter(command)) for _, _, command in command_probes(matrix_server["dbs"]).values()}
    assert accepted - probed == set(), "commands missing from the matrix"
    assert probed - accepted == set(), "commands the server does not accept"
