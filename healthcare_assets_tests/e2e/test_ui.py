"""The Dagster UI, used as a person would: `dagster dev` from the repo root on a free port, the asset
graph in headless Chromium (Debian's, driven by Playwright; no browser download), "Materialize
all", the run followed to SUCCESS, the row count read off the asset page and compared with the
collection's. Screenshots go to $HEALTHCARE_DATA_DIR/reports/ui/ for a person to look at; they are
not evidence of anything (the test wrote them itself)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from healthcare_assets.plumbing.embedded_mongo import free_port
from healthcare_assets.plumbing.mongo import connect
from healthcare_assets.tooling.generate import generate_csv
from healthcare_assets_tests.fixtures.environment import DEV_EXTRA, SYSTEM_DEPS, unavailable
from healthcare_assets_tests.fixtures.servers import drop_deployment

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
START_TIMEOUT_S = 240  # generous: two cores shared with the rest of the suite
RUN_TIMEOUT_S = 360

pytestmark = pytest.mark.ui





def _log_tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"


class DagsterDev:
    """`dagster dev` in its own process group, so the webserver, daemon, code server and run
    workers it starts all stop with it."""

    def __init__(self, env: dict, log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        command = [str(Path(sys.executable).parent / "dagster"), "dev", "-h", "127.0.0.1", "-p", str(self.port)]
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(command, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"dagster dev exited with {self.proc.returncode}:\n{_log_tail(self.log)}")
            try:
                urllib.request.urlopen(f"{self.url}/server_info", timeout=2).read()
                return
            except (urllib.error.URLError, OSError):
                time.sleep(0.5)
        raise AssertionError(f"dagster dev did not answer on {self.url} in {START_TIMEOUT_S} s:\n{_log_tail(self.log)}")

    def graphql(self, query: str) -> dict:
        request = urllib.request.Request(f"{self.url}/graphql", data=json.dumps({"query": query}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)["data"]

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        except ProcessLookupError:
            pass
        # Children that outlived the leader (still in its group) are not left behind either.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


RUNS_QUERY = "{ runsOrError(limit: 10) { ... on Runs { results { runId status } } } }"


def _wait_for_run(dev: DagsterDev) -> dict:
    """The one run of this fresh instance, once it has finished."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    runs: list = []
    while time.monotonic() < deadline:
        runs = dev.graphql(RUNS_QUERY)["runsOrError"]["results"]
        if runs and runs[0]["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
            return runs
        time.sleep(2)
    raise AssertionError(f"no run finished in {RUN_TIMEOUT_S} s: {runs}\n{_log_tail(dev.log)}")


@pytest.fixture
def dagster_dev(mongo_uri, data_dir, tmp_path):
    if not Path(CHROMIUM).exists():
        unavailable(f"Chromium ({CHROMIUM})", SYSTEM_DEPS)
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        unavailable("playwright", DEV_EXTRA)
    export = tmp_path / "ui_export.csv"
    generate_csv(rows=500, seed=23, out=export)
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    database = f"test_ui_{uuid.uuid4().hex[:10]}"
    env = {**os.environ, "DAGSTER_HOME": str(home), "HEALTHCARE_DATA_DIR": str(data_dir),
           "HEALTHCARE_SOURCE_CSV": str(export), "MONGODB_URI": mongo_uri, "MONGODB_DATABASE": database}
    env.pop("HEALTHCARE_S3_BUCKET", None)  # the sensor stays off: this run is the UI's
    env.pop("DAGSTER_MODULE_NAME", None)  # with it, the webserver gets a module and a workspace and refuses both
    dev = DagsterDev(env, tmp_path / "dagster_dev.log")
    try:
        dev.wait_ready()
        yield dev, database
    finally:
        dev.stop()
        drop_deployment(connect(mongo_uri), database)


def test_materialize_all_from_the_asset_graph(dagster_dev, mongo_uri, data_dir):
    from playwright.sync_api import expect, sync_playwright

    dev, database = dagster_dev
    shots = data_dir / "reports" / "ui"
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
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
            assert [r["status"] for r in runs] == ["SUCCESS"], f"{runs}\n{_log_tail(dev.log)}"

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
        finally:
            browser.close()
