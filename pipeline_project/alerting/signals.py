"""From Dagster events to signals: what a freshness change, a check evaluation or a finished run means.

Everything here reads the event log and the definitions' SLA metadata (severity, route, owners stamped
by `policies.apply_sla_policies`); nothing reaches into an asset's data. Each function returns a `Signal`
about one subject, firing or healthy, or None when the event says nothing an on-call person needs.

Every alert carries its failed selection (job, assets, partitions) and the `oncall` commands to diagnose it,
rerun exactly that selection and verify the recovery (`alert.rerun_command`, `alert.verify_command`). A run
alert names the root cause first: the first error of the run that is not a consequence of another (a
request not sent because the circuit breaker is open is a consequence of the failures that opened it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import dagster as dg
from dagster import DagsterEventType, EventLogEntry, EventLogRecord
from dagster._core.definitions.freshness import FreshnessState, FreshnessStateChange
from dagster._core.storage.tags import PARTITION_NAME_TAG, WILL_RETRY_TAG

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
from pipeline_project.alerting.outbox import Signal
from pipeline_project.catalog.policies import DEFAULT_ALERT_ROUTE, DEFAULT_OWNERS, INGESTION_GROUP
from pipeline_project.secrets import redact

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
TIMEOUT_MESSAGE = "Exceeded maximum runtime"
SCHEMA_DRIFT = "schema_drift"
BLOCKING_CHECK_FAILED = "DagsterAssetCheckFailedError"
MAX_DETAILS = 12
MAX_TEXT = 600
# Errors that are consequences of an earlier failure, not its cause: a request the circuit breaker did not
# send (`sources.ShopApiClient`), a dbt build stopped because its run was terminated (`dbt_assets`).
CONSEQUENCES = ("not sent: circuit open for", "interrupted because the run was terminated")


@dataclass(frozen=True)
class AssetSla:
    group: str | None
    severity: Severity
    route: str
    owners: tuple[str, ...]


class SlaLookup:
    """Severity, route and owners of an asset, as the SLA catalogue stamped them on its spec; and what the
    definitions say about its neighbours and partitions (an alert's rerun selection needs them)."""

    def __init__(self, asset_graph=None):
        self._graph = asset_graph

    def _known(self, key: dg.AssetKey) -> bool:
        return self._graph is not None and self._graph.has(key)

    def ancestors_and_self(self, key: dg.AssetKey) -> set[dg.AssetKey]:
        return set(self._graph.get_ancestor_asset_keys(key, include_self=True)) if self._known(key) else {key}

    def self_and_descendants(self, key: dg.AssetKey) -> set[dg.AssetKey]:
        found, frontier = {key}, {key}
        while frontier and self._known(key):
            frontier = {child for parent in frontier for child in self._graph.get(parent).child_keys} - found
            found |= frontier
        return found

    def last_partition(self, keys: set[dg.AssetKey]) -> str | None:
        """The last partition of the first partitioned asset among `keys` (the day that should be there)."""
        for key in sorted(keys, key=lambda k: k.to_user_string()):
            partitions = self._graph.get(key).partitions_def if self._known(key) else None
            if partitions is not None:
                return partitions.get_last_partition_key()
        return None

    def is_partitioned(self, key: dg.AssetKey) -> bool:
        return self._known(key) and self._graph.get(key).partitions_def is not None

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


def _run_partitions(instance: dg.DagsterInstance | None, run_id: str | None) -> tuple[str, ...]:
    run = instance.get_run_by_id(run_id) if instance is not None and run_id else None
    label = _partition_label(run) if run is not None else None
    return tuple(sorted(_partitions_of(label))) if label else ()


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
        partitions = (partition,) if partition else _run_partitions(instance, run_id)
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


def _partition_label(run: dg.DagsterRun) -> str | None:
    if partition := run.tags.get(PARTITION_NAME_TAG):
        return partition
    start, end = run.tags.get(RANGE_START_TAG), run.tags.get(RANGE_END_TAG)
    if start and end:
        return start if start == end else f"{start}..{end}"
    return None


RUN_SUBJECT_PREFIX = "run:"
UNPARTITIONED = "unpartitioned"


def run_subject(job_name: str, partition_label: str | None, failed_assets: tuple[str, ...] = ()) -> str:
    """`run:<job>:<partition or range>[:<failed asset>,...]`: one incident per job, partitions and failed assets."""
    subject = f"{RUN_SUBJECT_PREFIX}{job_name}:{partition_label or UNPARTITIONED}"
    return f"{subject}:{','.join(sorted(failed_assets))}" if failed_assets else subject


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
    """The open run incidents a successful run ends: same job, every partition of the failed run is among
    the partitions this run materialized (a daily run resolves the failed range it covers), and every asset
    that failed is among the assets it materialized (all of the job's, or its asset selection): an ad-hoc
    run of other assets of the same day does not close the incident."""
    prefix = f"{RUN_SUBJECT_PREFIX}{run.job_name}:"
    covered = _partitions_of(_partition_label(run) or UNPARTITIONED)
    selected = {key.to_user_string() for key in run.asset_selection} if run.asset_selection else None
    resolved = []
    for subject in open_subjects:
        if not subject.startswith(prefix):
            continue
        label, _, failed = subject.removeprefix(prefix).partition(":")
        failed_assets = set(failed.split(",")) if failed else set()
        if _partitions_of(label) <= covered and (selected is None or failed_assets <= selected):
            resolved.append(subject)
    return resolved


def _failure_text(record: EventLogRecord) -> str | None:
    """What a step failure or retry says went wrong: a dg.Failure's own description, else the root error."""
    data = record.event_log_entry.dagster_event.event_specific_data
    failure = getattr(data, "user_failure_data", None)
    if failure is not None and failure.description:
        return failure.description.strip()
    error = getattr(data, "error", None)
    if error is None:
        return None
    while error.cause is not None:
        error = error.cause
    text = error.message.strip()
    # A retry's event keeps no failure data: a dg.Failure reads "<module>.Failure: <description>" there.
    return text.split(": ", 1)[-1] if error.cls_name == "Failure" else text


def root_cause(instance: dg.DagsterInstance, run: dg.DagsterRun) -> str | None:
    """The first error of the run, in the order they happened, that is not a consequence of another one."""
    records = instance.get_records_for_run(
        run.run_id, of_type={DagsterEventType.STEP_UP_FOR_RETRY, DagsterEventType.STEP_FAILURE}
    ).records
    texts = [text for text in (_failure_text(r) for r in sorted(records, key=lambda r: r.storage_id)) if text]
    return next((text for text in texts if not any(mark in text for mark in CONSEQUENCES)), texts[0] if texts else None)


def _planned_assets(instance: dg.DagsterInstance, run: dg.DagsterRun) -> set[dg.AssetKey]:
    """The assets the run was to materialize: its asset selection, or every asset of its execution plan."""
    if run.asset_selection:
        return set(run.asset_selection)
    if not run.execution_plan_snapshot_id:
        return set()
    plan = instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
    return {
        output.properties.asset_key
        for step in plan.steps
        for output in step.outputs
        if output.properties and output.properties.asset_key
    }


def _materialized_assets(instance: dg.DagsterInstance, run: dg.DagsterRun) -> set[dg.AssetKey]:
    records = instance.get_records_for_run(run.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION).records
    return {record.event_log_entry.dagster_event.asset_key for record in records}


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
    partition = _partition_label(run)
    partitions = tuple(sorted(_partitions_of(partition))) if partition else ()
    assets = ", ".join(sorted(key.to_user_string() for key in failed_assets)) or "no asset recorded"
    in_partitions = f" (partition {partition})" if partition else ""
    # What the run did not get done: its failed assets and those skipped or left unfinished because of them.
    rerun = _names((_planned_assets(instance, run) - _materialized_assets(instance, run)) or failed_assets)
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
    partition = _partition_label(run)
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
