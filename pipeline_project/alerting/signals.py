"""From Dagster events to signals: what a freshness change, a check evaluation or a finished run means.

Everything here reads the event log and the definitions' SLA metadata (severity, route, owners stamped
by `policies.apply_sla_policies`); nothing reaches into an asset's data. Each function returns a `Signal`
about one subject, firing or healthy, or None when the event says nothing an on-call person needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import dagster as dg
from dagster._core.definitions.freshness import FreshnessState, FreshnessStateChange
from dagster._core.event_api import EventLogRecord
from dagster._core.events import DagsterEventType
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.tags import PARTITION_NAME_TAG, WILL_RETRY_TAG

from pipeline_project.alerting.alert import RUNBOOKS, Action, Alert, AlertKind, Severity
from pipeline_project.alerting.outbox import Signal
from pipeline_project.policies import DEFAULT_ALERT_ROUTE, DEFAULT_OWNERS, INGESTION_GROUP
from pipeline_project.secrets import redact

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
TIMEOUT_MESSAGE = "Exceeded maximum runtime"
SCHEMA_DRIFT = "schema_drift"
BLOCKING_CHECK_FAILED = "DagsterAssetCheckFailedError"
MAX_DETAILS = 12
MAX_TEXT = 600


@dataclass(frozen=True)
class AssetSla:
    group: str | None
    severity: Severity
    route: str
    owners: tuple[str, ...]


class SlaLookup:
    """Severity, route and owners of an asset, as the SLA catalogue stamped them on its spec."""

    def __init__(self, asset_graph=None):
        self._graph = asset_graph

    def __call__(self, key: dg.AssetKey) -> AssetSla:
        if self._graph is None or not self._graph.has(key):
            return AssetSla(None, Severity.ERROR, DEFAULT_ALERT_ROUTE, DEFAULT_OWNERS)
        node = self._graph.get(key)
        return AssetSla(
            group=node.group_name,
            severity=Severity(node.metadata.get("sla/severity", Severity.ERROR.value)),
            route=str(node.metadata.get("sla/alert_route", DEFAULT_ALERT_ROUTE)),
            owners=tuple(node.owners) or DEFAULT_OWNERS,
        )


def _clip(text: str) -> str:
    text = redact(text.strip())
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def _alert(kind: AlertKind, severity: Severity, title: str, summary: str, sla: AssetSla, **fields) -> Alert:
    """An alert without its keys: the outbox assigns incident and dedup keys when it queues it."""
    return Alert(
        dedup_key="",
        incident_key="",
        kind=kind,
        action=Action.TRIGGER,
        severity=severity,
        title=title,
        summary=_clip(summary),
        runbook=RUNBOOKS[kind],
        owners=sla.owners,
        route=sla.route,
        **fields,
    )


def asset_link(webserver_url: str, key: dg.AssetKey) -> str:
    return f"{webserver_url.rstrip('/')}/assets/{'/'.join(key.path)}"


def run_link(webserver_url: str, run_id: str) -> str:
    return f"{webserver_url.rstrip('/')}/runs/{run_id}"


def freshness_signal(
    record: EventLogRecord, sla_of: SlaLookup, webserver_url: str, instance: dg.DagsterInstance
) -> Signal | None:
    change: FreshnessStateChange = record.event_log_entry.dagster_event.event_specific_data
    key = change.key.to_user_string()
    sla = sla_of(change.key)
    if change.new_state not in (FreshnessState.WARN, FreshnessState.FAIL, FreshnessState.PASS):
        return None
    latest = instance.get_latest_materialization_event(change.key)
    last = f"last materialized {_iso(latest.timestamp)}" if latest else "never materialized"
    firing = change.new_state is not FreshnessState.PASS
    severity = sla.severity if change.new_state is FreshnessState.FAIL else Severity.WARN
    title = f"{key} is stale ({change.new_state.value})" if firing else f"{key} is fresh again"
    alert = _alert(
        AlertKind.FRESHNESS_BREACH,
        severity,
        title,
        f"Freshness of {key} went {change.previous_state.value} -> {change.new_state.value} at "
        f"{_iso(change.state_change_timestamp)}; {last}.",
        sla,
        asset=key,
        link=asset_link(webserver_url, change.key),
        details={"freshness_state": change.new_state.value, "previous_state": change.previous_state.value},
        occurred_at=change.state_change_timestamp,
    )
    return Signal(subject=f"freshness:{key}", firing=firing, event_id=record.storage_id, alert=alert)


def _metadata_details(metadata: dict) -> tuple[dict[str, str | int | float], str | None]:
    """Numeric metadata (failing rule counts, row counts) as details; text metadata becomes the sample."""
    details: dict[str, str | int | float] = {}
    sample = None
    for name, entry in metadata.items():
        value = getattr(entry, "value", entry)
        if isinstance(value, bool):
            continue
        if isinstance(value, int | float) and len(details) < MAX_DETAILS:
            details[name] = value
        elif name == "sample" and isinstance(value, str):
            sample = _clip(value)
    return details, sample


def check_signal(execution_id: int, entry: EventLogEntry, sla_of: SlaLookup, webserver_url: str) -> Signal:
    evaluation: dg.AssetCheckEvaluation = entry.dagster_event.event_specific_data
    key = evaluation.asset_key.to_user_string()
    partition = evaluation.partition
    subject = f"check:{key}:{evaluation.check_name}" + (f":{partition}" if partition else "")
    severity = Severity.ERROR if evaluation.severity == dg.AssetCheckSeverity.ERROR else Severity.WARN
    kind = AlertKind.SCHEMA_DRIFT if evaluation.check_name == SCHEMA_DRIFT else AlertKind.CHECK_FAILED
    details, sample = _metadata_details(dict(evaluation.metadata))
    if evaluation.passed:
        title, what = f"{key} · {evaluation.check_name} passes again", "passed"
    else:
        title, what = f"{key} · {evaluation.check_name} failed ({severity.value})", "failed"
    summary = f"Check {evaluation.check_name} on {key}{f' [{partition}]' if partition else ''} {what}."
    if evaluation.description:
        summary += f" {evaluation.description}"
    if sample and not evaluation.passed:
        summary += f"\nSample:\n{sample}"
    run_id = entry.run_id
    alert = _alert(
        kind,
        severity,
        title,
        summary,
        sla_of(evaluation.asset_key),
        asset=key,
        partition=partition,
        link=run_link(webserver_url, run_id) if run_id else asset_link(webserver_url, evaluation.asset_key),
        details={"check": evaluation.check_name, **details},
        occurred_at=entry.timestamp,
    )
    return Signal(subject=subject, firing=not evaluation.passed, event_id=execution_id, alert=alert)


def _partition_label(run: dg.DagsterRun) -> str | None:
    if partition := run.tags.get(PARTITION_NAME_TAG):
        return partition
    start, end = run.tags.get(RANGE_START_TAG), run.tags.get(RANGE_END_TAG)
    if start and end:
        return start if start == end else f"{start}..{end}"
    return None


RUN_SUBJECT_PREFIX = "run:"
UNPARTITIONED = "unpartitioned"


def run_subject(job_name: str, partition_label: str | None) -> str:
    return f"{RUN_SUBJECT_PREFIX}{job_name}:{partition_label or UNPARTITIONED}"


def _partitions_of(label: str) -> set[str]:
    """The partitions a label names: one key, or every day of a `start..end` range of daily keys."""
    if ".." not in label:
        return {label}
    start, end = label.split("..", 1)
    try:
        first, last = date.fromisoformat(start), date.fromisoformat(end)
    except ValueError:
        return {start, end}
    return {(first + timedelta(days=offset)).isoformat() for offset in range((last - first).days + 1)}


def subjects_resolved_by(run: dg.DagsterRun, open_subjects: list[str]) -> list[str]:
    """The open run incidents a successful run ends: same job, and every partition of the failed run is
    among the partitions this run materialized (a daily run resolves the failed range it covers)."""
    prefix = f"{RUN_SUBJECT_PREFIX}{run.job_name}:"
    succeeded = _partition_label(run) or UNPARTITIONED
    covered = _partitions_of(succeeded)
    return [
        subject
        for subject in open_subjects
        if subject.startswith(prefix) and _partitions_of(subject.removeprefix(prefix)) <= covered
    ]


def _root_error(error) -> str:
    while error.cause is not None:
        error = error.cause
    return error.message.strip()


def _assets_of_steps(instance: dg.DagsterInstance, run: dg.DagsterRun, step_keys: set[str]) -> set[dg.AssetKey]:
    """The assets the run was to materialize in the given steps, from the run's execution plan."""
    if not step_keys or not run.execution_plan_snapshot_id:
        return set()
    plan = instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
    keys = {
        output.properties.asset_key
        for step in plan.steps
        if step.key in step_keys
        for output in step.outputs
        if output.properties and output.properties.asset_key
    }
    return keys & set(run.asset_selection) if run.asset_selection else keys


def run_will_be_retried(run: dg.DagsterRun) -> bool | None:
    """True or False once Dagster has decided whether it re-executes the failed run, else None."""
    value = run.tags.get(WILL_RETRY_TAG)
    return None if value is None else value.lower() == "true"


def run_failure_signal(
    record: EventLogRecord, run: dg.DagsterRun, instance: dg.DagsterInstance, sla_of: SlaLookup, webserver_url: str
) -> Signal | None:
    """None when every failed step failed only because a blocking check failed: `check_alerts` reports
    each of those checks, with more to say than the run could."""
    run_failure_message = record.event_log_entry.dagster_event.message or ""
    step_failures = instance.get_records_for_run(run.run_id, of_type=DagsterEventType.STEP_FAILURE).records
    errors = [r.event_log_entry.dagster_event.event_specific_data.error for r in step_failures]
    if errors and all(error is not None and error.cls_name == BLOCKING_CHECK_FAILED for error in errors):
        return None
    failed_assets = _assets_of_steps(instance, run, {r.event_log_entry.dagster_event.step_key for r in step_failures})
    first_error = run_failure_message
    drift = False
    if step_failures:
        failure_data = step_failures[0].event_log_entry.dagster_event.event_specific_data
        first_error = _root_error(failure_data.error) if failure_data.error else first_error
        user_data = failure_data.user_failure_data
        drift = bool(user_data and SCHEMA_DRIFT in (user_data.metadata or {}))
    slas = [sla_of(key) for key in failed_assets]
    if TIMEOUT_MESSAGE in run_failure_message:
        kind = AlertKind.TRANSFORMATION_TIMEOUT
    elif drift:
        kind = AlertKind.SCHEMA_DRIFT
    elif any(sla.group == INGESTION_GROUP for sla in slas):
        kind = AlertKind.SOURCE_UNAVAILABLE
    else:
        kind = AlertKind.TRANSFORMATION_FAILED
    severity = Severity.ERROR if not slas or any(s.severity is Severity.ERROR for s in slas) else Severity.WARN
    sla = slas[0] if slas else sla_of(dg.AssetKey("__none__"))
    partition = _partition_label(run)
    assets = ", ".join(sorted(key.to_user_string() for key in failed_assets)) or "no asset recorded"
    in_partitions = f" (partition {partition})" if partition else ""
    alert = _alert(
        kind,
        severity,
        f"{run.job_name}{f' [{partition}]' if partition else ''} failed: {assets}",
        f"Run {run.run_id} of {run.job_name} failed. Failed assets: {assets}{in_partitions}. "
        f"First error: {first_error}",
        sla,
        asset=assets if failed_assets else None,
        partition=partition,
        link=run_link(webserver_url, run.run_id),
        details={"job": run.job_name, "run_id": run.run_id, "failed_assets": len(failed_assets)},
        occurred_at=record.timestamp,
    )
    return Signal(subject=run_subject(run.job_name, partition), firing=True, event_id=record.storage_id, alert=alert)


def run_success_signal(
    record: EventLogRecord, run: dg.DagsterRun, subject: str, sla_of: SlaLookup, webserver_url: str
) -> Signal:
    partition = _partition_label(run)
    alert = _alert(
        AlertKind.TRANSFORMATION_FAILED,
        Severity.ERROR,
        f"{run.job_name}{f' [{partition}]' if partition else ''} succeeded again",
        f"Run {run.run_id} of {run.job_name} succeeded.",
        sla_of(dg.AssetKey("__none__")),
        partition=partition,
        link=run_link(webserver_url, run.run_id),
        details={"job": run.job_name, "run_id": run.run_id},
        occurred_at=record.timestamp,
    )
    return Signal(subject=subject, firing=False, event_id=record.storage_id, alert=alert)


def delivery_failing_signal(channel: str, dedup_key: str, error: str, firing: bool, event_id: int) -> Signal:
    sla = AssetSla(None, Severity.ERROR, DEFAULT_ALERT_ROUTE, DEFAULT_OWNERS)
    if firing:
        title = f"alerts are not reaching the {channel} channel"
        summary = f"Delivery of {dedup_key} to {channel} keeps failing ({_clip(error)}); it was written to the log."
    else:
        title, summary = f"alerts reach the {channel} channel again", f"{channel} accepted {dedup_key}."
    alert = _alert(
        AlertKind.ALERT_DELIVERY_FAILING,
        Severity.ERROR,
        title,
        summary,
        sla,
        details={"channel": channel},
        occurred_at=0.0,
    )
    return Signal(subject=f"delivery:{channel}", firing=firing, event_id=event_id, alert=alert)
