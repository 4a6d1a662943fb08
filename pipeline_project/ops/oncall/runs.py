"""Runs, their errors and checks, freshness, the warehouse pool and the daemon, read from the Dagster instance."""

from __future__ import annotations

import argparse
import time
from contextlib import suppress
from pathlib import Path

import dagster as dg
from dagster._core.definitions.freshness import FreshnessState

from pipeline_project.alerting.alert import job_label
from pipeline_project.catalog.policies import WAREHOUSE_POOL
from pipeline_project.dev.runtime import process_alive
from pipeline_project.ops.oncall.common import (
    METADATA_LIMIT,
    clip,
    dagster_instance,
    find_run,
    partition_label,
    print_table,
    say,
    utc,
)

RUN_PROBLEMS = {
    dg.DagsterEventType.STEP_FAILURE,
    dg.DagsterEventType.STEP_UP_FOR_RETRY,
    dg.DagsterEventType.RUN_CANCELING,
    dg.DagsterEventType.RUN_CANCELED,
    dg.DagsterEventType.RUN_FAILURE,
}
# The metadata of a failed check that shows what failed (mart contracts, dbt tests, reconciliation, drift).
CHECK_EVIDENCE = (
    "fail/",
    "dagster_dbt/failed_row_count",
    "partitions_failing",
    "rows_checked",
    "schema_drift",
    "sample",
)
# Listing order of `freshness`: the stalest first.
FRESHNESS_RANK = {
    FreshnessState.FAIL: 0,
    FreshnessState.WARN: 1,
    FreshnessState.UNKNOWN: 2,
    None: 3,  # no state recorded: the freshness daemon has not evaluated the asset
    FreshnessState.PASS: 4,
    FreshnessState.NOT_APPLICABLE: 5,
}
# A daemon that has not written a heartbeat for this long is not running (Dagster's own threshold).
DAEMON_HEARTBEAT_TOLERANCE_SECONDS = 60


def runs(args: argparse.Namespace) -> int:
    with dagster_instance() as instance:
        records = instance.get_run_records(limit=args.count)
    if not records:
        say("no runs recorded yet")
        return 0
    print_table(
        ("run id", "job", "status", "started (UTC)", "partition"),
        [
            (
                record.dagster_run.run_id,
                record.dagster_run.job_name,
                record.dagster_run.status.value,
                utc(record.start_time) or "not started",
                partition_label(record.dagster_run.tags),
            )
            for record in records
        ],
    )
    return 0


def show_run_errors(instance: dg.DagsterInstance, run: dg.DagsterRun) -> None:
    entries = instance.all_logs(run.run_id, of_type=RUN_PROBLEMS)
    partition = partition_label(run.tags) or "-"
    label = job_label(run.job_name)
    job = run.job_name if label == run.job_name else f"{run.job_name} ({label})"
    say(f"run {run.run_id}  job {job}  status {run.status.value}  partition {partition}")
    if not entries:
        say("no step failure, retry or run failure recorded")
    for entry in entries:
        event = entry.dagster_event
        data = event.event_specific_data
        error = getattr(data, "error", None)
        failure = getattr(data, "user_failure_data", None)  # a dg.Failure's own description and metadata
        text = failure.description if failure and failure.description else error.message if error else event.message
        say(f"{event.event_type_value} {entry.step_key or '(run)'}: {clip(text)}")
        while error is not None and error.cause is not None:
            error = error.cause
            say(f"    caused by: {clip(error.message)}")
        for name, value in (failure.metadata or {}).items() if failure else ():
            say(f"    {name}: {clip(value, METADATA_LIMIT)}")


def run_errors(args: argparse.Namespace) -> int:
    with dagster_instance() as instance:
        show_run_errors(instance, find_run(instance, args.run_id))
    return 0


def show_run_checks(instance: dg.DagsterInstance, run: dg.DagsterRun, show_all: bool) -> list:
    """Print the run's failed checks (all with `show_all`); return the failed evaluations."""
    entries = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
    evaluations = [entry.dagster_event.event_specific_data for entry in entries]
    failed = [check for check in evaluations if not check.passed]
    shown = evaluations if show_all else failed
    if not shown:
        say(f"no failed check in run {run.run_id} ({len(evaluations)} evaluated; --all lists them)")
        return failed
    print_table(
        ("result", "severity", "asset", "check", "partition"),
        [
            ("pass" if c.passed else "FAIL", c.severity.value, c.asset_key.to_user_string(), c.check_name, c.partition)
            for c in shown
        ],
    )
    for check in failed:
        evidence = {name: value for name, value in check.metadata.items() if name.startswith(CHECK_EVIDENCE)}
        if evidence:
            say(f"{check.asset_key.to_user_string()} {check.check_name}:")
            for name, value in evidence.items():
                say(f"    {name}: {clip(value, METADATA_LIMIT)}")
    return failed


def run_checks(args: argparse.Namespace) -> int:
    with dagster_instance() as instance:
        show_run_checks(instance, find_run(instance, args.run_id), args.all)
    return 0


def freshness_states(instance: dg.DagsterInstance, keys: list[dg.AssetKey]) -> dict:
    states = instance.get_freshness_state_records(keys)
    return {key: states[key].freshness_state if key in states else None for key in keys}


def freshness(args: argparse.Namespace) -> int:
    with dagster_instance() as instance:
        keys = [dg.AssetKey.from_user_string(name) for name in args.assets] or list(instance.get_asset_keys())
        states = freshness_states(instance, keys)
        latest = {
            record.asset_entry.asset_key: record.asset_entry.last_materialization
            for record in instance.get_asset_records(keys)
        }
    if not keys:
        say("no asset materialized yet")
        return 0
    now = time.time()
    rows = []
    for key in keys:
        state = states[key]
        last = latest.get(key)
        age = f"{(now - last.timestamp) / 3600:.1f} h ago" if last else "never materialized"
        rows.append((FRESHNESS_RANK[state], key.to_user_string(), state.value if state else "no state yet", age))
    if not args.assets:
        rows.sort()
    print_table(("asset", "freshness", "last materialized"), [row[1:] for row in rows])
    return 0


def pool(args: argparse.Namespace) -> int:
    with dagster_instance() as instance:
        info = instance.event_log_storage.get_concurrency_info(WAREHOUSE_POOL)
    limit = "no limit set" if info.limit is None else f"{info.limit} slot(s)"
    say(f"{WAREHOUSE_POOL} ({limit}): {len(info.claimed_slots)} taken")
    for slot in info.claimed_slots:
        say(f"    held by run {slot.run_id} step {slot.step_key}")
    for step in info.pending_steps:
        if step.assigned_timestamp is None:
            say(
                f"    waiting since {step.enqueued_timestamp:%Y-%m-%d %H:%M:%S}: run {step.run_id} step {step.step_key}"
            )
    return 0


def daemons(args: argparse.Namespace) -> int:
    """Is the daemon alive (its heartbeats), and are the schedules and sensors running (their last ticks)?"""
    from dagster._core.scheduler.instigation import InstigatorStatus

    now = time.time()
    with dagster_instance() as instance:
        beats = instance.get_daemon_heartbeats()
        states = instance.all_instigator_state()
        ticks = {
            state.instigator_origin_id: instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=1)
            for state in states
        }
    rows, healthy = [], bool(beats)
    for name, beat in sorted(beats.items()):
        age = now - beat.timestamp
        alive = age <= DAEMON_HEARTBEAT_TOLERANCE_SECONDS and not beat.errors
        healthy &= alive
        rows.append((name, "running" if alive else "NOT RUNNING", f"{age:.0f} s ago", clip(beat.errors, 200) or None))
    if rows:
        print_table(("daemon", "state", "last heartbeat", "errors"), rows)
    else:
        say("no daemon has ever run against this instance (locally: `make dev` starts one)")
    rows = []
    for state in sorted(states, key=lambda s: (s.instigator_type.value, s.instigator_name)):
        [tick] = ticks[state.instigator_origin_id] or [None]
        running = state.status in (InstigatorStatus.RUNNING, InstigatorStatus.DECLARED_IN_CODE)
        rows.append(
            (
                state.instigator_type.value.lower(),
                state.instigator_name,
                "RUNNING" if running else "STOPPED",
                utc(tick.timestamp) if tick else "never",
                tick.status.value if tick else None,
            )
        )
    if rows:
        print_table(("kind", "name", "state", "last tick (UTC)", "tick result"), rows)
    return 0 if healthy else 1


def run_processes(run_id: str) -> list[tuple[int, str]]:
    """Live processes of this host that belong to the run: its run worker (whose arguments name the run) and
    its dbt (whose target path carries the run id's first 7 characters), from /proc."""
    marks = (run_id, f"shop_dbt_assets-{run_id[:7]}-")
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        pid = int(cmdline.parent.name)
        if text and any(mark in text for mark in marks) and "run-stopped" not in text and process_alive(pid):
            found.append((pid, text))
    return found


def _retries(instance: dg.DagsterInstance, run: dg.DagsterRun) -> list[dg.DagsterRun]:
    """The runs Dagster's run retries launched after this one (dagster.yaml `run_retries`), in order."""
    group = instance.get_run_group(run.run_id)
    later, parent = [], run.run_id
    for candidate in sorted(group[1] if group else [], key=lambda r: int(r.tags.get("dagster/retry_number", 0))):
        if candidate.parent_run_id == parent and candidate.tags.get("dagster/retry_number"):
            later.append(candidate)
            parent = candidate.run_id
    return later


def _still_going(instance: dg.DagsterInstance, run_id: str) -> list[tuple[str, str]]:
    """(what, detail) of everything of the run that is not over: automatic retries queued or running, and
    live processes of the run or of its retries."""
    run = instance.get_run_by_id(run_id)
    going = [(f"retry {r.run_id}", r.status.value) for r in _retries(instance, run) if not r.is_finished]
    for each in [run, *_retries(instance, run)]:
        going += [(f"pid {pid} of run {each.run_id[:8]}", clip(text, 140)) for pid, text in run_processes(each.run_id)]
    return going


def run_stopped(args: argparse.Namespace) -> int:
    """Is everything of a stopped run over: its processes (its dbt holds the warehouse until it exits) and the
    re-executions Dagster's run retries may have launched of it (they would run the same selection)?"""
    from pipeline_project.ops.oncall.common import OncallError
    from pipeline_project.ops.wait import WaitTimeout, wait_until

    with dagster_instance() as instance:
        run = find_run(instance, args.run_id)
        if not run.is_finished:
            raise OncallError(f"run {run.run_id} is {run.status.value}, not stopped: `oncall runs`")
        going = _still_going(instance, run.run_id)
        if going and args.wait:
            say(f"waiting up to {args.wait:.0f} s for {len(going)} process(es) or retries of run {run.run_id} ...")
            with suppress(WaitTimeout):
                wait_until(lambda: not _still_going(instance, run.run_id), args.wait, f"run {run.run_id} over")
            going = _still_going(instance, run.run_id)
        retries = _retries(instance, run)
    for retry in retries:
        say(f"Dagster's run retries re-executed it: run {retry.run_id} {retry.status.value}")
    if not going:
        say(f"no process of run {run.run_id} ({run.status.value}) or of its retries is left on this host")
        return 0
    print_table(("what", "state"), going)
    return 1
