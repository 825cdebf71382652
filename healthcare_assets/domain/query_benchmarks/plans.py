"""What the server plans for a question and what executing it examines; the client's indexes created if missing."""

from __future__ import annotations

import time
from dataclasses import dataclass

from pymongo import IndexModel
from pymongo.collection import Collection

from healthcare_assets.domain.query_benchmarks.suite import INDEXES, Query


@dataclass(frozen=True)
class QueryPlan:
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
    query: str
    intended_index: str
    stage: str
    index: str | None
    ok: bool


def _first(node, key: str):
    """The first value under `key` anywhere in an explain reply (its shape varies by server, find vs aggregate)."""
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
    if isinstance(node, dict):
        own = [node] if node.get("stage") in ("IXSCAN", "COLLSCAN") else []
        return own + _scans(list(node.values()))
    if isinstance(node, list):
        return [scan for value in node for scan in _scans(value)]
    return []


def explain(collection: Collection, query: Query, hint: dict | None = None, execute: bool = True) -> QueryPlan:
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
    checks = []
    for query in suite:
        plan = explain(collection, query, execute=False)
        checks.append(PlanCheck(query.name, query.index, plan.stage, plan.index, plan.uses_intended_index(query)))
    return checks


def ensure_indexes(collection: Collection) -> tuple[list[dict], float]:
    """The missing ones in one call: the server builds them in one pass (9 s, not 7 x 3.5 s, on the embedded server)."""
    existing = {tuple((f, int(d)) for f, d in info["key"]) for info in collection.index_information().values()}
    missing = [name for name, keys in INDEXES.items() if tuple(keys) not in existing]
    started = time.perf_counter()
    if missing:
        collection.create_indexes([IndexModel(INDEXES[name], name=name) for name in missing])
    seconds = time.perf_counter() - started
    return [{"name": name, "keys": keys, "built_now": name in missing} for name, keys in INDEXES.items()], seconds


def ensure_sample_index(sample: Collection, name: str, built: set[str]) -> None:
    if name not in built:
        sample.create_indexes([IndexModel(INDEXES[name], name=name)])
        built.add(name)
