"""Asset check results by severity: the latest result of every known check, and evaluations counted.

The exporter does not load the code location, so it learns which checks exist from the runs that
evaluated them: the check evaluations of each newly finished run (`runs.RunTracker` hands over their
ids; one query per run, on that run's records, which SQLite storage keeps in a file per run: 40-150 ms for
a run with 85 check evaluations). At start only the newest `runs_per_collection` (10) runs of the lookback
are read (a day's daily run evaluates every check), so the first scrape stays short; after that every
finished run is read, at most `runs_per_collection` per collection, newest first, the rest in the next
collections (a burst of backfill runs; `pipeline_asset_check_runs_unread` says how many wait). The
latest result of every known check is one query (`get_latest_asset_check_execution_by_key`); a check whose
latest execution is still planned (its run is in progress) keeps its previous completed result.
"""

from __future__ import annotations

from collections import Counter

import dagster as dg
from dagster import DagsterEventType
from dagster._core.storage.asset_check_execution_record import (
    COMPLETED_ASSET_CHECK_EXECUTION_RECORD_STATUSES,
    AssetCheckExecutionRecord,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

SEVERITIES = [severity.value for severity in dg.AssetCheckSeverity]


def _result(record: AssetCheckExecutionRecord | None) -> tuple[bool, str] | None:
    """(passed, severity) of a completed execution, else None."""
    if record is None or record.status not in COMPLETED_ASSET_CHECK_EXECUTION_RECORD_STATUSES or record.event is None:
        return None
    evaluation = record.event.dagster_event.event_specific_data if record.event.dagster_event else None
    if not isinstance(evaluation, dg.AssetCheckEvaluation):
        return None
    return evaluation.passed, evaluation.severity.value


class CheckTracker:
    def __init__(self, runs_per_collection: int = 10) -> None:
        self.runs_per_collection = runs_per_collection
        self._unread: list[str] = []  # oldest first
        self._started = False
        self.keys: set[dg.AssetCheckKey] = set()
        self.evaluations: Counter[tuple[str, str]] = Counter()
        self._latest: dict[dg.AssetCheckKey, tuple[bool, str]] = {}

    def observe_runs(self, instance: dg.DagsterInstance, run_ids: list[str]) -> None:
        """Queue newly finished runs (`read_runs` reads them)."""
        self._unread.extend(run_ids)
        if not self._started:  # the lookback at start: its newest runs name every check
            self._unread = self._unread[-self.runs_per_collection :]
            self._started = True

    def read_runs(self, instance: dg.DagsterInstance) -> None:
        """Read the check evaluations of the newest `runs_per_collection` queued runs."""
        batch = self._unread[-self.runs_per_collection :]
        del self._unread[-self.runs_per_collection :]
        for run_id in reversed(batch):
            connection = instance.get_records_for_run(run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION)
            for record in connection.records:
                evaluation = record.event_log_entry.dagster_event.event_specific_data
                self.keys.add(evaluation.asset_check_key)
                outcome = "passed" if evaluation.passed else "failed"
                self.evaluations[(evaluation.severity.value, outcome)] += 1

    def families(self, instance: dg.DagsterInstance) -> list:
        passed = GaugeMetricFamily(
            "pipeline_asset_check_passed",
            "1 when the check's latest completed evaluation passed, 0 when it failed",
            labels=["asset", "check", "severity"],
        )
        evaluations = CounterMetricFamily(
            "pipeline_asset_check_evaluations",
            "Check evaluations in finished runs, by severity and outcome (passed, failed)",
            labels=["severity", "outcome"],
        )
        unread = GaugeMetricFamily(
            "pipeline_asset_check_runs_unread",
            "Finished runs whose check evaluations are not counted yet (read in later scrapes)",
        )
        unread.add_metric([], len(self._unread))
        for severity in SEVERITIES:
            for outcome in ("passed", "failed"):
                evaluations.add_metric([severity, outcome], self.evaluations[(severity, outcome)])
        if self.keys:
            storage = instance.event_log_storage
            latest = storage.get_latest_asset_check_execution_by_key(sorted(self.keys, key=str))
            for key in self.keys:
                result = _result(latest.get(key))
                if result is None and key not in self._latest:
                    history = storage.get_asset_check_execution_history(
                        key, limit=1, status=COMPLETED_ASSET_CHECK_EXECUTION_RECORD_STATUSES
                    )
                    result = _result(history[0] if history else None)
                if result is not None:
                    self._latest[key] = result
        for key in sorted(self._latest, key=lambda k: k.to_user_string()):
            ok, severity = self._latest[key]
            passed.add_metric([key.asset_key.to_user_string(), key.name, severity], 1.0 if ok else 0.0)
        return [passed, evaluations, unread]
