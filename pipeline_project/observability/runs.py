"""Run outcomes and durations per job, from the instance's run status change events.

The exporter follows the RUN_SUCCESS, RUN_FAILURE and RUN_CANCELED streams with a storage-id cursor per
stream (`fetch_run_status_changes`, ascending, at most `page` records per stream and scrape), so a scrape
reads only what finished since the last one. Counters and the duration histogram are kept in memory and
start from the runs that finished in the `lookback_seconds` before the exporter started (a counter that
restarts is what Prometheus' `rate()` and `increase()` expect). Durations come from the run records of
the newly finished runs (one batched query).

A counter that first appears with a value hides that increase from `increase()`. So every job has all
three outcome series from the moment the job is known: from the lookback, or from a run of it that is
queued or in progress (read every scrape, at most `ACTIVE_RUNS_LIMIT` runs), so a job's first failure
after that shows as 0 -> 1.
"""

from __future__ import annotations

import bisect
import math
import time
from collections import Counter, defaultdict

import dagster as dg
from dagster import DagsterEventType
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

OUTCOMES = {
    DagsterEventType.RUN_SUCCESS: "success",
    DagsterEventType.RUN_FAILURE: "failure",
    DagsterEventType.RUN_CANCELED: "canceled",
}
ACTIVE_STATUSES = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]
ACTIVE_RUNS_LIMIT = 200
DURATION_BUCKETS = (10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, math.inf)


def _bucket_label(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else f"{bound:g}"


class RunTracker:
    def __init__(self, lookback_seconds: float = 24 * 3600.0, page: int = 500) -> None:
        self.since = time.time() - lookback_seconds
        self.page = page
        self._cursors: dict[DagsterEventType, int] = {}
        self.outcomes: Counter[tuple[str, str]] = Counter()
        self._bucket_counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0] * len(DURATION_BUCKETS))
        self._duration_sums: Counter[tuple[str, str]] = Counter()
        self.last_success: dict[str, float] = {}
        self.jobs: set[str] = set()
        self._active: Counter[tuple[str, str]] = Counter()

    def update(self, instance: dg.DagsterInstance) -> list[str]:
        """Read what finished since the last update; returns the ids of those runs."""
        finished: list[tuple[str, str, float]] = []  # run id, outcome, event time
        for event_type, outcome in OUTCOMES.items():
            cursor = self._cursors.get(event_type)
            records_filter = dg.RunStatusChangeRecordsFilter(
                event_type=event_type,
                after_storage_id=cursor,
                after_timestamp=self.since if cursor is None else None,
            )
            records = instance.fetch_run_status_changes(records_filter, limit=self.page, ascending=True).records
            for record in records:
                finished.append((record.event_log_entry.run_id, outcome, record.timestamp))
            if records:
                self._cursors[event_type] = records[-1].storage_id
        if finished:
            run_records = instance.get_run_records(dg.RunsFilter(run_ids=[run_id for run_id, _, _ in finished]))
            by_id = {record.dagster_run.run_id: record for record in run_records}
            for run_id, outcome, ended_event_at in finished:
                record = by_id.get(run_id)
                if record is None:  # deleted since
                    continue
                self._observe(record, outcome, ended_event_at)
        self._active = Counter()
        for record in instance.get_run_records(dg.RunsFilter(statuses=ACTIVE_STATUSES), limit=ACTIVE_RUNS_LIMIT):
            job = record.dagster_run.job_name
            self.jobs.add(job)
            self._active[(job, record.dagster_run.status.value)] += 1
        return [run_id for run_id, _, _ in finished]

    def _observe(self, record, outcome: str, ended_event_at: float) -> None:
        job = record.dagster_run.job_name
        self.jobs.add(job)
        started = record.start_time or record.create_timestamp.timestamp()
        ended = record.end_time or ended_event_at
        duration = max(ended - started, 0.0)
        key = (job, outcome)
        self.outcomes[key] += 1
        self._duration_sums[key] += duration
        counts = self._bucket_counts[key]
        for index in range(bisect.bisect_left(DURATION_BUCKETS, duration), len(DURATION_BUCKETS)):
            counts[index] += 1
        if outcome == "success":
            self.last_success[job] = max(self.last_success.get(job, 0.0), ended)

    def families(self) -> list:
        runs = CounterMetricFamily(
            "pipeline_runs",
            "Finished runs per job and outcome (success, failure, canceled)",
            labels=["dagster_job", "status"],
        )
        durations = HistogramMetricFamily(
            "pipeline_run_duration_seconds",
            "Wall time of finished runs, start to end",
            labels=["dagster_job", "status"],
        )
        active = GaugeMetricFamily(
            "pipeline_runs_active", "Runs queued, starting or in progress", labels=["dagster_job", "status"]
        )
        last_success = GaugeMetricFamily(
            "pipeline_run_last_success_timestamp_seconds",
            "When the job's latest successful run ended",
            labels=["dagster_job"],
        )
        for job in sorted(self.jobs):
            for outcome in OUTCOMES.values():
                key = (job, outcome)
                runs.add_metric([job, outcome], self.outcomes[key])
                counts = self._bucket_counts[key]
                durations.add_metric(
                    [job, outcome],
                    [(_bucket_label(bound), count) for bound, count in zip(DURATION_BUCKETS, counts, strict=True)],
                    self._duration_sums[key],
                )
            for status in ACTIVE_STATUSES:
                active.add_metric([job, status.value], self._active[(job, status.value)])
            if job in self.last_success:
                last_success.add_metric([job], self.last_success[job])
        return [runs, durations, active, last_success]
