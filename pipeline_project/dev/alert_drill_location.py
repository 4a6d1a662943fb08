"""The code location of the alert drill (`alert_drill.py`): five feeds read from a loopback source, each with
a one-minute freshness window, the SLA catalogue applied, and the real monitoring sensors and alerting
resource (with a one-second retry base, so a flapping channel recovers within the drill)."""

import os
from datetime import timedelta

import dagster as dg
import httpx

from pipeline_project.alerting.resource import alerting_resource_from_env
from pipeline_project.alerting.sensors import monitoring_sensors
from pipeline_project.catalog.policies import INGESTION_GROUP, apply_sla_policies

FEEDS = [f"feed_{number}" for number in range(5)]
FRESHNESS = dg.FreshnessPolicy.time_window(fail_window=timedelta(minutes=1))


def _feed(name: str) -> dg.AssetsDefinition:
    @dg.asset(name=name, group_name=INGESTION_GROUP, freshness_policy=FRESHNESS, kinds={"python"})
    def feed() -> dg.MaterializeResult:
        response = httpx.get(os.environ["DRILL_SOURCE_URL"], timeout=5)
        response.raise_for_status()
        return dg.MaterializeResult(metadata={"bytes": len(response.content)})

    return feed


feeds = [_feed(name) for name in FEEDS]

defs = apply_sla_policies(
    dg.Definitions(
        assets=feeds,
        sensors=monitoring_sensors,
        resources={"alerting": alerting_resource_from_env(retry_base_seconds=1.0)},
    )
)
