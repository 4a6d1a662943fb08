"""Freshness per asset, as the Dagster instance records it: the freshness daemon's latest state and the
time since the asset was last materialized (any partition).

Three queries per scrape whatever the history: the asset keys, their asset records (which carry the
latest materialization) and their latest freshness state changes (`get_freshness_state_records`). The
states are exported as a state set: one series per state, 1 for the current one, so alert rules and
dashboards select `state="FAIL"` rather than decoding a number.
"""

from __future__ import annotations

import time

import dagster as dg
from dagster._core.definitions.freshness import FreshnessState
from prometheus_client.core import GaugeMetricFamily

STATES = [state.value for state in FreshnessState]


def families(instance: dg.DagsterInstance, now: float | None = None) -> list[GaugeMetricFamily]:
    now = time.time() if now is None else now
    state = GaugeMetricFamily(
        "pipeline_asset_freshness_state",
        "Freshness state of the asset (1 for the current state: PASS, WARN, FAIL, UNKNOWN, NOT_APPLICABLE)",
        labels=["asset", "state"],
    )
    lag = GaugeMetricFamily(
        "pipeline_asset_freshness_lag_seconds", "Seconds since the asset was last materialized", labels=["asset"]
    )
    keys = list(instance.get_asset_keys())
    if not keys:
        return [state, lag]
    for record in sorted(instance.get_asset_records(keys), key=lambda r: r.asset_entry.asset_key.to_user_string()):
        latest = record.asset_entry.last_materialization_record
        if latest is not None:
            lag.add_metric([record.asset_entry.asset_key.to_user_string()], max(now - latest.timestamp, 0.0))
    records = instance.get_freshness_state_records(keys)
    for key in sorted(records, key=lambda k: k.to_user_string()):
        current = records[key].freshness_state.value
        for name in STATES:
            state.add_metric([key.to_user_string(), name], 1.0 if name == current else 0.0)
    return [state, lag]
