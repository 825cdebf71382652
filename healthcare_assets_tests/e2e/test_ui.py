"""The Dagster UI, used as a person would: `dagster dev` from the repo root on a free port, the asset
graph in headless Chromium (Debian's, driven by Playwright; no browser download), "Materialize
all", the run followed to SUCCESS, the row count read off the asset page and compared with the
collection's. Screenshots go to $HEALTHCARE_DATA_DIR/reports/ui/ for a person to look at; they are
not evidence of anything (the test wrote them itself)."""

from __future__ import annotations

import os
import re
import time
import uuid

import pytest

from healthcare_assets.plumbing.mongo import connect
from healthcare_assets.tooling.generate import generate_csv
from healthcare_assets_tests.fixtures.processes import BIN, DevServer, tail
from healthcare_assets_tests.fixtures.servers import drop_deployment

RUN_TIMEOUT_S = 360

pytestmark = [pytest.mark.ui, pytest.mark.slow]


RUNS_QUERY = "{ runsOrError(limit: 10) { ... on Runs { results { runId status } } } }"


def _wait_for_run(dev: DevServer) -> dict:
    """The one run of this fresh instance, once it has finished."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    runs: list = []
    while time.monotonic() < deadline:
        runs = dev.graphql(RUNS_QUERY)["runsOrError"]["results"]
        if runs and runs[0]["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
            return runs
        time.sleep(2)
    raise AssertionError(f"no run finished in {RUN_TIMEOUT_S} s: {runs}\n{tail(dev.log)}")


@pytest.fixture
def dagster_dev(chromium, mongo_uri, data_dir, tmp_path):
    """`dagster dev` on the test's database; after the browser, so that a missing one skips first."""
    export = tmp_path / "ui_export.csv"
    generate_csv(rows=500, seed=23, out=export)
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    database = f"test_ui_{uuid.uuid4().hex[:10]}"
    env = {**os.environ, "DAGSTER_HOME": str(home), "HEALTHCARE_DATA_DIR": str(data_dir),
           "HEALTHCARE_SOURCE_CSV": str(export), "MONGODB_URI": mongo_uri, "MONGODB_DATABASE": database}
    env.pop("HEALTHCARE_S3_BUCKET", None)  # the sensor stays off: this run is the UI's
    dev = DevServer([str(BIN / "dagster"), "dev"], env, tmp_path / "dagster_dev.log")
    try:
        dev.wait_ready()
        yield dev, database
    finally:
        dev.stop()
        drop_deployment(connect(mongo_uri), database)


def test_materialize_all_from_the_asset_graph(chromium, dagster_dev, mongo_uri, data_dir):
    from playwright.sync_api import expect

    dev, database = dagster_dev
    shots = data_dir / "reports" / "ui"
    shots.mkdir(parents=True, exist_ok=True)
    page = chromium.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(60_000)
    # A first visit may get the "Join the Dagster community" dialog: a person skips it.
    page.add_locator_handler(page.get_by_text("Join the Dagster community"),
                             lambda: page.get_by_role("button", name="Skip").click())

    page.goto(f"{dev.url}/asset-groups", wait_until="domcontentloaded")
    materialize_all = page.get_by_role("button", name="Materialize all")
    expect(materialize_all).to_be_enabled()
    page.screenshot(path=str(shots / "asset_graph.png"))
    materialize_all.click()
    expect(page.get_by_text(re.compile(r"Launched run"))).to_be_visible()

    runs = _wait_for_run(dev)
    assert [r["status"] for r in runs] == ["SUCCESS"], f"{runs}\n{tail(dev.log)}"

    documents = connect(mongo_uri)[database]["hospitalizations"].count_documents({})
    assert documents > 0
    page.goto(f"{dev.url}/assets/mongo_hospitalizations", wait_until="domcontentloaded")
    row_count = page.get_by_text("Row count", exact=True)
    expect(row_count).to_be_visible()
    shown = page.locator("body").inner_text()
    match = re.search(r"Row count\s+([\d,]+)", shown)
    assert match, "the asset page shows no row count"
    assert int(match.group(1).replace(",", "")) == documents
    page.screenshot(path=str(shots / "mongo_hospitalizations.png"), full_page=True)
