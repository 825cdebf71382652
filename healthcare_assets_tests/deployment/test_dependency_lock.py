"""The dependency locks (`make lock`): the whole dependency tree pinned with hashes, in step with
pyproject.toml, and the only source the image and `make install` install from."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from healthcare_assets_tests.fixtures.environment import REPO

PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
RUNTIME, DEV, NODEPS = (REPO / name for name in ("requirements.lock", "requirements-dev.lock", "requirements-nodeps.lock"))
SHA256 = re.compile(r"sha256:[0-9a-f]{64}")


def parse_lock(path: Path) -> dict[str, tuple[str, list[str]]]:
    """Package name -> (pinned version, hashes), from a requirements file with --hash options."""
    text = re.sub(r"\s*\\\n\s*", " ", path.read_text())
    entries = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        requirement, *hashes = line.split(" --hash=")
        parsed = Requirement(requirement)
        pins = [s.version for s in parsed.specifier if s.operator == "=="]
        assert len(pins) == 1 and len(parsed.specifier) == 1, f"{path.name}: not pinned exactly: {line}"
        name = canonicalize_name(parsed.name)
        assert name not in entries, f"{path.name}: {name} twice"
        entries[name] = (pins[0], hashes)
    return entries


def direct(extras: tuple[str, ...]) -> list[Requirement]:
    """What pyproject.toml asks for with these extras (its self-references expanded), plus the
    build backend that builds the project itself."""
    project = PROJECT["project"]
    wanted = [Requirement(r) for r in project["dependencies"] + PROJECT["build-system"]["requires"]]
    for extra in extras:
        for requirement in map(Requirement, project["optional-dependencies"][extra]):
            if canonicalize_name(requirement.name) == canonicalize_name(project["name"]):
                wanted += direct(tuple(requirement.extras))
            else:
                wanted.append(requirement)
    return wanted


LOCKS = {RUNTIME: ("deploy",), DEV: ("dev",)}


@pytest.mark.parametrize("lock", LOCKS, ids=lambda p: p.name)
def test_every_entry_is_pinned_with_hashes(lock):
    entries = parse_lock(lock)
    assert len(entries) > 50  # the whole tree, not the direct dependencies only
    for name, (_, hashes) in entries.items():
        assert hashes and all(SHA256.fullmatch(h) for h in hashes), f"{lock.name}: {name} has no sha256 hash"


@pytest.mark.parametrize("lock", LOCKS, ids=lambda p: p.name)
def test_every_direct_dependency_is_locked_at_a_version_pyproject_allows(lock):
    entries = parse_lock(lock)
    for requirement in direct(LOCKS[lock]):
        name = canonicalize_name(requirement.name)
        assert name in entries, f"{lock.name} lacks {requirement} (run `make lock`)"
        version = entries[name][0]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{lock.name} pins {name}=={version}, pyproject.toml asks for {requirement} (run `make lock`)")


@pytest.mark.parametrize("lock", LOCKS, ids=lambda p: p.name)
def test_the_lock_holds_the_whole_tree(lock):
    """Every package the direct dependencies need, with their extras, down to the leaves (read from
    the installed packages' metadata, for this Python on this platform) is in the lock."""
    entries = parse_lock(lock)
    seen: set[tuple[str, frozenset]] = set()
    todo = [(r, frozenset(r.extras)) for r in direct(LOCKS[lock])]
    while todo:
        requirement, extras = todo.pop()
        name = canonicalize_name(requirement.name)
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        assert name in entries, f"{lock.name} lacks {name}, needed by the tree (run `make lock`)"
        for needed in map(Requirement, importlib.metadata.requires(name) or []):
            if needed.marker is None or any(needed.marker.evaluate({**default_environment(), "extra": e})
                                            for e in extras | {""}):
                todo.append((needed, frozenset(needed.extras)))


def test_the_locks_agree_where_they_overlap():
    runtime, dev = parse_lock(RUNTIME), parse_lock(DEV)
    assert set(runtime) <= set(dev)
    assert {name: runtime[name][0] for name in runtime} == {name: dev[name][0] for name in runtime}


def test_pycanon_goes_in_hashed_without_its_own_pins():
    """pycanon pins exact pandas/numpy versions for features the privacy audit does not use."""
    assert [(name, version) for name, (version, _) in parse_lock(NODEPS).items()] == [("pycanon", "1.3.6")]
    assert all(SHA256.fullmatch(h) for h in parse_lock(NODEPS)["pycanon"][1])


def test_make_install_installs_from_the_locks_only():
    recipe = re.sub(r"\\\n\s*", " ", (REPO / "Makefile").read_text())
    installed = recipe.split("$(BIN)/.installed:", 1)[1].split("\n\n", 1)[0]
    installs = [i.strip() for i in re.findall(r"\$\(BIN\)/pip install ([^&;}]*)", installed)]
    assert installs == ["--upgrade pip", "--require-hashes -r requirements-dev.lock",
                        "--no-deps --no-build-isolation -e .",
                        "--no-deps --require-hashes -r requirements-nodeps.lock"], installs
    prerequisites = installed.split("\n", 1)[0].split()
    assert {"pyproject.toml", "requirements-dev.lock", "requirements-nodeps.lock"} <= set(prerequisites)
