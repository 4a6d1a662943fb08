"""The one partitioning scheme of the pipeline: UTC days, the last complete day being the newest partition.

A partition holds the records whose business day it is (see `listing_filters`), and every extraction of a partition
re-reads that whole day and replaces it. Records can reach the source after their day was first extracted,
so the daily schedule re-extracts the last `LOOKBACK_DAYS` days: a record up to that many days late lands
in its own partition without anyone acting; a later one needs a backfill of its day.
"""

import os
from datetime import date, timedelta

import dagster as dg

# Overridable so a deployment can start its history where its source does; the demo source can
# generate any day, so the default only bounds what the UI offers for backfills.
PARTITIONS_START_DATE = os.environ.get("PIPELINE_PARTITIONS_START", "2025-01-01")
_lookback = os.environ.get("PIPELINE_LOOKBACK_DAYS") or "3"
if not _lookback.isdigit() or int(_lookback) < 1:
    raise ValueError(f"PIPELINE_LOOKBACK_DAYS must be a whole number of days, at least 1; got {_lookback!r}")
LOOKBACK_DAYS = int(_lookback)

daily_partitions = dg.DailyPartitionsDefinition(start_date=PARTITIONS_START_DATE, timezone="UTC")


def lookback_window(today: date) -> tuple[date, date] | None:
    """First and last partition a run on `today` (UTC) materializes: the LOOKBACK_DAYS days ending yesterday,
    none before the first partition; None when even yesterday is before it."""
    first_partition = date.fromisoformat(PARTITIONS_START_DATE)
    last = today - timedelta(days=1)
    if last < first_partition:
        return None
    return max(first_partition, last - timedelta(days=LOOKBACK_DAYS - 1)), last
