"""The package's shape: layers that import only downwards, no import cycle, short modules."""

from __future__ import annotations

import ast
import re
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


def layer_modules(name: str) -> dict[str, Path]:
    return {m: p for m, p in modules().items() if m.count(".") >= 1 and layer(m) == name}


def test_domain_never_imports_dagster():
    """domain/ is the pipeline's logic as plain Python; defs/ turns its results into Dagster's."""
    found = []
    for module, path in layer_modules("domain").items():
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            found += [f"{module} imports {n}" for n in names if n.split(".")[0].startswith("dagster")]
    assert not found, "\n".join(found)


# Words every data system uses, that the record's schema happens to use as field names too.
GENERIC_WORDS = {"_id", "name", "Name", "metadata", "sources"}


def record_field_names() -> set[str]:
    """Every field name of a hospital record: cleaned columns, CSV headers, document model keys."""
    from healthcare_assets.domain import schema

    def keys(node: dict) -> set[str]:
        found = set()
        for key, sub in node.get("properties", {}).items():
            found |= {key} | keys(sub) | keys(sub.get("items", {}))
        return found

    return (set(schema.CLEANED_COLUMNS) | set(schema.CSV_COLUMNS.values())
            | keys(schema.DOCUMENT_JSON_SCHEMA)) - GENERIC_WORDS


def test_plumbing_knows_nothing_of_hospital_records():
    names = record_field_names()
    assert {"patient_id", "medical_condition", "Blood Type", "personal_info"} <= names
    pattern = re.compile(r"(?<![\w])(" + "|".join(map(re.escape, sorted(names))) + r")(?![\w])")
    found = sorted({f"{module}: {match}" for module, path in layer_modules("plumbing").items()
                    for match in pattern.findall(path.read_text())})
    assert not found, "\n".join(found)


DEFS_GLUE_LINES = 30  # a screenful of glue; more is logic, which belongs in domain/


def test_defs_hold_dagster_objects_and_thin_glue():
    """Every top-level function or class in defs/ is a Dagster definition (a dg decorator, a dg base
    class), builds a Dagster object (its return annotation names one), or is short glue."""
    big = []
    for module, path in layer_modules("defs").items():
        for node in ast.parse(path.read_text()).body:
            if not isinstance(node, ast.FunctionDef | ast.ClassDef):
                continue
            dagster = [*node.decorator_list, *(node.bases if isinstance(node, ast.ClassDef) else [node.returns])]
            if any(d is not None and "dg." in ast.unparse(d) for d in dagster):
                continue
            if (lines := node.end_lineno - node.lineno + 1) > DEFS_GLUE_LINES:
                big.append(f"{module}.{node.name}: {lines} lines")
    assert not big, "\n".join(big)


SERVER_KIND = re.compile(r"secantus", re.IGNORECASE)
SERVER_QUESTIONS = {"buildinfo", "hello", "ismaster", "serverstatus"}


def test_only_plumbing_asks_which_server_it_talks_to():
    """Workarounds for the embedded server live in plumbing/ (MongoResource, scans, document_counts):
    no comparison naming the server's kind, no command asking the server what it is, elsewhere."""
    found = []
    for module, path in modules().items():
        if "." in module and layer(module) == "plumbing":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare | ast.If | ast.IfExp) and SERVER_KIND.search(
                    ast.unparse(node.test if isinstance(node, ast.If | ast.IfExp) else node)):
                found.append(f"{module}:{node.lineno} {ast.unparse(node)[:80]}")
            if isinstance(node, ast.Call) and any(isinstance(a, ast.Constant) and str(a.value).lower()
                                                  in SERVER_QUESTIONS for a in node.args):
                found.append(f"{module}:{node.lineno} {ast.unparse(node)[:80]}")
    assert not found, "\n".join(found)


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


# settings reads the environment for everyone; expectations.py only sets Great Expectations' analytics switch off.
READS_LEFT = {"plumbing/settings.py", "domain/expectations.py"}
ENVIRONMENT_READS = {"os.environ", "os.environb", "os.getenv", "os.getenvb", "settings.environment"}


def test_domain_and_plumbing_take_their_configuration_as_arguments():
    """Keys, URIs, names and limits come from resources resolved when a run starts (or a command's), not from a read."""
    checked = [path for layer in ("domain", "plumbing") for path in sorted((PACKAGE / layer).rglob("*.py"))
               if str(path.relative_to(PACKAGE)) not in READS_LEFT]
    reads = [f"{path.relative_to(PACKAGE)}:{node.lineno} {ast.unparse(node)}" for path in checked
             for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.Attribute) and ast.unparse(node) in ENVIRONMENT_READS
             or isinstance(node, ast.ImportFrom) and {f"{(node.module or '').rpartition('.')[2]}.{a.name}"
                                                      for a in node.names} & ENVIRONMENT_READS]
    assert not reads, "\n".join(reads)
