"""Every definition loads, and every stage is gated by blocking checks."""

import itertools

import dagster as dg

from healthcare_assets.definitions import defs

CHAIN = ["raw_csv", "cleaned_frame", "quality_report", "mongo_hospitalizations", "anonymized_view", "index_benchmarks"]


def test_definitions_load():
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert set(CHAIN) <= keys


def test_chain_order():
    graph = defs.resolve_asset_graph()
    for upstream, downstream in itertools.pairwise(CHAIN):
        parents = {k.to_user_string() for k in graph.get(dg.AssetKey(downstream)).parent_keys}
        assert upstream in parents, f"{downstream} should depend on {upstream}"


def test_every_asset_has_group_kinds_and_blocking_checks():
    graph = defs.resolve_asset_graph()
    for name in CHAIN:
        node = graph.get(dg.AssetKey(name))
        assert node.group_name and node.group_name != "default", name
        assert node.kinds, name
        checks = [c for c in defs.asset_checks for spec in c.check_specs if spec.asset_key == dg.AssetKey(name)]
        assert checks, f"{name} has no asset check"
        assert all(spec.blocking for c in checks for spec in c.check_specs if spec.asset_key == dg.AssetKey(name))
