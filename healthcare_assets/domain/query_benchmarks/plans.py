"""What the server plans for a question and what executing it examines, and the client's indexes
created where they are missing."""

from __future__ import annotations

import time
from dataclasses import dataclass

from pymongo import IndexModel
from pymongo.collection import Collection

from healthcare_assets.domain.query_benchmarks.suite import INDEXES, Query


@dataclass(frozen=True)
class QueryPlan:
    """The winning plan's scan stage and index; with execution, what it examined and returned."""

    stage: str  # "IXSCAN", "COLLSCAN", both joined by "+", or "none"
    index: str | None  # set when the plan has a single scan
    key_pattern: list[tuple[str, int]] | None
    keys_examined: int | None = None
    docs_examined: int | None = None
    returned: int | None = None

    def uses_intended_index(self, query: Query) -> bool:
        intended = [(f, d) for f, d in INDEXES[query.index]]
        return self.stage == "IXSCAN" and [(f, int(d)) for f, d in self.key_pattern] == intended


@dataclass(frozen=True)
class PlanCheck:
    """One question of the suite, the index meant for it, and the plan the server picks now."""

    query: str
    intended_index: str
    stage: str
    index: str | None
    ok: bool


def _first(node, key: str):
    """The first value stored under `key` anywhere in an explain reply (its shape varies by
    server and by find vs aggregate: top level, or under stages[0].$cursor)."""
    if isinstance(node, dict):
        if key in node:
            return node[key]
        node = list(node.values())
    if isinstance(node, list):
        for value in node:
            found = _first(value, key)
            if found is not None:
                return found
    return None


def _scans(node) -> list[dict]:
    """The IXSCAN / COLLSCAN nodes of a plan tree."""
    if isinstance(node, dict):
        own = [node] if node.get("stage") in ("IXSCAN", "COLLSCAN") else []
        return own + _scans(list(node.values()))
    if isinstance(node, list):
        return [scan for value in node for scan in _scans(value)]
    return []


def explain(collection: Collection, query: Query, hint: dict | None = None, execute: bool = True) -> QueryPlan:
    """The winning plan's scan stage and index, plus what executing it examined."""
    verbosity = "executionStats" if execute else "queryPlanner"
    reply = collection.database.command("explain", query.command(collection, hint), verbosity=verbosity)
    scans = _scans(_first(reply, "winningPlan"))
    single = scans[0] if len(scans) == 1 else None
    plan = {"stage": "+".join(s["stage"] for s in scans) or "none",
            "index": single.get("indexName") if single else None,
            "key_pattern": list(single.get("keyPattern", {}).items()) if single else None}
    if not execute:
        return QueryPlan(**plan)
    stats = _first(reply, "executionStats") or {}
    return QueryPlan(**plan, keys_examined=stats.get("totalKeysExamined"), docs_examined=stats.get("totalDocsExamined"),
                returned=stats.get("nReturned"))


def plan_checks(collection: Collection, suite: list[Query]) -> list[PlanCheck]:
    """For each query, the plan the server picks now (planner only, nothing executed)."""
    checks = []
    for query in suite:
        plan = explain(collection, query, execute=False)
        checks.append(PlanCheck(query.name, query.index, plan.stage, plan.index, plan.uses_intended_index(query)))
    return checks


def ensure_indexes(collection: Collection) -> tuple[list[dict], float]:
    """Create the client's indexes that are missing (one call: the server builds them in one
    pass, 9 s instead of 7 x 3.5 s on the embedded server); say which were built."""
    existing = {tuple((f, int(d)) for f, d in info["key"]) for info in collection.index_information().values()}
    missing = [name for name, keys in INDEXES.items() if tuple(keys) not in existing]
    started = time.perf_counter()
    if missing:
        collection.create_indexes([IndexModel(INDEXES[name], name=name) for name in missing])
    seconds = time.perf_counter() - started
    return [{"name": name, "keys": keys, "built_now": name in missing} for name, keys in INDEXES.items()], seconds


def ensure_sample_index(sample: Collection, name: str, built: set[str]) -> None:
    """One of the client's indexes on the scan sample, built once per run."""
    if name not in built:
        sample.create_indexes([IndexModel(INDEXES[name], name=name)])
        built.add(name)
