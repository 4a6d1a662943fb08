"""Loading one partition: read it, split it by its contract, stage it, reconcile it by key, commit or reject.

This module owns the sequence that turns one read of a source into a committed partition, whatever the
source (a listing of the shop API, a change-capture merge, a day of landing files):

1. For the shop API, ask the source for the listing's control figures (`reconcile`) before reading.
2. Stream the batches: compare each with the contract (`schema_drift`), split it into loaded and quarantined
   rows (`contracts.split_batch`), quarantine the landing lines that are not records, and write both to the
   partition's temporary files with each row's arrival position (`partition_writer.PartitionWriter`).
3. Ask for the control figures again (or list the keys, for a source without control figures), stage the
   files (copies dropped and classified) and compare what they account for with the source's figures.
4. Commit when they agree. When they do not, read again (`attempts`); when the figures before and after the
   read differ, the source changed while it was read, which another read can resolve. When the last attempt
   still disagrees, nothing is committed: the previous version stays, the ledger entry of the failed load is
   kept beside the partition (`Lake.record_rejected`) with the missing and unexpected keys named where the
   source's own key listing can name them, and the caller reports it through the blocking check.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime

import orjson
import polars as pl

from pipeline_project import fault_points
from pipeline_project.ingest.extraction import ExtractStats
from pipeline_project.ingest.reconcile import LANDING_LINES, AccountedFigures, ControlFigures, Verdict, compare, locate
from pipeline_project.ingest.source_errors import BrokenListing
from pipeline_project.lake.dedupe import ARRIVAL
from pipeline_project.lake.manifest import PartitionManifest
from pipeline_project.lake.partition_writer import PartitionWriter
from pipeline_project.lake.raw_store import Lake
from pipeline_project.quality.contracts import QUARANTINE_REASON, REJECTED_VALUES, RawTableContract, split_batch
from pipeline_project.quality.schema_drift import PartitionDriftWatch


@dataclass
class PartitionRead:
    """How to read one partition and what to reconcile it against.

    `control` gives the source's control figures (asked before and after the read, so a listing that changed
    while it was read is told apart from one that lost records); `key_listing` lists the source's keys: the
    control figures themselves for a source without any, or the way to name the keys that differ.
    Landing files have neither: their control figure is the lines read."""

    batches: Callable[[ExtractStats], Iterator[pl.DataFrame]]
    control: Callable[[], ControlFigures] | None = None
    key_listing: Callable[[], ControlFigures] | None = None
    attempts: int = 2
    merge_into_committed: bool = False  # change capture: the committed rows plus these records
    not_after: datetime | None = None  # records stamped later than this (our clock plus the skew allowed)


@dataclass
class LoadResult:
    manifest: PartitionManifest
    committed: bool


class UnreconciledLoad(Exception):
    """A load that must commit whole or fail (landing files) did not reconcile; nothing was committed."""


def load_partition(lake: Lake, contract: RawTableContract, day: date, run_id: str, read: PartitionRead) -> LoadResult:
    """Load one partition from its source into the raw layer; commit it only if it reconciles (see above)."""
    for attempt in range(1, read.attempts + 1):
        with lake.writer(contract, day, run_id) as writer:
            manifest, verdict = _stage(writer, contract, day, read)
            manifest.attempts = attempt
            if verdict.agrees:
                return LoadResult(writer.commit(manifest), committed=True)
            writer.abort()
            if attempt == read.attempts:
                lake.record_rejected(manifest)
                return LoadResult(manifest, committed=False)
    raise AssertionError("unreachable: attempts must be at least 1")


def _stage(
    writer: PartitionWriter, contract: RawTableContract, day: date, read: PartitionRead
) -> tuple[PartitionManifest, Verdict]:
    """One read of the partition into the writer's staged files, and the verdict on it."""
    stats = ExtractStats()
    seconds = {"extract": 0.0, "validate": 0.0}
    drift = PartitionDriftWatch(contract, day.isoformat())
    carried = writer.carry_over() if read.merge_into_committed else 0
    started = time.perf_counter()
    before = read.control() if read.control else None
    seconds["control"] = time.perf_counter() - started
    broken = _write_batches(writer, contract, read, stats, drift, seconds)
    started = time.perf_counter()
    after = read.control() if read.control else (read.key_listing() if read.key_listing else None)
    seconds["control"] += time.perf_counter() - started
    manifest, accounted = writer.stage(
        stats, {stage: round(value, 4) for stage, value in seconds.items()}, drift.diff.to_metadata(), carried
    )
    if after is None:  # landing files: the lines read are the control figure, and the ledger must add up
        after, verdict = ControlFigures(LANDING_LINES, stats.fetched_count, 0), Verdict(True)
    else:
        verdict = _judge(accounted, before, after, read)
    if ledger := manifest.ledger_problems():
        verdict.agrees = False
        verdict.problems.extend(ledger)
    if broken:
        verdict.agrees = False
        verdict.problems.insert(0, f"the listing broke off: {broken}")
    manifest.control = after.to_metadata()
    manifest.verdict = verdict.to_metadata()
    if read.merge_into_committed:
        manifest.changes_merged = stats.fetched_count
    return manifest, verdict


def _write_batches(
    writer: PartitionWriter,
    contract: RawTableContract,
    read: PartitionRead,
    stats: ExtractStats,
    drift: PartitionDriftWatch,
    seconds: dict[str, float],
) -> str | None:
    """Validate and write every batch of the read; return why the listing broke off, if it did."""
    # Arrivals of merged records come after the rows they may replace.
    arrived = writer.next_arrival if read.merge_into_committed else 0
    stream = read.batches(stats)
    while True:
        started = time.perf_counter()
        try:
            batch = next(stream, None)
        except BrokenListing as error:
            return str(error)
        finally:
            seconds["extract"] += time.perf_counter() - started
        if batch is None:
            return None
        fault_points.reached("after_extract")
        started = time.perf_counter()
        conformed = drift.admit(batch, stats.source)
        valid, quarantined = split_batch(contract, conformed.frame, conformed.type_failures, row_index=ARRIVAL)
        if read.not_after is not None:
            valid, quarantined = quarantine_future(contract, valid, quarantined, read.not_after)
        valid, quarantined = (
            frame.with_columns(pl.col(ARRIVAL).cast(pl.Int64) + arrived) for frame in (valid, quarantined)
        )
        arrived += batch.height
        seconds["validate"] += time.perf_counter() - started
        writer.append(valid, quarantined)
        if stats.bad_lines:
            writer.quarantine_unreadable(
                [(line.reason, orjson.dumps({"line": line.excerpt}).decode()) for line in stats.bad_lines]
            )
            stats.bad_lines.clear()
        fault_points.reached("mid_write")


def _judge(
    accounted: AccountedFigures, before: ControlFigures | None, after: ControlFigures, read: PartitionRead
) -> Verdict:
    """Compare what the load accounted for with the source's figures; name the differing keys if it can."""
    verdict = compare(accounted, after)
    if before is not None and not before.same_figures(after):
        verdict.agrees = False
        verdict.problems.append(
            f"the source's control figures changed while the listing was read (before: {before.count} keys, "
            f"after: {after.count}); the listing raced a change at the source"
        )
    elif not verdict.agrees and after.keys is None and read.key_listing is not None:
        locate(verdict, accounted, read.key_listing(), after)
    return verdict


def quarantine_future(
    contract: RawTableContract, valid: pl.DataFrame, quarantined: pl.DataFrame, not_after: datetime
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Move rows stamped later than `not_after` to quarantine (`<column>:in_future`): a clock running ahead, or
    a bad value, that would otherwise order a bogus version first for ever."""
    late = [pl.when(pl.col(name) > not_after).then(pl.lit(f"{name}:in_future")) for name in contract.timestamp_columns]
    reasons = valid.select(pl.concat_str(late, separator="; ", ignore_nulls=True).alias(QUARANTINE_REASON))
    future = reasons.get_column(QUARANTINE_REASON).str.len_chars().fill_null(0) > 0
    if not future.any():
        return valid, quarantined
    moved = valid.filter(future).with_columns(
        reasons.filter(future).get_column(QUARANTINE_REASON), pl.lit(None, dtype=pl.String).alias(REJECTED_VALUES)
    )
    return valid.filter(~future), pl.concat([quarantined, moved.select(quarantined.columns)])
