"""Every definition loads, and every stage is gated by blocking checks."""

import itertools

import dagster as dg

from healthcare_assets.defs.anonymize import analysts_release_audit
from healthcare_assets_tests.fixtures.runs import DEFS

CHAIN = ["raw_csv", "cleaned_frame", "quality_report", "mongo_hospitalizations", "anonymized_view", "index_benchmarks"]


def test_definitions_load():
    dg.Definitions.validate_loadable(DEFS)
    graph = DEFS.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert set(CHAIN) <= keys


def test_chain_order():
    graph = DEFS.resolve_asset_graph()
    for upstream, downstream in itertools.pairwise(CHAIN):
        parents = {k.to_user_string() for k in graph.get(dg.AssetKey(downstream)).parent_keys}
        assert upstream in parents, f"{downstream} should depend on {upstream}"


def test_every_asset_has_group_kinds_and_blocking_checks():
    """Every stage is gated by blocking checks; the only non-blocking ones are the scheduled
    whole-collection audit, which no drop runs."""
    graph = DEFS.resolve_asset_graph()
    specs = [spec for d in [*DEFS.assets, *DEFS.asset_checks] for spec in d.check_specs]
    audit = {spec.key for spec in analysts_release_audit.check_specs}
    assert audit and all(not spec.blocking for spec in specs if spec.key in audit)
    for name in CHAIN:
        node = graph.get(dg.AssetKey(name))
        assert node.group_name and node.group_name != "default", name
        assert node.kinds, name
        gates = [spec for spec in specs if spec.asset_key == dg.AssetKey(name) and spec.key not in audit]
        assert gates, f"{name} has no asset check"
        assert all(spec.blocking for spec in gates), name


def test_a_drop_runs_every_gate_and_neither_the_audit_nor_the_benchmark():
    job = DEFS.resolve_job_def("s3_csv_drop_job")
    selected = job.asset_layer.asset_graph
    assert {k.to_user_string() for k in selected.executable_asset_keys} == set(CHAIN) - {"index_benchmarks"}
    assert not {spec.key for spec in analysts_release_audit.check_specs} & set(selected.asset_check_keys)
