"""Recovering from an incident: rerun exactly its failed selection (through the webserver, as the UI would),
wait and report; verify the recovery the way the alert defines it (the selection materialized since the
alert, its checks passing, its raw partitions reconciled, its freshness back, the incident resolved)."""

from __future__ import annotations

import argparse
import os
import shlex
import time
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime

from pipeline_project.alerting.alert import NOTHING_TO_RERUN, AlertKind, job_label, partitions_argument
from pipeline_project.ops.oncall.alerts import Incident, load_incident, pending_deliveries
from pipeline_project.ops.oncall.common import (
    OncallError,
    dagster_instance,
    partition_label,
    print_table,
    raw_tables,
    say,
    utc,
)
from pipeline_project.ops.wait import WaitTimeout, wait_until

RUN_WAIT_SECONDS = 3600
IN_FLIGHT = ("QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING")


@dataclass(frozen=True)
class Target:
    """What an incident (or the options given instead) says to rerun and to verify."""

    job: str | None = None
    assets: tuple[str, ...] = ()
    partitions: tuple[str, ...] = ()
    after: float | None = None
    check: str | None = None
    fresh: bool = False
    channel: str | None = None
    incident: Incident | None = None


def target_of(args: argparse.Namespace) -> Target:
    found = load_incident(args.incident) if getattr(args, "incident", None) else None
    alert = found.alert if found else None
    after = getattr(args, "after", None)
    details = alert.details if alert else {}
    return Target(
        job=getattr(args, "job", None) or (alert.job if alert else None),
        assets=tuple(getattr(args, "assets", None) or (alert.assets if alert else ())),
        partitions=tuple(getattr(args, "partitions", None) or (alert.partitions if alert else ())),
        after=after.timestamp() if after else (alert.occurred_at or found.opened_at) if alert else None,
        check=getattr(args, "check", None) or (str(details["check"]) if "check" in details else None),
        fresh=getattr(args, "fresh", False) or bool(alert and alert.kind is AlertKind.FRESHNESS_BREACH),
        channel=getattr(args, "channel", None) or (str(details["channel"]) if "channel" in details else None),
        incident=found,
    )


def _overlaps(run_partitions: str | None, wanted: tuple[str, ...]) -> bool:
    from pipeline_project.alerting.alert import parse_partitions

    if not run_partitions or not wanted:
        return True
    try:
        return bool(set(parse_partitions(run_partitions)) & set(wanted))
    except ValueError:
        return True


def _same_assets(run, assets: tuple[str, ...]) -> bool:
    """The run materializes some of `assets` (a run without an asset selection may materialize any)."""
    return not run.asset_selection or bool({key.to_user_string() for key in run.asset_selection} & set(assets))


# ------------------------------------------------------------------------------------------ rerun
def rerun(args: argparse.Namespace) -> int:
    from pipeline_project.ops.webserver import Webserver, WebserverError

    target = target_of(args)
    if target.channel:
        say(f"{NOTHING_TO_RERUN}: the outbox retries every pending delivery until {target.channel} accepts it")
        return 0
    if target.incident is not None and target.incident.resolved and not args.force:
        say(
            f"{NOTHING_TO_RERUN}: incident {target.incident.key} was resolved {utc(target.incident.resolved_at)} "
            "(a later run recovered it; --force reruns anyway)"
        )
        return 0
    if not target.job or not target.assets:
        raise OncallError(f"{NOTHING_TO_RERUN}: the incident names no job and assets (give --job and --assets)")
    what = f"{job_label(target.job)} (job {target.job}) of {', '.join(target.assets)}"
    if target.partitions:
        what += f" for {partitions_argument(target.partitions)}"
    with dagster_instance() as instance:
        in_flight = [
            record.dagster_run
            for record in instance.get_run_records(limit=100)
            if record.dagster_run.status.value in IN_FLIGHT
            and _overlaps(partition_label(record.dagster_run.tags), target.partitions)
            and _same_assets(record.dagster_run, target.assets)
        ]
        if in_flight and not args.force:
            running = ", ".join(f"{run.run_id} ({run.status.value})" for run in in_flight)
            raise OncallError(
                f"not rerunning {what}: a run of the same assets and days is in flight: {running}. Wait for it "
                "(`oncall runs`), or pass --force if you know it is stuck"
            )
        webserver = Webserver(os.environ["DAGSTER_WEBSERVER_URL"])
        try:
            run_id = webserver.launch(target.job, target.assets, target.partitions)
        except WebserverError as error:
            raise OncallError(str(error)) from None
        say(f"launched run {run_id}: {what}")
        say(f"  {webserver.url}/runs/{run_id}")
        if args.no_wait:
            return 0
        return report_run(instance, run_id, args.timeout, target.incident)


def report_run(instance, run_id: str, timeout: float, incident: Incident | None) -> int:
    import dagster as dg

    from pipeline_project.ops.oncall.runs import show_run_checks, show_run_errors

    try:
        run = wait_until(
            lambda: (run := instance.get_run_by_id(run_id)) is not None and run.is_finished and run,
            timeout=timeout,
            what=f"run {run_id} finished",
            interval=2.0,
        )
    except WaitTimeout as error:
        raise OncallError(f"{error}; it goes on running: `oncall runs`, `oncall run-errors {run_id}`") from None
    [record] = instance.get_run_records(dg.RunsFilter(run_ids=[run_id]))
    seconds = (record.end_time or time.time()) - (record.start_time or record.create_timestamp.timestamp())
    say(f"run {run_id} {run.status.value} in {seconds:.0f} s")
    materialized: dict[str, list[str]] = {}
    for entry in instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records:
        event = entry.event_log_entry.dagster_event
        materialized.setdefault(event.asset_key.to_user_string(), []).append(event.partition or "")
    if materialized:
        print_table(
            ("materialized", "partitions"),
            [(asset, partitions_argument(p for p in days if p) or "-") for asset, days in sorted(materialized.items())],
        )
    show_run_checks(instance, run, show_all=False)
    if run.status is not dg.DagsterRunStatus.SUCCESS:
        show_run_errors(instance, run)
        return 1
    if incident is not None:
        say(
            f"the incident resolves at the monitoring sensors' next tick: "
            f"`oncall verify {shlex.quote(incident.key)} --wait 300` waits for it"
        )
    return 0


# ------------------------------------------------------------------------------------------ verify
@dataclass
class Verification:
    lines: list[tuple[str, str]] = field(default_factory=list)  # (verdict, what)

    def add(self, ok: bool | None, what: str) -> None:
        self.lines.append(("ok" if ok else "note" if ok is None else "NOT YET", what))

    @property
    def ok(self) -> bool:
        return all(verdict != "NOT YET" for verdict, _ in self.lines)

    def __str__(self) -> str:
        return "; ".join(what for verdict, what in self.lines if verdict == "NOT YET") or "recovered"


def _verify_asset(instance, verification: Verification, asset: str, target: Target) -> None:
    import dagster as dg
    from dagster._core.storage.asset_check_execution_record import COMPLETED_ASSET_CHECK_EXECUTION_RECORD_STATUSES

    key = dg.AssetKey.from_user_string(asset)
    [record] = instance.get_asset_records([key]) or [None]
    last = record.asset_entry.last_materialization if record else None
    if last is None:
        verification.add(False, f"{asset}: never materialized")
        return
    partitions = target.partitions if last.dagster_event.partition is not None else ()
    runs = set()
    for partition in partitions or (None,):
        records_filter = dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition else None)
        [latest] = instance.fetch_materializations(records_filter, limit=1).records or [None]
        where = f"{asset}{f' {partition}' if partition else ''}"
        if latest is None:
            verification.add(False, f"{where}: never materialized")
            continue
        when = latest.timestamp
        fresh = target.after is None or when > target.after
        since = f" (the alert: {utc(target.after)})" if target.after else ""
        verification.add(fresh, f"{where}: materialized {utc(when)} by run {latest.run_id[:8]}{since}")
        runs.add(latest.run_id)
    if target.check:
        check_key = dg.AssetCheckKey(key, target.check)
        history = instance.event_log_storage.get_asset_check_execution_history(
            check_key, limit=20, status=COMPLETED_ASSET_CHECK_EXECUTION_RECORD_STATUSES
        )
        latest_check = next((h for h in history if not partitions or h.partition in (None, *partitions)), None)
        if latest_check is None:
            verification.add(False, f"{asset} · {target.check}: not evaluated")
        else:
            passed = latest_check.evaluation is not None and latest_check.evaluation.passed
            recent = target.after is None or latest_check.create_timestamp > target.after
            verification.add(
                passed and recent,
                f"{asset} · {target.check}: {'passed' if passed else 'FAILED'} {utc(latest_check.create_timestamp)}",
            )
    else:
        evaluations = [
            entry.dagster_event.event_specific_data
            for run_id in runs
            for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
            if entry.dagster_event.event_specific_data.asset_key == key
        ]
        errors = [e for e in evaluations if not e.passed and e.severity == dg.AssetCheckSeverity.ERROR]
        warnings = [e for e in evaluations if not e.passed and e.severity != dg.AssetCheckSeverity.ERROR]
        if evaluations:
            verification.add(
                not errors,
                f"{asset}: {len(evaluations) - len(errors) - len(warnings)} check(s) passed"
                + (f", ERROR checks failing: {', '.join(e.check_name for e in errors)}" if errors else ""),
            )
        if warnings:
            verification.add(None, f"{asset}: WARN checks failing: {', '.join(w.check_name for w in warnings)}")
    if target.fresh:
        from pipeline_project.ops.oncall.runs import freshness_states

        state = freshness_states(instance, [key])[key]
        shown = state.value if state else "not evaluated"
        verification.add(state is not None and state.value == "PASS", f"{asset}: freshness {shown}")


def evaluate(target: Target) -> Verification:
    verification = Verification()
    if target.channel:
        pending = pending_deliveries(target.channel)
        verification.add(not pending, f"{target.channel}: {len(pending)} alert(s) not delivered yet")
    if target.assets:
        with dagster_instance() as instance:
            for asset in target.assets:
                _verify_asset(instance, verification, asset, target)
    if tables := raw_tables(target.assets):
        from pipeline_project.ops.oncall.lake import OK, lake, partition_states

        if target.partitions:
            for state in partition_states(lake(), target.partitions, tables):
                detail = "reconciles with its manifest" if state.verdict == OK else "; ".join(state.problems)
                verification.add(state.verdict == OK, f"raw {state.table} {state.day}: {detail}")
    if target.incident is not None:
        resolved = load_incident(target.incident.key)
        state = f"resolved {utc(resolved.resolved_at)}" if resolved.resolved else "still open"
        verification.add(resolved.resolved, f"incident {resolved.key}: {state}")
    return verification


def verify(args: argparse.Namespace) -> int:
    target = target_of(args)
    if not (target.assets or target.channel):
        raise OncallError("nothing to verify: give an incident, or --assets (or --channel)")
    if target.incident is not None:
        alert = target.incident.alert
        say(f"verifying incident {target.incident.key} ({alert.kind.value}: {alert.title})")
    verification = evaluate(target)
    if args.wait and not verification.ok:
        say(f"waiting up to {args.wait:.0f} s: {verification}")

        def recovered() -> Verification | None:
            nonlocal verification
            verification = evaluate(target)
            return verification if verification.ok else None

        with suppress(WaitTimeout):  # the last evaluation is reported below
            wait_until(recovered, timeout=args.wait, what="recovery", interval=3.0)
    for verdict, what in verification.lines:
        say(f"  {verdict:<8} {what}")
    say("verdict: RECOVERED" if verification.ok else "verdict: NOT RECOVERED")
    return 0 if verification.ok else 1


def after_argument(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
