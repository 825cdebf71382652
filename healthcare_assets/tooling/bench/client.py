"""The gated chain up to a loaded collection against the client's own ungated script, whole
processes on the committed export, alternating."""

from __future__ import annotations

import statistics
import sys
from dataclasses import dataclass, field

from healthcare_assets.domain import local_server
from healthcare_assets.tooling.bench.launcher import (
    CLIENT_APPROACH,
    DAGSTER,
    DEFINITIONS,
    Processes,
)
from healthcare_assets.tooling.bench.targets import PEER_RATIO_MAX, Target, ratio

PEER_REPEATS = 3


@dataclass
class PeerComparison:
    """The gated chain up to a loaded collection against the client's ungated script: whole
    processes, same CSV, same server, alternating, median of each."""

    csv: str
    ours_s: list[float]
    theirs_s: list[float]
    failures: list[str]
    ours_median_s: float | None = field(init=False)
    theirs_median_s: float | None = field(init=False)
    ratio: float | None = field(init=False)

    def __post_init__(self):
        self.ours_median_s = statistics.median(self.ours_s) if self.ours_s else None
        self.theirs_median_s = statistics.median(self.theirs_s) if self.theirs_s else None
        self.ratio = ratio(self.ours_median_s, self.theirs_median_s, 2) if self.success else None

    @property
    def success(self) -> bool:
        return not self.failures

    def targets(self) -> list[Target]:
        return [Target.at_most(f"gated chain to a loaded collection / client's approach <= {PEER_RATIO_MAX} "
                               f"(median of {len(self.ours_s)})", self.ratio, PEER_RATIO_MAX)]


def compare_with_client(processes: Processes, csv: str, repeats: int = PEER_REPEATS) -> PeerComparison:
    """Ours: `dagster asset materialize --select '*mongo_hospitalizations'` into a fresh database
    each time. Theirs: client_approach.py, which drops and refills baseline_db itself."""
    uri = local_server.client_uri(processes.work)  # with credentials: the script is a plain client
    ours, theirs, failures = [], [], []
    for i in range(repeats):
        database = f"bench_gated_{i}"
        seconds, ok = processes.run([DAGSTER, "asset", "materialize", "-m", DEFINITIONS, "--select",
                                     "*mongo_hospitalizations"], f"gated_{i}",
                                    MONGODB_DATABASE=database, HEALTHCARE_SOURCE_CSV=csv)
        ours.append(seconds)
        failures += [] if ok else [f"gated chain, repeat {i + 1}: see gated_{i}.log"]
        seconds, ok = processes.run([sys.executable, str(CLIENT_APPROACH), csv, uri], f"client_{i}")
        theirs.append(seconds)
        failures += [] if ok else [f"client's approach, repeat {i + 1}: see client_{i}.log"]
        processes.drop_databases(database)  # every repeat starts from the same server state
    processes.db("baseline_db").client.drop_database("baseline_db")
    return PeerComparison(csv, ours, theirs, failures)
