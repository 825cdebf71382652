"""The whole-process figures of the scale benchmark, those the sizes that ran allow."""

from __future__ import annotations

from dataclasses import dataclass

from healthcare_assets.tooling.bench.client import PeerComparison, compare_with_client
from healthcare_assets.tooling.bench.drops import (
    DROP_ROWS,
    ConcurrentDrops,
    DropScaling,
    measure_concurrent_drops,
    measure_drop_scaling,
)
from healthcare_assets.tooling.bench.exports import COMMITTED_ROWS, database_for, export_for
from healthcare_assets.tooling.bench.figures import SizeRun
from healthcare_assets.tooling.bench.launcher import CLIENT_APPROACH, Processes
from healthcare_assets.tooling.bench.targets import Target


@dataclass
class ProcessFigures:
    """What the whole processes measured; None where the sizes needed did not run."""

    drop_scaling: DropScaling | None = None
    concurrent_drops: ConcurrentDrops | None = None
    client_comparison: PeerComparison | None = None

    def parts(self) -> list:
        return [p for p in (self.drop_scaling, self.concurrent_drops, self.client_comparison) if p]

    def targets(self) -> list[Target]:
        return [t for part in self.parts() for t in part.targets()]

    @property
    def success(self) -> bool:
        return all(part.success for part in self.parts())


def run_processes(results: dict[int, SizeRun], args, processes: Processes) -> ProcessFigures:
    """The whole-process figures the sizes that ran allow: the drops need their databases loaded,
    the comparison with the client needs the committed export."""
    figures = ProcessFigures()
    loaded = {size for size, r in results.items() if r.load}
    if COMMITTED_ROWS in results:
        if CLIENT_APPROACH.exists():
            print("the gated chain and the client's approach, alternating ...", flush=True)
            figures.client_comparison = compare_with_client(processes, export_for(COMMITTED_ROWS, processes.work)[0])
        else:
            print(f"no {CLIENT_APPROACH}: the comparison with the client's approach is left out")
    if args.big_size in loaded:
        print(f"a {DROP_ROWS:,}-row drop into an empty collection and into {args.big_size:,} rows ...", flush=True)
        figures.drop_scaling = measure_drop_scaling(processes, database_for(args.big_size))
    if COMMITTED_ROWS in loaded:
        print(f"two drops at once into {COMMITTED_ROWS:,} rows ...", flush=True)
        figures.concurrent_drops = measure_concurrent_drops(processes, database_for(COMMITTED_ROWS))
    return figures
