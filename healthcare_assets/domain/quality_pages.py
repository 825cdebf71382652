"""Each run's quality report as one self-contained HTML page (no script, font or image; a CSP says so) and the index of
the last runs, from autoescaping Jinja2 and a dict kept as JSON: counts and aggregates, never a patient's value."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import jinja2

from healthcare_assets.domain.cleaning import REPAIRS, ROW_COUNTS
from healthcare_assets.domain.privacy import IDENTIFYING_COLUMNS
from healthcare_assets.plumbing import settings

# StrictUndefined: a missing figure fails the run instead of printing nothing
_TEMPLATES = jinja2.Environment(loader=jinja2.PackageLoader("healthcare_assets", "templates"), autoescape=True,
                                undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
_TEMPLATES.filters["number"] = lambda value: f"{value:,}" if isinstance(value, int) else value


def quality_dir() -> Path:
    return settings.reports_dir() / "quality"


def runs_dir() -> Path:
    return quality_dir() / "runs"


def index_path() -> Path:
    return runs_dir() / "index.html"


def report_path(run_id: str) -> Path:
    return runs_dir() / f"{run_id}.html"


@contextmanager
def exclusive() -> Iterator[None]:
    """Runs may end at the same moment: one at a time prunes and rewrites the indexes."""
    folder = settings.private_dir(quality_dir())
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def keep_newest(paths: Iterable[Path], keep: int) -> list[Path]:
    existing = [(p.stat().st_mtime, p) for p in paths if p.exists()]
    removed = [p for _, p in sorted(existing, reverse=True)[keep:]]
    for path in removed:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return removed


def _write(path: Path, text: str) -> None:
    # Whole or not at all: a person may open the page while the run writes it.
    written = settings.write_owner_only(path.with_name(f".{path.name}.tmp"), text)
    os.replace(written, path)


def publish(report: dict, keep: int | None) -> Path:
    """Keep the newest `keep` runs (all when None), rewrite the index; the caller holds `exclusive()`."""
    settings.private_dir(runs_dir())
    page = report_path(report["run_id"])
    _write(page.with_suffix(".json"), json.dumps(report, indent=2))
    _write(page, _TEMPLATES.get_template("quality_report.html.j2").render(report=report))
    for dropped in keep_newest(runs_dir().glob("*.json"), keep) if keep else ():
        dropped.with_suffix(".html").unlink(missing_ok=True)
    # newest first, by when each run's data was written: `written_at` is to the second only
    written = sorted(runs_dir().glob("*.json"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    runs = [json.loads(p.read_text()) for p in written]
    _write(index_path(), _TEMPLATES.get_template("quality_index.html.j2").render(runs=runs))
    return page


def page_data(run_id: str, source: dict, counts: dict) -> dict:
    """As far as it is known (None: not counted yet); `counts` holds counts and reasons, never a patient's value."""
    return {"run_id": run_id, "written_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
            "source": {k: source.get(k) for k in ("name", "size", "sha256", "schema_version")},
            "rows": {k: counts.get(k) for k in ROW_COUNTS}, "repairs": {k: counts.get(k) for k in REPAIRS},
            "quarantined_by_reason": counts.get("quarantined_by_reason", {}), "chunks": 0, "suites": [],
            "passed": False, "identifying_columns": list(IDENTIFYING_COLUMNS), "blocked": []}


def record_blocked(run_id: str, by: str, description: str, new: dict | None, keep: int | None) -> Path | None:
    """Say on the run's page (or, when it wrote none yet, on `new`) that `by` blocked the run, and why."""
    with exclusive():
        data = report_path(run_id).with_suffix(".json")
        if data.exists():
            report, keep = json.loads(data.read_text()), None
        elif new is None:
            return None
        else:
            report = new
        blockers = [b for b in report.get("blocked", []) if b["by"] != by]
        report.update(passed=False, blocked=[*blockers, {"by": by, "description": description}])
        return publish(report, keep)


def latest() -> Path | None:
    pages = [p.with_suffix(".html") for p in runs_dir().glob("*.json")]
    pages = [p for p in pages if p.exists()]
    return max(pages, key=lambda p: p.stat().st_mtime) if pages else None
