"""Change capture: records that change after their day reach the partition of their business date.

An order is fetched by its business date, but it keeps changing for weeks: shipped, delivered, refunded.
The daily schedule re-reads only the last few days, so without more, an order refunded three weeks later
would keep its old status in the raw layer forever. Before its date loads, an ingestion run of a table
partitioned by business date therefore reads the source's change feed (every record whose current version
changed since the table's watermark, `updated_since`, overlapping the previous read by `overlap`):

- a changed record whose business day is one of the run's own partitions is left to that partition's
  date load, which reads the day whole right after;
- one whose day has no committed partition is left alone (that day is loaded whole when it is loaded);
- the others are merged into their committed partition: its rows plus the changed records, where the
  latest version of each key wins (`dedupe`: the replaced version counts as a `newer_version` copy), and the
  merged partition is reconciled with the source's control figures for that day like any load. A merge that
  does not reconcile (a record the feed missed) falls back to reading that day whole.

So a run rewrites its own partitions plus exactly the older partitions that hold a changed record, each
committed with the run's id in its manifest.

The watermark is kept in the source's own time, from the `Date` header of the feed's first answer (or, on a
table's first run, of its first request), so a source whose clock differs from ours loses nothing at the
watermark; the overlap covers writes that become visible after a later one (a long transaction), and copies
read twice are dropped by key. The watermark moves only after every merge committed, and never backwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import polars as pl

from pipeline_project.ingest.extraction import ExtractStats
from pipeline_project.ingest.listing_filters import changes_filter
from pipeline_project.ingest.sources import ShopApiClient
from pipeline_project.lake.raw_store import Lake
from pipeline_project.quality.contracts import RawTableContract

# The longest window one change-feed request may span; longer gaps since the watermark are read in steps.
MAX_FEED_WINDOW = timedelta(days=31)


@dataclass
class CapturedChanges:
    """The change feed of one table as read by one run, routed to the business days it touches."""

    since: datetime | None  # None: no watermark yet, nothing was read
    records: int = 0
    by_day: dict[date, list[pl.DataFrame]] = field(default_factory=dict)
    in_window: int = 0  # records of the run's own partitions, left to their date loads
    not_loaded: int = 0  # records of days without a committed partition
    unroutable: int = 0  # records without a readable business date: their own day's load deals with them

    def frames(self, day: date) -> Iterator[pl.DataFrame]:
        yield from self.by_day.get(day, [])


def _business_days(frame: pl.DataFrame, column: str) -> list[date | None]:
    """The UTC date each record's business timestamp names, None where it is missing or not a timestamp."""
    if column not in frame.columns:
        return [None] * frame.height
    days = []
    for value in frame.get_column(column).to_list():
        try:
            days.append(date.fromisoformat(value[:10]) if isinstance(value, str) else None)
        except ValueError:
            days.append(None)
    return days


def read_changes(
    client: ShopApiClient,
    lake: Lake,
    contract: RawTableContract,
    window: set[date],
    overlap: timedelta,
    batch_rows: int,
) -> CapturedChanges:
    """Read the table's change feed since its watermark (less the overlap) and route the records by day."""
    mark = lake.read_watermark(contract.name)
    if mark is None:
        return CapturedChanges(since=None)
    since = mark.moment - overlap
    captured = CapturedChanges(since=since)
    committed = lake.committed_days(contract.name)
    start = since
    while True:
        end = start + MAX_FEED_WINDOW
        stats = ExtractStats()
        for batch in client.iter_listing(contract, changes_filter(start, end), stats, batch_rows, fixed_total=False):
            days = _business_days(batch, contract.business_date_column)
            routed = batch.with_columns(pl.Series("_day", days, dtype=pl.Date))
            for (day,), records in routed.group_by("_day"):
                records = records.drop("_day")
                if day is None:
                    captured.unroutable += records.height
                elif day in window:
                    captured.in_window += records.height
                elif day not in committed:
                    captured.not_loaded += records.height
                else:
                    captured.by_day.setdefault(day, []).append(records)
            captured.records += batch.height
        if client.source_clock is None or end >= client.source_clock:
            break
        start = end
    return captured
