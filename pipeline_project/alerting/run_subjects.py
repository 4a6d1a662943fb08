"""Which partitions a run covers and which incident it belongs to: a run alert's subject (job, partitions,
failed assets) and the open run incidents a successful run resolves.
"""

from __future__ import annotations

from datetime import date, timedelta

import dagster as dg
from dagster._core.storage.tags import PARTITION_NAME_TAG

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
RUN_SUBJECT_PREFIX = "run:"
UNPARTITIONED = "unpartitioned"


def partition_label_of(run: dg.DagsterRun) -> str | None:
    if partition := run.tags.get(PARTITION_NAME_TAG):
        return partition
    start, end = run.tags.get(RANGE_START_TAG), run.tags.get(RANGE_END_TAG)
    if start and end:
        return start if start == end else f"{start}..{end}"
    return None


def partitions_of(label: str) -> set[str]:
    """The partitions a label names: one key, or every day of a `start..end` range of daily keys."""
    if ".." not in label:
        return {label}
    start, end = label.split("..", 1)
    try:
        first, last = date.fromisoformat(start), date.fromisoformat(end)
    except ValueError:
        return {start, end}
    return {(first + timedelta(days=offset)).isoformat() for offset in range((last - first).days + 1)}


def run_partitions(instance: dg.DagsterInstance | None, run_id: str | None) -> tuple[str, ...]:
    run = instance.get_run_by_id(run_id) if instance is not None and run_id else None
    label = partition_label_of(run) if run is not None else None
    return tuple(sorted(partitions_of(label))) if label else ()


def run_subject(job_name: str, partition_label: str | None, failed_assets: tuple[str, ...] = ()) -> str:
    """`run:<job>:<partition or range>[:<failed asset>,...]`: one incident per job, partitions and failed assets."""
    subject = f"{RUN_SUBJECT_PREFIX}{job_name}:{partition_label or UNPARTITIONED}"
    return f"{subject}:{','.join(sorted(failed_assets))}" if failed_assets else subject


def subjects_resolved_by(run: dg.DagsterRun, open_subjects: list[str]) -> list[str]:
    """The open run incidents a successful run ends: same job, every partition of the failed run is among
    the partitions this run materialized (a daily run resolves the failed range it covers), and every asset
    that failed is among the assets it materialized (all of the job's, or its asset selection): an ad-hoc
    run of other assets of the same day does not close the incident."""
    prefix = f"{RUN_SUBJECT_PREFIX}{run.job_name}:"
    covered = partitions_of(partition_label_of(run) or UNPARTITIONED)
    selected = {key.to_user_string() for key in run.asset_selection} if run.asset_selection else None
    resolved = []
    for subject in open_subjects:
        if not subject.startswith(prefix):
            continue
        label, _, failed = subject.removeprefix(prefix).partition(":")
        failed_assets = set(failed.split(",")) if failed else set()
        if partitions_of(label) <= covered and (selected is None or failed_assets <= selected):
            resolved.append(subject)
    return resolved
