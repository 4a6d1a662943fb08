"""End to end with a real Prometheus on loopback (free port, temp dir) scraping a real exporter process
with the repository's rules: the monitoring-down and freshness alerts fire from scraped values, the
recording rules record, and the monitoring-down alert resolves once the heartbeat ticks again."""

from __future__ import annotations

import json
import shutil
import threading
import time

import dagster as dg
import pytest
from dagster._core.definitions.freshness import FreshnessState, FreshnessStateChange

from pipeline_project.observability.process import ExporterProcess
from pipeline_project.observability.prometheus_server import PrometheusServer, prometheus_binary
from pipeline_project.ops.wait import wait_until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        prometheus_binary() is None or shutil.which("promtool") is None,
        reason="prometheus/promtool are not installed (Debian package `prometheus`; .ci/run installs it)",
    ),
]


def firing(prometheus: PrometheusServer, name: str) -> list[dict]:
    return [a for a in prometheus.alerts() if a["labels"]["alertname"] == name and a["state"] == "firing"]


def test_prometheus_scrapes_the_exporter_and_alerts_fire_and_resolve(tmp_path):
    home, alerts = tmp_path / "dagster_home", tmp_path / "alerts"
    home.mkdir()
    alerts.mkdir()
    heartbeat = alerts / "heartbeat.json"
    heartbeat.write_text(json.dumps({"ticked_at": time.time() - 3600, "pending_deliveries": 0}))
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        for asset, state in (("daily_revenue", FreshnessState.FAIL), ("raw_orders", FreshnessState.PASS)):
            instance.report_runless_asset_event(dg.AssetMaterialization(asset))
            instance.report_runless_asset_event(
                FreshnessStateChange(
                    key=dg.AssetKey(asset),
                    previous_state=FreshnessState.UNKNOWN,
                    new_state=state,
                    state_change_timestamp=time.time(),
                )
            )
    env = {
        "DAGSTER_HOME": str(home),
        "PIPELINE_LAKE_DIR": str(tmp_path / "lake"),
        "ALERT_DIR": str(alerts),
        "METRICS_CACHE_SECONDS": "0",
    }
    with ExporterProcess(tmp_path / "exporter.log", port=0, env=env) as exporter:
        target = exporter.url.removeprefix("http://").removesuffix("/metrics")
        with PrometheusServer(tmp_path / "prometheus", target, interval="1s") as prometheus:
            # A stale heartbeat: monitoring is down.
            [down] = wait_until(
                lambda: firing(prometheus, "PipelineMonitoringDown"), 30, "PipelineMonitoringDown firing", interval=0.25
            )
            assert down["labels"]["severity"] == "critical" and float(down["value"]) >= 3600
            [stale] = wait_until(
                lambda: firing(prometheus, "PipelineAssetFreshnessFail"),
                30,
                "PipelineAssetFreshnessFail firing",
                interval=0.25,
            )
            assert stale["labels"]["asset"] == "daily_revenue"
            [up] = prometheus.query('up{job="pipeline"}')
            assert up["value"][1] == "1"

            def recorded() -> dict[str, str]:
                return {r["metric"]["state"]: r["value"][1] for r in prometheus.query("state:pipeline_assets:count")}

            counts = wait_until(
                lambda: "FAIL" in recorded() and recorded(), 30, "the assets per state recorded", interval=0.25
            )
            assert counts["FAIL"] == "1" and counts["PASS"] == "1"
            assert not firing(prometheus, "PipelineAlertOutboxBacklog")
            assert not firing(prometheus, "PipelineExporterDown")

            # The delivery loop ticks again: the alert resolves.
            ticking = threading.Event()

            def tick() -> None:
                while not ticking.wait(0.5):
                    heartbeat.write_text(json.dumps({"ticked_at": time.time(), "pending_deliveries": 0}))

            ticker = threading.Thread(target=tick, daemon=True)
            ticker.start()
            try:
                wait_until(
                    lambda: not firing(prometheus, "PipelineMonitoringDown"),
                    30,
                    "PipelineMonitoringDown resolved",
                    interval=0.25,
                )
                [age] = prometheus.query("pipeline_monitoring_heartbeat_age_seconds")
                assert float(age["value"][1]) < 150
            finally:
                ticking.set()
                ticker.join()
            assert firing(prometheus, "PipelineAssetFreshnessFail"), "the stale asset's alert went away on its own"
