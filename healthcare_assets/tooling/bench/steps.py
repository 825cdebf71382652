"""Each step of a run timed from Dagster's step statistics, with the peak RSS of the pipeline
process and of the server while it ran, and counted under the asset it belongs to."""

from __future__ import annotations

import os
import threading
import time

import dagster as dg
import psutil

from healthcare_assets.tooling.bench.figures import AssetTiming, StepTiming

POLL_S = 0.25
ENDED = ("SUCCESS", "FAILURE")  # a step's status once it ran to its end (skipped steps never ran)


def rss_mb(pid: int) -> float:
    try:
        return psutil.Process(pid).memory_info().rss / 2**20
    except psutil.Error:
        return 0.0


class RssSampler(threading.Thread):
    """Samples this process's and the server's RSS, so each step gets its own peak."""

    def __init__(self, server_pid: int | None):
        super().__init__(daemon=True)
        self.server_pid = server_pid
        self.samples: list[tuple[float, float, float]] = []  # (time, own MB, server MB)
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(POLL_S):
            self.samples.append((time.time(), rss_mb(os.getpid()), rss_mb(self.server_pid) if self.server_pid else 0.0))

    def peaks(self, start: float, end: float) -> tuple[float, float]:
        window = [(own, server) for t, own, server in self.samples if start <= t <= end + POLL_S]
        return (round(max((w[0] for w in window), default=0), 1), round(max((w[1] for w in window), default=0), 1))


def ended_steps(stats: list) -> dict[str, tuple[float, float]]:
    """(start, end) epoch seconds of every step that ran to its end, from a run's step statistics
    (`DagsterInstance.get_run_step_stats`)."""
    return {step.step_key: (step.start_time or step.end_time, step.end_time) for step in stats
            if step.status is not None and step.status.value in ENDED and step.end_time}


def step_timings(run_id: str, instance: dg.DagsterInstance, sampler: RssSampler) -> dict[str, StepTiming]:
    """Seconds and peak RSS (this process, the server) of every step of a run."""
    timings = {}
    for key, (start, end) in ended_steps(instance.get_run_step_stats(run_id)).items():
        timings[key] = StepTiming(round(end - start, 3), *sampler.peaks(start, end))
    return timings


def owners(definitions: list, selection: dg.AssetSelection, graph) -> dict[str, str]:
    """Step key -> the asset it belongs to, for the steps a selection runs: an asset's own step, or
    one of its checks' steps (the step key is the op's name)."""
    assets, checks = selection.resolve(graph), selection.resolve_checks(graph)
    found = {}
    for d in definitions:
        keys = [k for k in d.keys if k in assets] or [k.asset_key for k in d.check_keys if k in checks]
        if keys:
            found[d.node_def.name] = keys[0].to_user_string()
    return found


def per_asset(timings: dict[str, StepTiming], step_owners: dict[str, str]) -> dict[str, AssetTiming]:
    """Each step counted under its asset: the asset's own step, and its checks' steps."""
    out = {asset: AssetTiming() for asset in dict.fromkeys(step_owners.values())}
    for key, step in timings.items():
        owner = step_owners.get(key)
        if owner is None:
            continue
        part = out[owner]
        if key == owner:
            part.asset_s = step.s
        else:
            part.checks_s = round(part.checks_s + step.s, 3)
        part.peak_rss_mb = max(part.peak_rss_mb, step.peak_rss_mb)
        part.server_peak_rss_mb = max(part.server_peak_rss_mb, step.server_peak_rss_mb)
    return out
