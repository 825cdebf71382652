"""The package's shape: layers that import only downwards, no import cycle, short modules."""

from __future__ import annotations

import ast
from pathlib import Path

import healthcare_assets

PACKAGE = Path(healthcare_assets.__file__).parent
# Each layer may import the layers after it, never one before it.
LAYERS = ["tooling", "definitions", "defs", "domain", "plumbing"]
MAX_LINES = 300


def modules() -> dict[str, Path]:
    return {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): p
            for p in PACKAGE.rglob("*.py")}


def imports(path: Path) -> set[str]:
    """Every healthcare_assets module a file imports, at its top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {f"{node.module}.{alias.name}" for alias in node.names} | {node.module}
    known = modules()
    return {name for name in found if name in known and name != "healthcare_assets"}


def layer(module: str) -> str:
    return module.split(".")[1]


def test_every_module_is_in_a_layer():
    assert {layer(m) for m in modules() if m.count(".") >= 1} <= set(LAYERS) | {"__init__"}


def test_layers_import_only_the_layers_below_them():
    upward = sorted(f"{module} imports {target}" for module, path in modules().items() if "." in module
                    for target in imports(path) if "." in target
                    and LAYERS.index(layer(target)) < LAYERS.index(layer(module)))
    assert not upward, "\n".join(upward)


def test_no_import_cycle():
    graph = {module: {t for t in imports(path) if t.count(".") >= 2 or t.endswith(".definitions")}
             for module, path in modules().items()}
    cycles, state = [], {}

    def visit(module: str, stack: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                cycles.append(" -> ".join(stack[stack.index(target):] + [module, target]) if target in stack
                              else f"{module} -> {target}")
            elif target not in state:
                visit(target, stack + [module])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
    assert not cycles, "\n".join(cycles)


def test_no_module_is_longer_than_a_screenful_or_five():
    long = {m: n for m, p in modules().items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_the_environment_is_read_in_at_most_three_places_outside_the_cli_and_the_bench():
    """Configuration reaches the code as arguments and resources built from one read
    (settings.environment()), never from os.environ here and there."""
    cli = ("tooling/cli.py", "tooling/runs.py", "tooling/summary.py", "tooling/*_commands.py", "tooling/bench/**/*.py")
    exempt = {p for pattern in cli for p in PACKAGE.glob(pattern)}
    reads = [f"{path.relative_to(PACKAGE)}:{node.lineno}" for path in sorted(PACKAGE.rglob("*.py")) if path not in exempt
             for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os"
             and node.attr in ("environ", "environb", "getenv", "getenvb")
             or isinstance(node, ast.ImportFrom) and node.module == "os"
             and {a.name for a in node.names} & {"environ", "environb", "getenv", "getenvb"}]
    assert len(reads) <= 3, f"{len(reads)} reads of the environment: {reads}"
