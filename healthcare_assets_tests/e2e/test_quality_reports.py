"""The quality report of a run: one HTML page that a person opens anywhere (offline, JavaScript off,
nothing fetched), the index of the last runs, and no patient in any report, metadata value or log."""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from healthcare_assets.domain import quality_pages
from healthcare_assets.domain.expectations import expectations
from healthcare_assets.plumbing import settings, staging
from healthcare_assets.tooling import cli
from healthcare_assets.tooling.generate import generate_csv
from healthcare_assets.tooling.runs import INSTANCE_YAML
from healthcare_assets_tests.fixtures.processes import make_dagster_home
from healthcare_assets_tests.fixtures.runs import DEFS, check_results, materialize, materialized

pytestmark = pytest.mark.slow  # whole processes: the CLI, dagster, servers of their own

TO_QUALITY = [a for a in DEFS.assets if a.key.path[0] in ("raw_csv", "cleaned_frame", "quality_report")]

# People no generated export holds (Faker's name lists do not have these words), in the export's
# random letter case: what a leak would quote.
PATIENTS = ["oTTOLINE quarRINGTON", "Bartholomew VEXLEY-Abara", "ZENOBIA fairwheather", "Ignatius Quillfeather"]
DOCTORS = ["Dr. Perpetua Grimsditch", "Aurelian Thistlewood MD", "Cosima Blackwaterson", "Evander Nightingale-Roe"]


def export_with_failing_rows(source: Path, out: Path) -> pd.DataFrame:
    """The export with four rows that fail, each carrying a known patient and doctor: one quarantined
    for its age, one whose Gender holds the patient's name (quarantined, the name is the bad value),
    and two in a room outside the room plan (cleaning keeps them; the quality suite fails them)."""
    raw = pd.read_csv(source, dtype=str, keep_default_na=False)
    raw = raw.drop_duplicates().reset_index(drop=True)  # a failing row has no twin that would pass
    rows = [3, 4, 5, 6]
    raw.loc[rows, "Name"] = PATIENTS
    raw.loc[rows, "Doctor"] = DOCTORS
    raw.loc[3, "Age"] = "unknown"
    raw.loc[4, "Gender"] = PATIENTS[1]
    raw.loc[[5, 6], "Room Number"] = "777"
    raw.to_csv(out, index=False)
    return raw


def quoted(text: str) -> list[str]:
    """The known people a text mentions, whatever the letter case."""
    folded = text.casefold()
    return [person for person in PATIENTS + DOCTORS if person.casefold() in folded]


def test_no_report_metadata_or_log_quotes_a_patient(mongo, small_csv, tmp_path, capfd, monkeypatch):
    export = tmp_path / "ward_export.csv"
    export_with_failing_rows(small_csv, export)
    home = make_dagster_home(tmp_path, INSTANCE_YAML)  # where `summary` finds the run
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    instance = dg.DagsterInstance.from_config(str(home))
    result = materialize(export, mongo, instance=instance)
    assert not result.success and check_results(result)["all_expectations_pass"] is False  # the rooms fail it
    meta = materialized(result)
    assert meta["cleaned_frame"]["rows_quarantined"] == 2
    assert meta["quality_report"]["expectations_failed"] == 1

    # The names did flow through the run: the quarantine file (not a report) holds the two
    # quarantined rows as they came, so a search that finds nothing elsewhere is not blind.
    quarantine = Path(meta["cleaned_frame"]["quarantine_file"]).read_text()
    assert sorted(quoted(quarantine)) == sorted([PATIENTS[0], PATIENTS[1], DOCTORS[0], DOCTORS[1]])

    reports = [p for p in settings.reports_dir().rglob("*") if p.is_file()]
    validations = quality_pages.quality_dir() / "validations"
    assert any(validations in p.parents and p.suffix == ".html" for p in reports)  # the Data Docs pages
    assert any(p.parent == quality_pages.runs_dir() for p in reports)  # the run's page and its data
    leaks = {str(p): quoted(p.read_bytes().decode("utf-8", "replace")) for p in reports}
    assert {path: found for path, found in leaks.items() if found} == {}

    logs = instance.all_logs(result.run_id)  # every event: log lines and each metadata value
    assert len(logs) > 20 and any("validated chunk" in entry.user_message for entry in logs)
    assert [quoted(dg.serialize_value(entry)) for entry in logs] == [[]] * len(logs)
    out, err = capfd.readouterr()  # what Dagster, Great Expectations and the rest printed
    assert "quality_report" in err + out
    assert quoted(out + err) == []

    assert cli.main(["summary"]) == 0  # where a person finds the report
    out, _ = capfd.readouterr()
    assert f"quality       {meta['quality_report']['report']}  " in out and quoted(out) == []


def open_offline(browser, url: str):
    """A page in a browser context without network and without JavaScript, recording every request
    it makes; anything but a local file is refused (and stays recorded)."""
    context = browser.new_context(offline=True, java_script_enabled=False)
    requests: list[str] = []
    context.on("request", lambda request: requests.append(request.url))
    context.route(re.compile(r"^(?!file:).*"), lambda route: route.abort())
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(url, wait_until="load")
    return page, requests


def test_report_opens_offline_with_every_figure(chromium, data_dir, small_csv, tmp_path, monkeypatch):
    from playwright.sync_api import expect

    monkeypatch.setattr(staging, "CHUNK_ROWS", 800)  # several chunks, as a large export has
    raw = pd.read_csv(small_csv, dtype=str, keep_default_na=False)
    raw.loc[[5, 9], "Age"] = "unknown"
    raw.loc[12, "Blood Type"] = "Z+"
    export = tmp_path / "offline_export.csv"
    raw.to_csv(export, index=False)
    result = materialize(export, None, selection=TO_QUALITY)
    assert result.success
    page_path = Path(materialized(result)["quality_report"]["report"])
    assert materialized(result)["quality_report"]["dagster/uri"] == page_path.as_uri()

    html = page_path.read_text()
    # Loads nothing by itself: no script, stylesheet, image, frame or font, and the browser is told so.
    assert not re.search(r"<(script|link|img|iframe|object|embed|source)\b|@import|url\(", html, re.IGNORECASE)
    assert "default-src 'none'" in html

    page, requests = open_offline(chromium, page_path.as_uri())
    body = page.locator("body")
    expect(body).to_contain_text(export.name)
    figures = {"rows in": len(raw), "duplicates removed": int(raw.duplicated().sum()), "quarantined": 3}
    figures["cleaned"] = figures["rows in"] - figures["duplicates removed"] - figures["quarantined"]
    for label, value in figures.items():
        expect(page.locator("#rows + table tr", has=page.locator(f"th:text-is('{label}')")).locator("td")) \
            .to_have_text(f"{value:,}")
    source = {"size": f"{export.stat().st_size:,} bytes",
              "SHA-256": hashlib.sha256(export.read_bytes()).hexdigest(), "schema version": "v2"}
    for label, value in source.items():
        expect(page.locator("#source + table tr", has=page.locator(f"th:text-is('{label}')")).locator("td")) \
            .to_have_text(value)

    reasons = pd.read_csv(Path(materialized(result)["cleaned_frame"]["quarantine_file"]), dtype=str)["reason"]
    for reason, count in reasons.str.replace(r" \(.*\)$", "", regex=True).value_counts().items():
        row = page.locator("#quarantine + table tr", has=page.locator(f"td:text-is(\"{reason}\")"))
        expect(row.locator("td").last).to_have_text(f"{count:,}")

    chunks = math.ceil(len(raw) / staging.CHUNK_ROWS)
    row_count = page.locator("tr", has=page.locator("td:text-is('expect table row count to equal')"))
    per_chunk = re.findall(r"([\d,]+) \((\d+) chunks?\)", row_count.locator("td").nth(4).inner_text())
    assert sum(int(n) * int(rows.replace(",", "")) for rows, n in per_chunk) == figures["cleaned"]
    assert sum(int(n) for _, n in per_chunk) == chunks
    for suite, suite_expectations in expectations().items():
        heading = page.locator(f"#suite-{suite}")
        expect(heading).to_be_visible()
        expect(heading).to_contain_text("passed")
        expect(page.locator(f"#suite-{suite} + p")).to_contain_text(f"{len(suite_expectations)} expectations on {chunks} chunks")
        table = page.locator(f"#suite-{suite} + p + table")
        expect(table.locator("tr")).to_have_count(len(suite_expectations) + 1)
        for kind, count in Counter(e.expectation_type for e in suite_expectations).items():
            rows = table.locator("tr", has=page.locator(f"td:text-is('{kind.replace('_', ' ')}')"))
            expect(rows).to_have_count(count)
            expect(rows.locator("td:nth-child(4)")).to_have_text(["passed"] * count)
    page.context.close()

    index, index_requests = open_offline(chromium, quality_pages.index_path().as_uri())
    expect(index.locator("tr", has_text=export.name)).to_contain_text("passed")
    index.locator("tr", has_text=export.name).get_by_role("link").click()
    expect(index.locator("h1")).to_contain_text(export.name)
    assert index.url == page_path.as_uri()
    index.context.close()

    opened = requests + index_requests
    assert page_path.as_uri() in opened and quality_pages.index_path().as_uri() in opened  # the recorder works
    assert [url for url in opened if not url.startswith("file://")] == []


def test_the_last_runs_are_kept(data_dir, tmp_path, monkeypatch):
    """HEALTHCARE_REPORTS_KEEP runs of reports and of Data Docs validations, the newest; the
    indexes list exactly those."""
    monkeypatch.setenv("HEALTHCARE_REPORTS_KEEP", "2")
    export = tmp_path / "tiny_export.csv"
    generate_csv(rows=200, seed=5, out=export)
    runs = []
    for _ in range(3):
        result = materialize(export, None, selection=TO_QUALITY)
        assert result.success
        runs.append(result.run_id)
    kept = set(runs[1:])

    pages = {p.stem for p in quality_pages.runs_dir().glob("*.html")} - {"index"}
    assert pages == kept
    assert {p.stem for p in quality_pages.runs_dir().glob("*.json")} == kept
    index = quality_pages.index_path().read_text()
    assert [run for run in runs if run in index] == runs[1:]
    assert index.index(runs[2]) < index.index(runs[1])  # newest first

    quality = quality_pages.quality_dir()
    for folder, suffix in (("validations", ".html"), ("validation_results", ".json")):
        files = list((quality / folder).rglob(f"*{suffix}"))
        assert len(files) == len(expectations()) * len(kept)  # one chunk: one page per suite and run
        assert {p.parent.parent.name for p in files} == kept
    data_docs = (quality / "index.html").read_text()
    assert [run for run in runs if run in data_docs] == runs[1:]
    assert "tiny_export" in data_docs  # the data asset is the source file
