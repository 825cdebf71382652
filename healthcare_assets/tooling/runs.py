"""`healthcare-assets load` and `run`, executed in this process and recorded so that `make dev` shows the run;
Dagster's console log is off: what matters is read back from the event log."""

import contextlib
import os
import sys
import threading
import time
import uuid
import warnings
from pathlib import Path
from typing import Self

import dagster as dg
from dagster import DagsterEventType

from healthcare_assets.plumbing import settings

DROP_JOB = "s3_csv_drop_job"  # what a dropped file goes through: `load`
CHAIN_JOB = "chain_job"  # the six assets of the chain: `run`, `make run`
# What the Makefile writes: telemetry off, one run at a time in the writes pool.
INSTANCE_YAML = "telemetry:\n  enabled: false\nconcurrency:\n  pools:\n    default_limit: 1\n"
CHECK_KEYS = ("figure", "limit", "setting", "look_at")
SCHEDULED = ("backups (nightly), the restore drill (weekly) and the collection audit (daily) run on their "
             "schedules under `make dev`")
NOT_RUN = {DROP_JOB: f"not run here: index_benchmarks (`make bench`, or `dagster asset materialize --select "
                     f"index_benchmarks`); {SCHEDULED}",
           CHAIN_JOB: f"not run here: {SCHEDULED}; index_benchmarks timed each query 3 times and "
                      "scanned a 10,000-document sample once: `make bench` measures it fully"}
POLL_S = 0.5
EVENTS = {DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE,
          DagsterEventType.ASSET_MATERIALIZATION, DagsterEventType.ASSET_CHECK_EVALUATION}


class UsageError(ValueError):
    """What the command line names cannot be run (exit 2)."""


def dagster_home() -> Path:
    """DAGSTER_HOME, else <data dir>/dagster_home, created owner-only with the Makefile's dagster.yaml."""
    home = Path(os.environ.get("DAGSTER_HOME") or settings.data_dir() / "dagster_home").resolve()
    settings.private_dir(home)
    if not (home / "dagster.yaml").exists():
        settings.write_owner_only(home / "dagster.yaml", INSTANCE_YAML)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def source_for(argument: str) -> str:
    """A path made absolute, or s3://bucket/key kept verbatim (a key may hold '#' or spaces)."""
    if not argument.strip():
        raise UsageError("no file given: name a CSV export, e.g. `healthcare-assets load exports/today.csv`")
    if argument.startswith("s3://"):
        bucket, _, key = argument.removeprefix("s3://").partition("/")
        if not bucket or not key.strip() or key.endswith("/"):
            raise UsageError(f"{printable(argument)}: expected s3://bucket/key, the key of one object")
        return argument
    path = Path(argument).resolve()
    if path.is_dir():
        raise UsageError(f"{printable(argument)}: a folder ({printable(str(path))}), not a file: name one CSV export")
    if not path.is_file():
        raise UsageError(f"{printable(argument)}: no such file ({printable(str(path))})")
    return str(path)


def printable(text: str) -> str:
    """A name as the terminal may show it: a file's name may hold escape sequences."""
    return "".join(c if c.isprintable() else "?" for c in text)


def _quiet() -> None:
    for category in (dg.BetaWarning, dg.PreviewWarning, dg.SupersessionWarning):
        warnings.filterwarnings("ignore", category=category)
    # a warning the code gives (the development pseudonym key) as one line, not with its source line
    warnings.formatwarning = lambda message, category, *rest: f"warning: {message}\n"


class Progress:
    """Reads the run's events as they are written and prints one line per finished stage."""

    def __init__(self, instance: dg.DagsterInstance, run_id: str, assets: set[str], out=sys.stdout):
        self.instance, self.run_id, self.assets, self.out = instance, run_id, assets, out
        self.cursor: str | None = None
        self.started, self.seconds, self.materialized = {}, {}, {}
        self.checks: dict[str, list] = {}  # passed or failed -> AssetCheckEvaluations
        self.failures: list = []  # STEP_FAILURE entries
        self.t0, self._stop = time.monotonic(), threading.Event()

    def __enter__(self) -> Self:
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.poll()  # what the last interval wrote

    def _watch(self) -> None:
        while not self._stop.wait(POLL_S):
            # a storage hiccup costs a progress line, not the run: the last poll, after it, reads again
            with contextlib.suppress(Exception):
                self.poll()

    def poll(self) -> None:
        while True:
            connection = self.instance.get_records_for_run(self.run_id, cursor=self.cursor, limit=500)
            self.cursor = connection.cursor
            for record in connection.records:
                self._handle(record.event_log_entry)
            if not connection.has_more:
                return

    def _handle(self, entry) -> None:
        event = entry.dagster_event
        if event is None:
            # a warning the code logged; not the engine's "Not executing" for each step after a failure
            if entry.level >= 30 and entry.user_message and not entry.user_message.endswith("Not executing."):
                print(f"  warning: {entry.user_message}", file=self.out, flush=True)
            return
        kind, step = event.event_type, event.step_key
        if kind not in EVENTS:
            return
        if kind == DagsterEventType.STEP_START:
            self.started[step] = entry.timestamp
        elif kind == DagsterEventType.ASSET_MATERIALIZATION:
            metadata = {k: v.value for k, v in event.event_specific_data.materialization.metadata.items()}
            self.materialized[event.asset_key.to_user_string()] = metadata
        elif kind == DagsterEventType.ASSET_CHECK_EVALUATION:
            evaluation = event.event_specific_data
            self.checks.setdefault("passed" if evaluation.passed else "failed", []).append(evaluation)
            if not evaluation.passed:
                print(f"  check {evaluation.check_name} of {evaluation.asset_key.to_user_string()} FAILED",
                      file=self.out, flush=True)
        elif kind == DagsterEventType.STEP_FAILURE:
            self.failures.append(entry)
        elif kind == DagsterEventType.STEP_SUCCESS:
            self.seconds[step] = entry.timestamp - self.started.get(step, entry.timestamp)
            rows = self.materialized.get(step, {}).get("dagster/row_count")  # an asset's step bears its name
            counted = " (checks)" if step not in self.assets else f", {rows:,} rows" if isinstance(rows, int) else ""
            if step in self.assets or self.seconds[step] >= 1:  # a slow check is a stage of its own
                print(f"  {time.monotonic() - self.t0:6.1f} s  {step:<24} done in {self.seconds[step]:5.1f} s{counted}",
                      file=self.out, flush=True)

    def check_seconds(self) -> float:
        return sum(s for step, s in self.seconds.items() if step not in self.assets)


def _failure_text(entry) -> str:
    """The reason a step failed, once: a dg.Failure's description, else the innermost error."""
    data = entry.dagster_event.event_specific_data
    user = getattr(data, "user_failure_data", None)
    if user is not None and user.description:
        return user.description
    error = data.error
    while error is not None and error.cause is not None:
        error = error.cause
    return error.message.strip() if error else entry.message


def _check_descriptions(graph) -> dict[str, str]:
    return {key.name: graph.get_check_spec(key).description or "" for key in graph.asset_check_keys}


def report_failures(progress: Progress, descriptions: dict[str, str], out=sys.stdout) -> None:
    for evaluation in progress.checks.get("failed", []):
        description = evaluation.description or descriptions.get(evaluation.check_name) or ""
        print(f"failed check  {evaluation.check_name} ({evaluation.asset_key.to_user_string()}): {description}",
              file=out)
        metadata = {k: v.value for k, v in evaluation.metadata.items()}
        shown = {k: metadata[k] for k in CHECK_KEYS if k in metadata} or metadata
        for key, value in shown.items():
            print(f"              {key}: {value}", file=out)
    for entry in progress.failures:
        text = _failure_text(entry)
        if "blocking asset check" in text and progress.checks.get("failed"):
            continue  # the checks above say it, with their figures
        print(f"failed step   {entry.dagster_event.step_key}: {text}", file=out)


def report_results(run_id: str, progress: Progress, out=sys.stdout) -> None:
    from healthcare_assets.domain import quality_pages

    cleaned = progress.materialized.get("cleaned_frame", {})
    loaded = progress.materialized.get("mongo_hospitalizations")
    released = progress.materialized.get("anonymized_view")
    if cleaned:
        kept = "loaded" if loaded else "cleaned, not loaded"
        print(f"rows in       {cleaned.get('rows_in', 0):,} = {cleaned.get('rows_cleaned', 0):,} {kept} + "
              f"{cleaned.get('rows_quarantined', 0):,} quarantined + {cleaned.get('duplicates_removed', 0):,} duplicates",
              file=out)
    if loaded:
        print(f"documents     {loaded.get('documents_inserted', 0):,} new, {loaded.get('documents_already_present', 0):,} "
              f"already there; {loaded.get('collection')} holds {loaded.get('dagster/row_count', 0):,}", file=out)
    if released:
        print(f"released      {released.get('stays_published', 0):,} stays to the analysts' copy "
              f"{released.get('analyst_copy')} (it holds {released.get('dagster/row_count', 0):,})", file=out)
    if benchmarks := progress.materialized.get("index_benchmarks"):
        print(f"benchmarks    slowest gain of an index {benchmarks.get('min_speedup') or 0:,.0f}x over a COLLSCAN; "
              f"{benchmarks.get('report')}", file=out)
    page = quality_pages.report_path(run_id)
    if page.exists():
        print(f"quality       {page}", file=out)
    for key, label in (("cleaning_report", "cleaning"), ("quarantine_file", "quarantine")):
        if cleaned.get(key):
            print(f"{label:<13} {cleaned[key]}", file=out)


def execute(source: str | None = None, job_name: str = DROP_JOB, out=sys.stdout) -> int:
    """Run the job on `source` (None: the configured source) and say how it went: exit 0 or 1."""
    _quiet()
    os.umask(0o077)  # the instance's databases and whatever a library writes under the data directory
    if source is not None:
        # trusted as HEALTHCARE_SOURCE_CSV is (a `source` typed in the UI is held to the import folders)
        os.environ["HEALTHCARE_SOURCE_CSV"] = source
    from healthcare_assets.definitions import defs
    from healthcare_assets.defs.index_benchmarks import QUICK_BENCHMARK
    from healthcare_assets.defs.ingest import SOURCE_TAG, source_tag

    definitions = defs()
    job = definitions.resolve_job_def(job_name)
    home = dagster_home()
    run_id = str(uuid.uuid4())
    shown = source or os.environ.get("HEALTHCARE_SOURCE_CSV") or settings.DEFAULT_SOURCE_CSV
    print(f"run {run_id} of {job_name} on {printable(shown)}  (Dagster instance {home}; `make dev` shows it)", file=out, flush=True)
    assets = {key.to_user_string() for key in job.asset_layer.selected_asset_keys}
    config = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
    if "index_benchmarks" in assets:
        config["ops"] = {"index_benchmarks": {"config": QUICK_BENCHMARK}}
    with dg.DagsterInstance.from_config(str(home)) as instance, Progress(instance, run_id, assets, out) as progress:
        started = time.monotonic()
        result = job.execute_in_process(run_config=config, instance=instance, run_id=run_id, raise_on_error=False,
                                        tags={SOURCE_TAG: source_tag(Path(shown.rsplit("/", 1)[-1]).name)})
        seconds = time.monotonic() - started
    status = "SUCCESS" if result.success else "FAILURE"
    stages = sum(progress.seconds.get(a, 0.0) for a in assets)
    print(f"status        {status} in {seconds:.1f} s (stages {stages:.1f} s, checks {progress.check_seconds():.1f} s, "
          f"between them {max(seconds - stages - progress.check_seconds(), 0):.1f} s); "
          f"checks: {len(progress.checks.get('passed', []))} passed, {len(progress.checks.get('failed', []))} failed",
          file=out)
    if not result.success:
        report_failures(progress, _check_descriptions(definitions.resolve_asset_graph()), out)
    report_results(run_id, progress, out)
    print(NOT_RUN[job_name], file=out)
    return 0 if result.success else 1


def _load(args) -> int:
    try:
        source = source_for(args.path)
    except UsageError as exc:
        print(f"load: {exc}", file=sys.stderr)
        return 2
    return execute(source)


def add_run_commands(commands) -> None:
    run = commands.add_parser("run", help="run the six assets of the chain on the configured source "
                                          "(HEALTHCARE_SOURCE_CSV), recorded for `make dev`: what `make run` runs")
    run.set_defaults(handler=lambda args: execute(job_name=CHAIN_JOB))
    load = commands.add_parser("load", help="load one CSV export: what a dropped file goes through")
    load.add_argument("path", help="a CSV file (from the current folder) or s3://bucket/key")
    load.set_defaults(handler=_load)
