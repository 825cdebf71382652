"""What a failing check says (counts and shares only, never a patient's value), and the run's quality page."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from healthcare_assets.domain import quality_pages
from healthcare_assets.plumbing.staging import SourceFile, StagedFrame

FIXED = "none: this is a fixed rule"


def file_uri(path: Path | str) -> str:
    """A local file as a link a browser opens (s3:// and http(s):// kept as they are)."""
    text = str(path)
    return text if "://" in text else Path(text).absolute().as_uri()


def links(name: str, path: Path | str) -> dict:
    """A report's path, and the same file as a link the UI makes clickable (`<name>_url`)."""
    return {name: dg.MetadataValue.path(str(path)), f"{name}_url": dg.MetadataValue.url(file_uri(path))}


def percent(share: float, digits: int = 1) -> str:
    """A share as a percentage, without trailing zeros for a limit such as 0.05 (5%)."""
    return f"{round(share * 100, digits):g}%"


@dataclass(frozen=True)
class Why:
    """A failure in the four parts a reader acts on."""

    figure: str  # what was measured: "17% of rows (170 of 1,000) were quarantined"
    limit: str  # what is allowed: "the ceiling is 5%"
    setting: str  # the variable, or the file or constant, that changes the limit; FIXED if nothing does
    look_at: Path | str  # the file that shows it

    def sentence(self) -> str:
        return f"{self.figure}: {self.limit}; setting: {self.setting}; look at {self.look_at}"

    def metadata(self) -> dict:
        return {"figure": self.figure, "limit": self.limit, "setting": self.setting,
                "look_at": dg.MetadataValue.url(file_uri(self.look_at))}


@dataclass(frozen=True)
class RunPage:
    """The run's quality page a failing check marks as blocked; `new` is written if there is none yet."""

    run_id: str
    new: dict | None = None
    keep: int | None = None

    @property
    def path(self) -> Path:
        return quality_pages.report_path(self.run_id)

    def blocked(self, by: str, description: str) -> Path | None:
        try:
            return quality_pages.record_blocked(self.run_id, by, description, self.new, self.keep)
        except OSError as exc:  # the verdict stands without its page: a full disk must not hide why the run stopped
            dg.get_dagster_logger().warning(f"the run's quality page could not be written: {exc}")
            return None


def run_page(run_id: str, staged: StagedFrame | None = None, keep: int | None = None,
             source: dict | None = None) -> RunPage:
    """The run's page from what is known so far: a staged frame, or only a source (the file was refused)."""
    if staged is None:
        return RunPage(run_id, quality_pages.page_data(run_id, source or {}, {}), keep)
    counts = {"rows_in": staged.rows, **staged.counts}
    return RunPage(run_id, quality_pages.page_data(run_id, source_fields(staged.source), counts), keep)


def source_fields(source: SourceFile) -> dict:
    return {k: getattr(source, k) for k in ("name", "size", "sha256", "schema_version")}


def verdict(name: str, passed: bool, metadata: dict, why: Why, page: RunPage | None = None) -> dg.AssetCheckResult:
    """The check's result; when it fails, described by `why` and the run's page marked as blocked by it."""
    if passed:
        return dg.AssetCheckResult(check_name=name, passed=True, metadata=metadata)
    description = why.sentence()
    if page is not None:
        page.blocked(name, description)
    return dg.AssetCheckResult(check_name=name, passed=False, metadata={**metadata, **why.metadata()},
                               description=description)


def refused(run_id: str, keep: int, source_name: str, error: str) -> None:
    run_page(run_id, keep=keep, source={"name": source_name}).blocked("raw_csv", error)
