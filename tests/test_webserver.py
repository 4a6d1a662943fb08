"""The webserver path as a user takes it: `make dev` for real (webserver, daemon, demo source), asserted
over GraphQL and in headless Chromium, then `make stop`, which must leave no process behind. Also
`make serve-readonly`, which must refuse to launch runs."""

import contextlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from pipeline_project.ops.wait import WaitTimeout, wait_until

from webdriver import Browser, browser_available, free_port

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO_ROOT / "test-artifacts"
EXPECTED_ASSETS = {
    "raw_customers",
    "raw_products",
    "raw_orders",
    "raw_order_items",
    "raw_payments",
    "raw_web_events",
    "stg_customers",
    "stg_products",
    "stg_orders",
    "stg_order_items",
    "stg_payments",
    "stg_web_events",
    "int_order_totals",
    "int_session_funnel",
    "daily_revenue",
    "customer_lifetime_value",
    "product_performance",
    "web_funnel",
    "customers_snapshot",
}
WORKSPACE_QUERY = """{
  workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus
    locationOrLoadError { __typename ... on PythonError { message } } } } ... on PythonError { message } }
  assetNodes { assetKey { path } assetChecksOrError { ... on AssetChecks { checks { name } } } }
  instance { daemonHealth { allDaemonStatuses { daemonType required healthy } } }
}"""
SENSORS_QUERY = """{
  sensorsOrError(repositorySelector: {repositoryLocationName: "pipeline_project", repositoryName: "__repository__"}) {
    ... on Sensors { results { name sensorState { status } } } }
  schedulesOrError(repositorySelector: {repositoryLocationName: "pipeline_project", repositoryName: "__repository__"}) {
    ... on Schedules { results { name scheduleState { status } } } }
}"""
LAUNCH_MUTATION = """mutation {
  launchRun(executionParams: {selector: {repositoryLocationName: "pipeline_project",
      repositoryName: "__repository__", jobName: "asset_checks"}, mode: "default"}) {
    __typename ... on PythonError { message } ... on UnauthorizedError { message } }
}"""


def _children(pid: int) -> set[int]:
    """Every live descendant of `pid`."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


def _unhealthy(workspace: dict) -> list[str]:
    daemons = workspace["instance"]["daemonHealth"]["allDaemonStatuses"]
    return [daemon["daemonType"] for daemon in daemons if daemon["required"] and not daemon["healthy"]]


def _graphql(url: str, query: str) -> dict:
    response = httpx.post(f"{url}/graphql", json={"query": query}, timeout=60)
    response.raise_for_status()
    body = response.json()
    assert "errors" not in body, body["errors"]
    return body["data"]


def _start(target: str, state: Path, port: int, log: Path) -> subprocess.Popen:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PIPELINE_", "SHOP_", "DAGSTER_", "LANDING", "METRICS_"))
    }
    env.update(
        DAGSTER_PORT=str(port), SHOP_DEMO_PORT=str(free_port()), SHOP_DEMO_SCALE="0.02", METRICS_PORT=str(free_port())
    )
    return subprocess.Popen(
        ["make", "--no-print-directory", target, f"STATE_DIR={state}"],
        cwd=REPO_ROOT,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _wait_until_serving(url: str, process: subprocess.Popen, log: Path, timeout: float = 240) -> float:
    started = time.monotonic()

    def serving() -> bool:
        assert process.poll() is None, f"exited early:\n{log.read_text()[-3000:]}"
        try:
            return httpx.get(f"{url}/server_info", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    wait_until(serving, timeout, f"{url} answering", describe=lambda _: log.read_text()[-3000:])
    return time.monotonic() - started


def _stop(state: Path, make: subprocess.Popen, tree: set[int]) -> None:
    result = subprocess.run(
        ["make", "--no-print-directory", "stop", f"STATE_DIR={state}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    make.wait(timeout=60)
    with contextlib.suppress(WaitTimeout):
        wait_until(lambda: not _alive(tree), 30, "make stop's processes gone", interval=0.5)
    leftovers = _alive(tree)
    for pid in leftovers:
        os.kill(pid, signal.SIGKILL)
    assert not leftovers, f"processes left behind: {leftovers}"


@pytest.mark.browser
def test_make_dev_serves_the_whole_graph_with_healthy_daemons_and_running_sensors(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "make-dev.log"
    make = _start("dev", tmp_path / "state", port, log)
    tree: set[int] = set()
    try:
        startup_seconds = _wait_until_serving(url, make, log)
        data = _graphql(url, WORKSPACE_QUERY)
        tree = _children(make.pid)
        entries = data["workspaceOrError"]["locationEntries"]
        assert [(e["name"], e["loadStatus"], e["locationOrLoadError"]["__typename"]) for e in entries] == [
            ("pipeline_project", "LOADED", "RepositoryLocation")
        ]
        assets = {"/".join(node["assetKey"]["path"]) for node in data["assetNodes"]}
        assert assets >= EXPECTED_ASSETS
        checks = {
            check["name"]
            for node in data["assetNodes"]
            for check in (node["assetChecksOrError"] or {}).get("checks", [])
        }
        assert {"source_reconciled", "contract_errors", "contract_warnings"} <= checks
        assert len(checks) > 20

        def healthy() -> dict | None:
            workspace = _graphql(url, WORKSPACE_QUERY)
            return None if _unhealthy(workspace) else workspace

        data = wait_until(
            healthy,
            90,
            "every required daemon healthy",
            interval=3,
            describe=lambda _: f"unhealthy daemons: {_unhealthy(_graphql(url, WORKSPACE_QUERY))}",
        )
        daemons = data["instance"]["daemonHealth"]["allDaemonStatuses"]
        assert {"SENSOR", "SCHEDULER", "FRESHNESS_DAEMON", "MONITORING"} <= {d["daemonType"] for d in daemons}
        automation = _graphql(url, SENSORS_QUERY)
        sensors = {s["name"]: s["sensorState"]["status"] for s in automation["sensorsOrError"]["results"]}
        schedules = {s["name"]: s["scheduleState"]["status"] for s in automation["schedulesOrError"]["results"]}
        for sensor in ("landing_file_sensor", "freshness_alerts", "check_alerts", "run_alerts", "alert_delivery"):
            assert sensors[sensor] == "RUNNING", sensor
        assert schedules["shop_pipeline_schedule"] == "RUNNING"
        # The metrics exporter make dev started: on loopback, reading this instance, stopped with the rest.
        exporter = re.search(r"Prometheus metrics at (http://127\.0\.0\.1:\d+/metrics)", log.read_text())
        assert exporter, log.read_text()[-3000:]
        scraped = httpx.get(exporter.group(1), timeout=60).text
        for part in ("runs", "checks", "freshness", "ledger", "monitoring"):
            assert f'pipeline_exporter_collector_up{{collector="{part}"}} 1.0' in scraped, scraped[-2000:]

        if not browser_available():
            if os.environ.get("CI"):
                pytest.fail("chromium and chromium-driver are required in CI (.ci/run installs them)")
            pytest.skip("chromium/chromedriver not installed: apt-get install chromium chromium-driver")
        browser = Browser(tmp_path / "chromium-profile")
        try:
            browser.open(f"{url}/asset-groups")
            # A fresh instance greets a new user with a newsletter dialog over the page.
            browser.wait_for_text(["Skip"], timeout=60)
            assert browser.click_button("Skip")
            # The global graph shows the groups collapsed; each group's graph shows its assets.
            browser.wait_for_text(["ingestion", "staging", "intermediate", "marts", "snapshots"])
            browser.screenshot(ARTIFACTS / "asset-groups.png")
            browser.open(f"{url}/locations/pipeline_project/asset-groups/marts")
            browser.wait_for_text(["daily_revenue", "customer_lifetime_value", "product_performance", "web_funnel"])
            browser.screenshot(ARTIFACTS / "asset-graph.png")
        finally:
            browser.close()
        assert (ARTIFACTS / "asset-graph.png").stat().st_size > 10_000
        print(f"make dev answered after {startup_seconds:.0f} s")
    finally:
        tree |= _children(make.pid)
        _stop(tmp_path / "state", make, tree)


def test_serve_readonly_refuses_to_launch_runs(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve-readonly.log"
    make = _start("serve-readonly", tmp_path / "state", port, log)
    tree: set[int] = set()
    try:
        _wait_until_serving(url, make, log)
        tree = _children(make.pid)
        permissions = _graphql(url, "{ permissions { permission value } }")["permissions"]
        assert {"launch_pipeline_execution": False}.items() <= {
            p["permission"]: p["value"] for p in permissions
        }.items()
        launched = _graphql(url, LAUNCH_MUTATION)["launchRun"]
        assert launched["__typename"] == "UnauthorizedError", launched
        assert _graphql(url, "{ runsOrError { ... on Runs { results { runId } } } }")["runsOrError"]["results"] == []
    finally:
        tree |= _children(make.pid)
        _stop(tmp_path / "state", make, tree)
