"""Reading a finished run back from the Dagster event log: per-asset rows, quarantine, checks and time."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import dagster as dg
from dagster import DagsterEventType


@dataclass
class AssetSummary:
    rows: int | None = None
    quarantined: int | None = None
    partitions: int = 0
    seconds: float | None = None
    checks_passed: int = 0
    checks_failed: list[str] = field(default_factory=list)


@dataclass
class RunSummary:
    run_id: str
    success: bool
    assets: dict[str, AssetSummary]
    failed_error_checks: list[str]
    failed_warn_checks: list[str]
    step_seconds: dict[str, float]
    first_error: str | None

    @property
    def ok(self) -> bool:
        return self.success and not self.failed_error_checks


def _value(entry) -> object:
    return getattr(entry, "value", entry)


def summarize_run(instance: dg.DagsterInstance, run_id: str) -> RunSummary:
    assets: dict[str, AssetSummary] = defaultdict(AssetSummary)
    step_started: dict[str, float] = {}
    step_seconds: dict[str, float] = {}
    failed_error, failed_warn = [], []
    first_error = None
    kinds = {
        DagsterEventType.STEP_START,
        DagsterEventType.STEP_SUCCESS,
        DagsterEventType.STEP_FAILURE,
        DagsterEventType.ASSET_MATERIALIZATION,
        DagsterEventType.ASSET_CHECK_EVALUATION,
    }
    for record in instance.all_logs(run_id, of_type=kinds):
        event = record.dagster_event
        if event is None:
            continue
        if event.event_type == DagsterEventType.STEP_START:
            step_started[event.step_key] = record.timestamp
        elif event.event_type in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE):
            step_seconds[event.step_key] = record.timestamp - step_started.get(event.step_key, record.timestamp)
            error = event.step_failure_data.error if event.event_type == DagsterEventType.STEP_FAILURE else None
            # A step that failed only because a blocking check failed is already counted as that check.
            if error and error.cls_name != "DagsterAssetCheckFailedError" and first_error is None:
                first_error = f"{event.step_key}: {error.message.strip().splitlines()[0]}"
        elif event.event_type == DagsterEventType.ASSET_MATERIALIZATION:
            materialization = event.event_specific_data.materialization
            summary = assets[materialization.asset_key.to_user_string()]
            metadata = materialization.metadata
            summary.partitions += 1 if materialization.partition else 0
            if "dagster/row_count" in metadata:
                summary.rows = (summary.rows or 0) + int(_value(metadata["dagster/row_count"]))
            if "quarantined_count" in metadata:
                summary.quarantined = (summary.quarantined or 0) + int(_value(metadata["quarantined_count"]))
            if "Execution Duration" in metadata:
                summary.seconds = float(_value(metadata["Execution Duration"]))
            elif event.step_key in step_started:
                summary.seconds = record.timestamp - step_started[event.step_key]
        elif event.event_type == DagsterEventType.ASSET_CHECK_EVALUATION:
            evaluation = event.event_specific_data
            name = f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}"
            summary = assets[evaluation.asset_key.to_user_string()]
            if evaluation.passed:
                summary.checks_passed += 1
                continue
            summary.checks_failed.append(evaluation.check_name)
            if evaluation.severity == dg.AssetCheckSeverity.ERROR:
                failed_error.append(name)
            else:
                failed_warn.append(name)
    run = instance.get_run_by_id(run_id)
    return RunSummary(
        run_id=run_id,
        success=run is not None and run.status == dg.DagsterRunStatus.SUCCESS,
        assets=dict(assets),
        failed_error_checks=failed_error,
        failed_warn_checks=failed_warn,
        step_seconds=step_seconds,
        first_error=first_error,
    )


def format_summary(summary: RunSummary) -> str:
    header = f"{'asset':<26}{'rows':>11}{'quarantined':>13}{'checks ok':>11}{'failed':>8}{'seconds':>9}"
    lines = [header, "-" * len(header)]
    for key in sorted(summary.assets, key=lambda k: (not k.startswith("raw_"), k)):
        asset = summary.assets[key]
        lines.append(
            f"{key:<26}"
            f"{'' if asset.rows is None else f'{asset.rows:,}':>11}"
            f"{'' if asset.quarantined is None else f'{asset.quarantined:,}':>13}"
            f"{asset.checks_passed:>11}{len(asset.checks_failed):>8}"
            f"{'' if asset.seconds is None else f'{asset.seconds:.1f}':>9}"
        )
    lines.append("-" * len(header))
    for name in summary.failed_error_checks:
        lines.append(f"FAILED (ERROR) {name}")
    for name in summary.failed_warn_checks:
        lines.append(f"failed (WARN)  {name}")
    if summary.first_error:
        lines.append(f"first error: {summary.first_error}")
    return "\n".join(lines)
