"""Every blocking check says, when it fails, the figure, the limit, the setting and the file to look
at, through the one shared helper; the helper leaves a passing check's metadata as it was."""

import ast
import inspect
import textwrap
from pathlib import Path

import dagster as dg

from healthcare_assets.defs import verdicts
from healthcare_assets.defs.release_checks import Outcome, check_results
from healthcare_assets.domain.release.findings import Findings
from healthcare_assets_tests.fixtures.runs import DEFS


def called_functions(fn, seen: set) -> None:
    """`fn` and every function of the package it calls, directly or through others."""
    if fn in seen or not getattr(fn, "__module__", "").startswith("healthcare_assets"):
        return
    try:
        source = inspect.getsource(fn)
    except OSError:  # generated (a dataclass's __init__)
        return
    seen.add(fn)
    for node in ast.walk(ast.parse(textwrap.dedent(source))):
        if not isinstance(node, ast.Call):
            continue
        target = node.func
        if isinstance(target, ast.Name):
            found = fn.__globals__.get(target.id)
        elif isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name):
            found = getattr(fn.__globals__.get(target.value.id), target.attr, None)
        else:
            continue
        if inspect.isfunction(found):
            called_functions(found, seen)
        elif inspect.isclass(found) and found.__module__.startswith("healthcare_assets"):
            for method in vars(found).values():
                if inspect.isfunction(method):
                    called_functions(method, seen)


def test_every_blocking_check_fails_through_the_shared_helper():
    checked = set()
    for definition in {id(d): d for d in [*DEFS.assets, *DEFS.asset_checks]}.values():
        names = [spec.name for spec in definition.check_specs if spec.blocking]
        if not names:
            continue
        fn = definition.node_def.compute_fn
        fn = getattr(fn, "decorated_fn", fn)
        reached: set = set()
        called_functions(fn, reached)
        assert verdicts.verdict in reached, f"{fn.__name__} does not report through verdicts.verdict"
        sources = "".join(inspect.getsource(f) for f in reached)
        for name in names:  # each check its own verdict, by name (one check per function: the function's)
            assert f'"{name}"' in sources or (names == [name] and fn.__name__ == name), name
        checked.update(names)
    assert {"quarantine_within_ceiling", "staged_rows_match_file", "all_expectations_pass",
            "documents_pass_validator", "k_anonymity_at_least_11", "every_query_uses_its_index"} <= checked


def test_a_failed_check_says_four_things_and_a_passed_one_keeps_its_metadata(tmp_path):
    why = verdicts.Why("3 of 10 rows are bad", "the ceiling is 5%", "HEALTHCARE_QUARANTINE_CEILING", tmp_path / "q.csv")
    failed = verdicts.verdict("a_check", False, {"rows": 10}, why)
    assert failed.description == (f"3 of 10 rows are bad: the ceiling is 5%; setting: HEALTHCARE_QUARANTINE_CEILING; "
                                  f"look at {tmp_path / 'q.csv'}")
    values = {k: v.value for k, v in failed.metadata.items()}
    assert values == {"rows": 10, "figure": "3 of 10 rows are bad", "limit": "the ceiling is 5%",
                      "setting": "HEALTHCARE_QUARANTINE_CEILING", "look_at": (tmp_path / "q.csv").as_uri()}
    assert isinstance(failed.metadata["look_at"], dg.UrlMetadataValue)
    passed = verdicts.verdict("a_check", True, {"rows": 10}, why)
    assert {k: v.value for k, v in passed.metadata.items()} == {"rows": 10} and passed.description is None


def test_a_refused_release_names_the_figure_and_the_policy_constant():
    k, share = Outcome(False, {"k_reached_patients": 4}), Outcome(False, {"largest_share": 0.75})
    said = {r.check_name: r.description for r in check_results(Findings(str), k, share) if not r.passed}
    assert set(said) == {"k_anonymity_at_least_11", "no_sensitive_value_over_half"}
    assert "reaches 4 distinct patients: at least 11; setting: none: K_ANONYMITY in" in said["k_anonymity_at_least_11"]
    assert "75% of a released set: at most 50%; setting: none: MAX_SHARE" in said["no_sensitive_value_over_half"]
    assert all(Path(text.rsplit("look at ", 1)[1]).name for text in said.values())
