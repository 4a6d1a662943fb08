"""What the event log of a failed run tells: its root cause, the assets it was to materialize and those it did,
the assets of its failed steps, and whether Dagster retries it.

The root cause is the first error of the run that is not a consequence of another (a request not sent because
the circuit breaker is open is a consequence of the failures that opened it).
"""

from __future__ import annotations

import dagster as dg
from dagster import DagsterEventType, EventLogRecord
from dagster._core.storage.tags import WILL_RETRY_TAG

# Errors that are consequences of an earlier failure, not its cause: a request the circuit breaker did not
# send (`sources.ShopApiClient`), a dbt build stopped because its run was terminated (`dbt_assets`).
CONSEQUENCES = ("not sent: circuit open for", "interrupted because the run was terminated")


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


def planned_assets(instance: dg.DagsterInstance, run: dg.DagsterRun) -> set[dg.AssetKey]:
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


def materialized_assets(instance: dg.DagsterInstance, run: dg.DagsterRun) -> set[dg.AssetKey]:
    records = instance.get_records_for_run(run.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION).records
    return {record.event_log_entry.dagster_event.asset_key for record in records}


def assets_of_steps(instance: dg.DagsterInstance, run: dg.DagsterRun, step_keys: set[str]) -> set[dg.AssetKey]:
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
