"""The picture of the health view in docs/observability.md, from real scraped metrics (docs/observability-health.png).

    python -m pipeline_project.dev.observe_picture [--out docs/observability-health.png]

Grafana cannot be installed here, so the picture is the health view as a Prometheus console
(`prometheus/consoles/pipeline.html`: the dashboard's main row with the same queries), rendered by headless
Chromium. Everything in it is scraped, in a temporary directory, by a real Prometheus (scrape and rule
interval 2 s) from a real exporter process reading a real instance, while this happens:

1. `make alert-drill`'s rehearsal runs with the real daemon: five feeds materialize, their source goes
   down, a run fails, the feeds go stale (freshness FAIL), the webhook fails its first attempts, the source
   comes back and everything recovers; then the drill stops its daemon.
2. The whole pipeline (`shop_pipeline`, one day, the demo source at scale 0.1, real dbt) runs into the
   same instance; then a mart is made wrong, as "See an alert on your laptop" does, and the `asset_checks`
   job runs, so its ERROR contract fails.
3. Nothing runs the alert sensors any more: the heartbeat ages until `PipelineMonitoringDown` fires, and
   the picture is taken.

Needs the Debian packages `prometheus` and `chromium`; takes about ten minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import dagster as dg
import duckdb
import httpx

from pipeline_project.dev.alert_drill import run_drill
from pipeline_project.observability.process import ExporterProcess
from pipeline_project.observability.prometheus_server import PrometheusServer
from pipeline_project.settings import REPO_ROOT

OUT = REPO_ROOT / "docs" / "observability-health.png"
DAY = date(2026, 3, 14)
TOKEN = "picture-token"


def run_pipeline_day(root: Path, instance: dg.DagsterInstance) -> None:
    from demo_source import DemoShopServer, ShopWorld, write_landing_files

    world = ShopWorld(scale=0.1)
    (root / "landing").mkdir(exist_ok=True)
    write_landing_files(root / "landing", DAY, world)
    settings = {
        "PIPELINE_LAKE_DIR": str(root / "lake"),
        "PIPELINE_WAREHOUSE_PATH": str(root / "warehouse.duckdb"),
        "LANDING_DIR": str(root / "landing"),
        "SHOP_API_TOKEN": TOKEN,
    }
    with DemoShopServer(world, token=TOKEN) as server:
        os.environ.update(settings | {"SHOP_API_URL": server.url})
        from pipeline_project.definitions import defs

        tags = {
            "dagster/asset_partition_range_start": DAY.isoformat(),
            "dagster/asset_partition_range_end": DAY.isoformat(),
        }
        result = defs.resolve_job_def("shop_pipeline").execute_in_process(instance=instance, tags=tags)
        print(f"shop_pipeline for {DAY}: {'success' if result.success else 'FAILED'}", flush=True)
        with duckdb.connect(str(root / "warehouse.duckdb")) as warehouse:
            warehouse.execute("update marts.daily_revenue set net_revenue = net_revenue + 1")
        checks = defs.resolve_job_def("asset_checks").execute_in_process(instance=instance, raise_on_error=False)
        failed = [e.check_name for e in checks.get_asset_check_evaluations() if not e.passed]
        print(f"asset_checks after breaking daily_revenue: failed {failed}", flush=True)


def wait_for_alert(prometheus: PrometheusServer, name: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(a["labels"]["alertname"] == name and a["state"] == "firing" for a in prometheus.alerts()):
            return
        time.sleep(2)
    raise RuntimeError(f"{name} did not fire within {timeout:g} s")


def screenshot(url: str, out: Path) -> None:
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                chromium,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                f"--user-data-dir={profile}",
                "--window-size=1500,1250",
                "--virtual-time-budget=20000",
                f"--screenshot={out}",
                url,
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--keep", type=Path, help="work here and keep it (default: a temp dir)")
    args = parser.parse_args(argv)
    root = args.keep or Path(tempfile.mkdtemp(prefix="observe-picture-"))
    env = {
        "DAGSTER_HOME": str(root / "dagster_home"),
        "ALERT_DIR": str(root / "alerts"),
        "PIPELINE_LAKE_DIR": str(root / "lake"),
        "METRICS_CACHE_SECONDS": "1",
    }
    try:
        with ExporterProcess(root / "exporter.log", port=0, env=env) as exporter:
            target = exporter.url.removeprefix("http://").removesuffix("/metrics")
            with PrometheusServer(root / "prometheus", target, interval="2s") as prometheus:
                print(f"exporter {exporter.url}, prometheus {prometheus.url}", flush=True)
                run_drill(root, interval=5)
                os.environ["DAGSTER_HOME"] = env["DAGSTER_HOME"]
                with dg.DagsterInstance.get() as instance:
                    run_pipeline_day(root, instance)
                print("waiting for the stopped daemon's heartbeat to go stale", flush=True)
                wait_for_alert(prometheus, "PipelineMonitoringDown", timeout=300)
                time.sleep(6)
                page = f"{prometheus.url}/consoles/pipeline.html"
                httpx.get(page, timeout=30).raise_for_status()
                screenshot(page, args.out)
                print(f"wrote {args.out}", flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
