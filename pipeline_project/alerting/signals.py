"""From Dagster events to signals: what a freshness change, a check evaluation or a finished run means.

Everything here reads the event log and the definitions' SLA metadata (severity, route, owners stamped
by `policies.apply_sla_policies`, read through `sla.SlaLookup`); nothing reaches into an asset's data. Each
function returns a `Signal` about one subject (`run_subjects` for runs), firing or healthy, or None when the
event says nothing an on-call person needs.

Every alert carries its failed selection (job, assets, partitions) and the `oncall` commands to diagnose it,
rerun exactly that selection and verify the recovery (`alert.rerun_command`, `alert.verify_command`). A run
alert names the root cause first (`failed_run.root_cause`).
"""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
from dagster import DagsterEventType, EventLogEntry, EventLogRecord
from dagster._core.definitions.freshness import FreshnessState, FreshnessStateChange

from pipeline_project.alerting.alert import (
    AD_HOC_JOB,
    DIAGNOSE,
    NOTHING_TO_RERUN,
    RERUN,
    RUNBOOKS,
    VERIFY,
    Action,
    Alert,
    AlertKind,
    Severity,
    job_label,
    rerun_command,
    verify_command,
)
from pipeline_project.alerting.failed_run import assets_of_steps, materialized_assets, planned_assets, root_cause
from pipeline_project.alerting.outbox import Signal
from pipeline_project.alerting.run_subjects import partition_label_of, partitions_of, run_partitions, run_subject
from pipeline_project.alerting.sla import AssetSla, SlaLookup
from pipeline_project.catalog.policies import DEFAULT_ALERT_ROUTE, DEFAULT_OWNERS, INGESTION_GROUP
from pipeline_project.secrets import redact

TIMEOUT_MESSAGE = "Exceeded maximum runtime"
SCHEMA_DRIFT = "schema_drift"
BLOCKING_CHECK_FAILED = "DagsterAssetCheckFailedError"
MAX_DETAILS = 12
MAX_TEXT = 600


def _clip(text: str) -> str:
    text = redact(text.strip())
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def _names(keys) -> tuple[str, ...]:
    return tuple(sorted(key.to_user_string() for key in keys))


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
    # Fresh again only with new inputs: the asset and everything upstream, for the day that should be there.
    selection = sla_of.ancestors_and_self(change.key)
    day = sla_of.last_partition(selection)
    partitions = (day,) if day else ()
    commands = {
        DIAGNOSE: f"oncall freshness {key}",
        RERUN: rerun_command(AD_HOC_JOB, _names(selection), partitions),
        VERIFY: verify_command([key], after=change.state_change_timestamp, fresh=True),
    }
    alert = _alert(
        AlertKind.FRESHNESS_BREACH,
        severity,
        title,
        f"Freshness of {key} went {change.previous_state.value} -> {change.new_state.value} at "
        f"{_iso(change.state_change_timestamp)}; {last}.",
        sla,
        asset=key,
        link=asset_link(webserver_url, change.key),
        details={"freshness_state": change.new_state.value, "previous_state": change.previous_state.value, **commands},
        occurred_at=change.state_change_timestamp,
        job=AD_HOC_JOB,
        assets=_names(selection),
        partitions=partitions,
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


def check_signal(
    execution_id: int,
    entry: EventLogEntry,
    sla_of: SlaLookup,
    webserver_url: str,
    instance: dg.DagsterInstance | None = None,
) -> Signal:
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
    # The rerun rebuilds the asset and what its failed (blocking) check kept from being built downstream.
    selection = _names(sla_of.self_and_descendants(evaluation.asset_key))
    partitions: tuple[str, ...] = ()
    if sla_of.is_partitioned(evaluation.asset_key):
        partitions = (partition,) if partition else run_partitions(instance, run_id)
    commands = {
        DIAGNOSE: f"oncall run-checks {run_id}" if run_id else f"oncall freshness {key}",
        RERUN: rerun_command(AD_HOC_JOB, selection, partitions),
        VERIFY: verify_command([key], partitions, after=entry.timestamp, check=evaluation.check_name),
    }
    alert = _alert(
        kind,
        severity,
        title,
        summary,
        sla_of(evaluation.asset_key),
        asset=key,
        partition=partition,
        link=run_link(webserver_url, run_id) if run_id else asset_link(webserver_url, evaluation.asset_key),
        details={"check": evaluation.check_name, **details, **commands},
        occurred_at=entry.timestamp,
        job=AD_HOC_JOB,
        assets=selection,
        partitions=partitions,
    )
    return Signal(subject=subject, firing=not evaluation.passed, event_id=execution_id, alert=alert)


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
    failed_assets = assets_of_steps(instance, run, {r.event_log_entry.dagster_event.step_key for r in step_failures})
    drift = any(
        (data := r.event_log_entry.dagster_event.event_specific_data).user_failure_data
        and SCHEMA_DRIFT in (data.user_failure_data.metadata or {})
        for r in step_failures
    )
    # Run monitoring fails a run that ran too long, then the run worker records its own failure once the step
    # it interrupted has stopped: whichever of the two this event is, the run timed out.
    timeout = next(
        (
            text.strip()
            for r in instance.get_records_for_run(run.run_id, of_type=DagsterEventType.RUN_FAILURE).records
            if TIMEOUT_MESSAGE in (text := r.event_log_entry.dagster_event.message or "")
        ),
        None,
    )
    timed_out = timeout is not None
    first_error = timeout if timed_out else root_cause(instance, run) or run_failure_message
    slas = [sla_of(key) for key in failed_assets]
    if timed_out:
        kind = AlertKind.TRANSFORMATION_TIMEOUT
    elif drift:
        kind = AlertKind.SCHEMA_DRIFT
    elif any(sla.group == INGESTION_GROUP for sla in slas):
        kind = AlertKind.SOURCE_UNAVAILABLE
    else:
        kind = AlertKind.TRANSFORMATION_FAILED
    severity = Severity.ERROR if not slas or any(s.severity is Severity.ERROR for s in slas) else Severity.WARN
    sla = slas[0] if slas else sla_of(dg.AssetKey("__none__"))
    partition = partition_label_of(run)
    partitions = tuple(sorted(partitions_of(partition))) if partition else ()
    assets = ", ".join(sorted(key.to_user_string() for key in failed_assets)) or "no asset recorded"
    in_partitions = f" (partition {partition})" if partition else ""
    # What the run did not get done: its failed assets and those skipped or left unfinished because of them.
    rerun = _names((planned_assets(instance, run) - materialized_assets(instance, run)) or failed_assets)
    commands = {
        DIAGNOSE: f"oncall run-errors {run.run_id}",
        RERUN: rerun_command(run.job_name, rerun, partitions) if rerun else NOTHING_TO_RERUN,
        VERIFY: verify_command(rerun, partitions, after=record.timestamp),
    }
    job = job_label(run.job_name)
    alert = _alert(
        kind,
        severity,
        f"{job}{f' [{partition}]' if partition else ''} failed: {assets}",
        f"Run {run.run_id} ({job}, job {run.job_name}) failed. Failed assets: {assets}{in_partitions}. "
        f"Root cause: {first_error}",
        sla,
        asset=assets if failed_assets else None,
        partition=partition,
        link=run_link(webserver_url, run.run_id),
        details={"job": run.job_name, "run_id": run.run_id, "failed_assets": len(failed_assets), **commands},
        occurred_at=record.timestamp,
        job=run.job_name,
        assets=rerun,
        partitions=partitions,
    )
    subject = run_subject(run.job_name, partition, _names(failed_assets))
    return Signal(subject=subject, firing=True, event_id=record.storage_id, alert=alert)


def run_success_signal(
    record: EventLogRecord, run: dg.DagsterRun, subject: str, sla_of: SlaLookup, webserver_url: str
) -> Signal:
    partition = partition_label_of(run)
    job = job_label(run.job_name)
    alert = _alert(
        AlertKind.TRANSFORMATION_FAILED,
        Severity.ERROR,
        f"{job}{f' [{partition}]' if partition else ''} succeeded again",
        f"Run {run.run_id} ({job}, job {run.job_name}) succeeded.",
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
    commands = {
        DIAGNOSE: f"oncall deliveries --channel {channel}",
        RERUN: f"{NOTHING_TO_RERUN}: the outbox retries every pending delivery until {channel} accepts it",
        VERIFY: f"oncall verify --channel {channel}",
    }
    alert = _alert(
        AlertKind.ALERT_DELIVERY_FAILING,
        Severity.ERROR,
        title,
        summary,
        sla,
        details={"channel": channel, **commands},
        occurred_at=0.0,
    )
    return Signal(subject=f"delivery:{channel}", firing=firing, event_id=event_id, alert=alert)
