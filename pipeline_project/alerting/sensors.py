"""The monitoring sensors: three read the event log and queue alerts, one delivers them.

- `freshness_alerts`: FRESHNESS_STATE_CHANGE events (written by the freshness daemon): WARN and FAIL
  open an incident, PASS resolves it.
- `check_alerts`: evaluations of the checks in the definitions: a failed check opens an incident (ERROR
  pages, WARN notifies), the next passing evaluation of that check resolves it. dbt tests and pandera
  contracts alike.
- `run_alerts`: RUN_FAILURE events of runs Dagster will not retry (a run that is retried alerts only if
  its retry fails too), resolved by the next successful run of the same job and partition.
- `alert_delivery`: sends what is due in the outbox, with backoff, and writes the heartbeat.

Each detection sensor keeps the storage id of the last event it handled as its cursor and moves it only
after the alert is safely in the outbox; the outbox makes handling an event twice harmless. The first
evaluation looks back `FIRST_TICK_LOOKBACK_SECONDS` only, so an instance with history does not page for
incidents of last month. All four are RUNNING by default.
"""

import json
import os
import time
from collections.abc import Callable, Iterator

import dagster as dg
from dagster import DagsterEventType, EventLogRecord
from dagster._core.storage.asset_check_execution_record import (
    AssetCheckExecutionRecord,
    AssetCheckExecutionRecordStatus,
)

from pipeline_project.alerting.alert import Alert, Severity
from pipeline_project.alerting.channels import Channel
from pipeline_project.alerting.delivery import LOG_CHANNEL, deliver_due, write_heartbeat
from pipeline_project.alerting.failed_run import run_will_be_retried
from pipeline_project.alerting.outbox import Outbox, Signal
from pipeline_project.alerting.resource import AlertingResource
from pipeline_project.alerting.run_subjects import RUN_SUBJECT_PREFIX, subjects_resolved_by
from pipeline_project.alerting.signals import check_signal, freshness_signal, run_failure_signal, run_success_signal
from pipeline_project.alerting.sla import SlaLookup
from pipeline_project.catalog.policies import ALERT_ROUTES, DEFAULT_ALERT_ROUTE

FIRST_TICK_LOOKBACK_SECONDS = 3600
# How long a failed run may stay without Dagster's verdict on retrying it before we alert anyway.
RETRY_DECISION_GRACE_SECONDS = 60
RECORDS_PER_TICK = 200
# A check still PLANNED after this long belongs to a run that died; it will never complete.
ABANDONED_CHECK_SECONDS = 3600
SENSOR_INTERVAL_SECONDS = int(os.environ.get("ALERT_SENSOR_INTERVAL_SECONDS", "30"))


def route_channels(alert: Alert, available: dict[str, Channel]) -> list[str]:
    """The channels of the alert's route that are on. Routes name registered channels only (loading the
    definitions fails otherwise: `policies.check_alert_routes`), so a name missing from `available` is a
    channel whose settings are empty, and is skipped."""
    route = ALERT_ROUTES.get(alert.route or DEFAULT_ALERT_ROUTE, ALERT_ROUTES[DEFAULT_ALERT_ROUTE])
    wanted = route.page if alert.severity is Severity.ERROR else route.notify
    return [name for name in wanted if name in available] or [LOG_CHANNEL]


def _freshness_changes(instance: dg.DagsterInstance, cursor: int | None) -> list[EventLogRecord]:
    if cursor is None:
        records_filter = dg.EventRecordsFilter(
            event_type=DagsterEventType.FRESHNESS_STATE_CHANGE,
            after_timestamp=time.time() - FIRST_TICK_LOOKBACK_SECONDS,
        )
    else:
        records_filter = dg.EventRecordsFilter(event_type=DagsterEventType.FRESHNESS_STATE_CHANGE, after_cursor=cursor)
    return list(instance.event_log_storage.get_event_records(records_filter, limit=RECORDS_PER_TICK, ascending=True))


def _run_status_changes(
    instance: dg.DagsterInstance, event_type: DagsterEventType, cursor: int | None
) -> list[EventLogRecord]:
    records_filter = dg.RunStatusChangeRecordsFilter(
        event_type=event_type,
        after_storage_id=cursor,
        after_timestamp=time.time() - FIRST_TICK_LOOKBACK_SECONDS if cursor is None else None,
    )
    return list(instance.fetch_run_status_changes(records_filter, limit=RECORDS_PER_TICK, ascending=True).records)


def _queue_and_send(alerting: AlertingResource, signals: Callable[[Outbox], Iterator[Signal | None]]) -> str:
    """Record every signal in the outbox as it comes (the caller moves its cursor as the iterator
    advances), then try to deliver at once what was queued; the delivery sensor retries the rest."""
    outbox, channels = alerting.outbox(), alerting.channels()
    seen = queued = 0
    for signal in signals(outbox):
        seen += 1
        if signal is not None and outbox.record(signal, route_channels(signal.alert, channels)):
            queued += 1
    if not queued:
        return f"{seen} event(s), no new alert"
    return f"{seen} event(s), {queued} alert(s) queued; {deliver_due(outbox, channels)}"


def _interval_sensor(name: str, description: str):
    return dg.sensor(
        name=name,
        description=description,
        minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )


@_interval_sensor("freshness_alerts", "Alerts when an asset goes stale (freshness WARN/FAIL) and when it recovers.")
def freshness_alerts(context: dg.SensorEvaluationContext, alerting: AlertingResource):
    cursor = int(context.cursor) if context.cursor else None
    sla_of = SlaLookup(context.repository_def.asset_graph if context.repository_def else None)

    def signals(outbox: Outbox):
        for record in _freshness_changes(context.instance, cursor):
            yield freshness_signal(record, sla_of, alerting.webserver_url, context.instance)
            context.update_cursor(str(record.storage_id))

    return dg.SkipReason(_queue_and_send(alerting, signals))


def _new_check_executions(
    instance: dg.DagsterInstance, check_key: dg.AssetCheckKey, seen: int | None
) -> Iterator[AssetCheckExecutionRecord]:
    """Completed evaluations of one check newer than `seen`, oldest first, up to the first one still
    running (it is picked up once it completes); runs that died mid-check leave rows that never do: those of
    a run that has ended are passed over at once, any other after ABANDONED_CHECK_SECONDS."""
    history = instance.event_log_storage.get_asset_check_execution_history(check_key, limit=RECORDS_PER_TICK)
    for execution in sorted(history, key=lambda record: record.id):
        if seen is None and execution.create_timestamp < time.time() - FIRST_TICK_LOOKBACK_SECONDS:
            continue
        if seen is not None and execution.id <= seen:
            continue
        if execution.status is AssetCheckExecutionRecordStatus.PLANNED:
            run = instance.get_run_by_id(execution.run_id)
            if run is not None and run.is_finished:
                continue  # its run ended (stopped, timed out, crashed) without evaluating it: it never will
            if time.time() - execution.create_timestamp < ABANDONED_CHECK_SECONDS:
                return
            continue
        yield execution


@_interval_sensor("check_alerts", "Alerts on failed asset checks (ERROR pages, WARN notifies) and their recovery.")
def check_alerts(context: dg.SensorEvaluationContext, alerting: AlertingResource):
    # Evaluations are read per check from the check-execution index, which every instance storage
    # supports; a scan of the event log by event type needs a storage that is not sharded by run.
    seen: dict[str, int] = json.loads(context.cursor) if context.cursor else {}
    graph = context.repository_def.asset_graph
    sla_of = SlaLookup(graph)

    def signals(outbox: Outbox):
        for check_key in sorted(graph.asset_check_keys, key=lambda key: key.to_user_string()):
            name = check_key.to_user_string()
            for execution in _new_check_executions(context.instance, check_key, seen.get(name)):
                yield check_signal(execution.id, execution.event, sla_of, alerting.webserver_url, context.instance)
                seen[name] = execution.id
                context.update_cursor(json.dumps(seen, sort_keys=True))

    return dg.SkipReason(_queue_and_send(alerting, signals))


@_interval_sensor(
    "run_alerts",
    "Alerts once per failed run that will not be retried (naming failed assets, partitions and the first "
    "error) and when the same job and partition succeed again.",
)
def run_alerts(context: dg.SensorEvaluationContext, alerting: AlertingResource):
    cursors = json.loads(context.cursor) if context.cursor else {}
    sla_of = SlaLookup(context.repository_def.asset_graph if context.repository_def else None)
    instance = context.instance

    def save(kind: str, storage_id: int) -> None:
        cursors[kind] = storage_id
        context.update_cursor(json.dumps(cursors, sort_keys=True))

    def signals(outbox: Outbox):
        # One stream in storage order, so a success resolves only a failure that happened before it.
        failures = _run_status_changes(instance, DagsterEventType.RUN_FAILURE, cursors.get("failure"))
        successes = _run_status_changes(instance, DagsterEventType.RUN_SUCCESS, cursors.get("success"))
        # A list cut at the page limit may hide older events of the other kind beyond its last one.
        cut = min(
            (page[-1].storage_id for page in (failures, successes) if len(page) == RECORDS_PER_TICK), default=None
        )
        records = sorted(
            [("failure", r) for r in failures] + [("success", r) for r in successes],
            key=lambda item: item[1].storage_id,
        )
        for outcome, record in records:
            if cut is not None and record.storage_id > cut:
                return
            run = instance.get_run_by_id(record.event_log_entry.run_id)
            if run is None:
                yield None
            elif outcome == "success":
                for subject in subjects_resolved_by(run, outbox.open_subjects(RUN_SUBJECT_PREFIX)):
                    yield run_success_signal(record, run, subject, sla_of, alerting.webserver_url)
            else:
                will_retry = run_will_be_retried(run)
                undecided = will_retry is None and instance.run_retries_enabled
                if undecided and time.time() - record.timestamp < RETRY_DECISION_GRACE_SECONDS:
                    return  # Dagster tags a failed run with its retry decision right after the failure.
                yield None if will_retry else run_failure_signal(record, run, instance, sla_of, alerting.webserver_url)
            save(outcome, record.storage_id)

    return dg.SkipReason(_queue_and_send(alerting, signals))


@_interval_sensor("alert_delivery", "Delivers queued alerts with backoff and writes the monitoring heartbeat.")
def alert_delivery(context: dg.SensorEvaluationContext, alerting: AlertingResource):
    outbox = alerting.outbox()
    report = deliver_due(outbox, alerting.channels())
    write_heartbeat(alerting.heartbeat_path, outbox, report)
    return dg.SkipReason(f"{report}; {outbox.pending_count()} pending")


monitoring_sensors = [freshness_alerts, check_alerts, run_alerts, alert_delivery]
