"""The SLA catalogue: freshness, owners, severity, runbook, alert route, retries and pool, declared once.

Every asset group has exactly one entry. `apply_sla_policies` stamps the spec-level parts (freshness
policy, owners, runbook and alert metadata) onto every asset of the group; the op-level parts (retry
policy, pool) are read from here by the asset factories, since Dagster sets those when an op is built.
`tests/test_policies.py` fails if any materializable asset lacks one of them.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import timedelta

import dagster as dg

from pipeline_project.alerting.channels import channel_names

# DuckDB allows one writer process per database file: everything that writes or reads the warehouse
# shares this pool, whose limit is 1 (`concurrency.pools.default_limit` in dagster.yaml).
WAREHOUSE_POOL = "duckdb_warehouse"

INGESTION_GROUP = "ingestion"
DBT_GROUPS = ("staging", "intermediate", "marts", "snapshots")


@dataclass(frozen=True)
class SlaPolicy:
    freshness: dg.FreshnessPolicy
    owners: tuple[str, ...]
    severity: str
    runbook: str
    alert_route: str
    retry: dg.RetryPolicy
    pool: str | None


# PIPELINE_RETRY_DELAY_SCALE shortens the waits between step retries, never their number: the runbook drills
# (tests/drills) set 0.02, so that a source outage fails in seconds rather than minutes. Unset in production.
RETRY_DELAY_SCALE = float(os.environ.get("PIPELINE_RETRY_DELAY_SCALE") or 1)
_INGESTION_RETRY = dg.RetryPolicy(
    max_retries=3, delay=15 * RETRY_DELAY_SCALE, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)
_WAREHOUSE_RETRY = dg.RetryPolicy(
    max_retries=2, delay=30 * RETRY_DELAY_SCALE, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)
# Daily partitions land shortly after midnight UTC; a day's data older than this is late.
_DAILY = dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=26), warn_window=timedelta(hours=25))
_DAILY_MART = dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=27), warn_window=timedelta(hours=26))

_TRANSFORMATION = SlaPolicy(
    freshness=_DAILY_MART,
    owners=("team:analytics-engineering",),
    severity="WARN",
    runbook="runbooks/transformation-failure.md",
    alert_route="analytics-engineering",
    retry=_WAREHOUSE_RETRY,
    pool=WAREHOUSE_POOL,
)

SLA_CATALOGUE: dict[str, SlaPolicy] = {
    INGESTION_GROUP: SlaPolicy(
        freshness=_DAILY,
        owners=("team:data-platform",),
        severity="ERROR",
        runbook="runbooks/source-unavailable.md",
        alert_route="data-platform-oncall",
        retry=_INGESTION_RETRY,
        pool=None,
    ),
    "staging": _TRANSFORMATION,
    "intermediate": _TRANSFORMATION,
    # What dashboards read: a late or wrong mart pages the on-call.
    "marts": replace(
        _TRANSFORMATION,
        severity="ERROR",
        runbook="runbooks/freshness-breach.md",
        alert_route="analytics-engineering-oncall",
    ),
    "snapshots": _TRANSFORMATION,
}


@dataclass(frozen=True)
class AlertRoute:
    """The channels an alert on this route goes to: `page` for ERROR, `notify` for WARN, by their names in
    the channel registry (`alerting/channels/`). Channels that are not configured are skipped; the log
    channel is always configured. A name the registry does not know fails loading (`check_alert_routes`)."""

    page: tuple[str, ...]
    notify: tuple[str, ...]


_ON_CALL = AlertRoute(page=("pagerduty", "slack", "webhook", "email", "log"), notify=("slack", "webhook", "log"))
ALERT_ROUTES: dict[str, AlertRoute] = {
    "data-platform-oncall": _ON_CALL,
    "analytics-engineering-oncall": _ON_CALL,
    # Intermediate layers page nobody: a broken view shows up again, louder, in the marts that read it.
    "analytics-engineering": AlertRoute(page=("slack", "webhook", "email", "log"), notify=("slack", "webhook", "log")),
}
# Alerts about no asset in particular (alert delivery failing) and about assets outside the catalogue.
DEFAULT_ALERT_ROUTE = "data-platform-oncall"
DEFAULT_OWNERS = ("team:data-platform",)


def check_alert_routes(routes: Mapping[str, AlertRoute] | None = None) -> None:
    """Fail when a route names a channel the registry does not know (a typo that would otherwise page
    nobody), or when the catalogue or the default names a route that does not exist (which would fall back
    to the default route unnoticed). Run when the SLA catalogue is applied, so a code location with such a
    route does not load; the error names the route, the unknown channel and the known ones."""
    routes = ALERT_ROUTES if routes is None else routes
    known = channel_names()
    problems = [
        f"route {name!r} names the unknown channel {channel!r} in its {kind} list"
        for name, route in routes.items()
        for kind in ("page", "notify")
        for channel in getattr(route, kind)
        if channel not in known
    ]
    used = {f"group {group!r}": policy.alert_route for group, policy in SLA_CATALOGUE.items()}
    used["DEFAULT_ALERT_ROUTE"] = DEFAULT_ALERT_ROUTE
    problems += [f"{where} names the unknown route {route!r}" for where, route in used.items() if route not in routes]
    if problems:
        raise ValueError(
            f"alert routes (pipeline_project/catalog/policies.py): {'; '.join(problems)}. "
            f"Known channels: {', '.join(known)}; known routes: {', '.join(routes)}"
        )


def op_policy(groups: tuple[str, ...]) -> SlaPolicy:
    """The policy whose retry and pool govern one op that materializes assets of several groups."""
    policies = {(SLA_CATALOGUE[group].retry, SLA_CATALOGUE[group].pool) for group in groups}
    if len(policies) != 1:
        raise ValueError(f"groups {groups} run in one op but disagree on retry policy or pool")
    return SLA_CATALOGUE[groups[0]]


def _stamp(policy: SlaPolicy):
    def stamp(spec: dg.AssetSpec) -> dg.AssetSpec:
        spec = dg.apply_freshness_policy(spec, policy.freshness, overwrite_existing=False)
        return spec.replace_attributes(owners=list(policy.owners)).merge_attributes(
            metadata={
                "runbook": policy.runbook,
                "sla/severity": policy.severity,
                "sla/alert_route": policy.alert_route,
            }
        )

    return stamp


def apply_sla_policies(defs: dg.Definitions) -> dg.Definitions:
    check_alert_routes()
    # map_resolved_asset_specs and group selections are marked preview/beta; they are the documented way to
    # apply a policy by selection in 1.13, so their warnings would only be noise at every load.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        warnings.simplefilter("ignore", dg.PreviewWarning)
        for group, policy in SLA_CATALOGUE.items():
            defs = defs.map_resolved_asset_specs(func=_stamp(policy), selection=f"group:{group}")
    return defs
