"""The test suite follows the product's own rules: short modules, one meaning per fixture name, no
test module importing another (what they share lives in fixtures/), and no wait without a deadline
(a hung thread or process fails its test instead of hanging the run)."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import healthcare_assets_tests

SUITE = Path(healthcare_assets_tests.__file__).parent
MAX_LINES = 300  # the product's cap (test_layers.py), counted the same way
# Calls that block until another thread or process does something: each needs a timeout.
WAITS = {"join", "wait", "communicate"}
SUBPROCESS_WAITS = {"run", "call", "check_call", "check_output"}


def suite() -> dict[str, str]:
    return {str(p.relative_to(SUITE.parent)): p.read_text() for p in sorted(SUITE.rglob("*.py"))}


def long_modules(sources: dict[str, str]) -> dict[str, int]:
    return {path: n for path, text in sources.items() if (n := len(text.splitlines())) > MAX_LINES}


def fixture_names(tree: ast.Module) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for decorator in node.decorator_list:
            call = decorator if isinstance(decorator, ast.Call) else None
            target = call.func if call else decorator
            if (target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", None)) != "fixture":
                continue
            named = [k.value.value for k in (call.keywords if call else []) if k.arg == "name"]
            names.append(named[0] if named else node.name)
    return names


def duplicate_fixtures(sources: dict[str, str]) -> dict[str, list[str]]:
    where = defaultdict(list)
    for path, text in sources.items():
        for name in fixture_names(ast.parse(text)):
            where[name].append(path)
    return {name: paths for name, paths in where.items() if len(paths) > 1}


def imports_of_test_modules(sources: dict[str, str]) -> list[str]:
    """`path imports module` for every import of a test module (test_*.py) in the suite."""
    found = []
    for path, text in sources.items():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = "." * node.level + (node.module or "")
                names = [base] + [f"{base}.{alias.name}".replace("..", ".") for alias in node.names]
            else:
                continue
            found += [f"{path}:{node.lineno} imports {name}" for name in names
                      if name.rsplit(".", 1)[-1].startswith("test_")]
    return found


def waits_without_timeout(sources: dict[str, str]) -> list[str]:
    """Thread joins, event, barrier and process waits, communicate() and subprocess runs given no
    timeout. (A str.join always has its one argument; a timeout may be positional.)"""
    found = []
    for path, text in sources.items():
        for node in ast.walk(ast.parse(text)):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            method, owner = node.func.attr, node.func.value
            timed = any(k.arg == "timeout" for k in node.keywords)
            if method in WAITS and not node.args and not timed:
                found.append(f"{path}:{node.lineno} .{method}() without a timeout")
            elif (method in SUBPROCESS_WAITS and isinstance(owner, ast.Name) and owner.id == "subprocess"
                  and not timed):
                found.append(f"{path}:{node.lineno} subprocess.{method} without a timeout")
    return found


def test_no_test_module_is_longer_than_the_products_cap():
    long = long_modules(suite())
    assert not long, f"test modules over {MAX_LINES} lines: {long}"


def test_one_fixture_name_means_one_thing():
    duplicates = duplicate_fixtures(suite())
    assert not duplicates, f"fixtures defined under one name in several modules: {duplicates}"


def test_no_test_module_imports_another():
    imports = imports_of_test_modules(suite())
    assert not imports, "move what they share to healthcare_assets_tests/fixtures/:\n" + "\n".join(imports)


def test_every_wait_has_a_deadline():
    waits = waits_without_timeout(suite())
    assert not waits, "\n".join(waits)


def test_each_rule_catches_what_it_forbids():
    """The checks above pass on the suite; here each fails on a module that breaks its rule."""
    assert long_modules({"long.py": "x = 1\n" * (MAX_LINES + 1), "ok.py": "x = 1\n" * MAX_LINES}) == {
        "long.py": MAX_LINES + 1}
    fixtures = {"a.py": "import pytest\n@pytest.fixture\ndef loaded(): ...\n",
                "b.py": "from pytest import fixture\n@fixture(scope='module')\ndef loaded(): ...\n",
                "c.py": "import pytest\n@pytest.fixture(name='loaded')\ndef other(): ...\n@pytest.fixture\ndef own(): ...\n"}
    assert duplicate_fixtures(fixtures) == {"loaded": ["a.py", "b.py", "c.py"]}
    importing = {"a.py": "from healthcare_assets_tests.server.test_gdpr import cli\n",
                 "b.py": "from healthcare_assets_tests.server import test_release\n",
                 "c.py": "import healthcare_assets_tests.unit.test_layers\n",
                 "d.py": "from .test_backup import newest\n",
                 "ok.py": "from healthcare_assets_tests.fixtures.runs import materialize\n"}
    assert [line.split(":")[0] for line in imports_of_test_modules(importing)] == ["a.py", "b.py", "c.py", "d.py"]
    waiting = {"w.py": "t.join()\ne.wait()\np.communicate()\nsubprocess.run(['true'])\n"
                       "t.join(5)\ne.wait(timeout=5)\np.communicate(timeout=5)\nsubprocess.run(['true'], timeout=5)\n"
                       "', '.join(parts)\n"}
    assert [line.split(":")[1].split()[0] for line in waits_without_timeout(waiting)] == ["1", "2", "3", "4"]
