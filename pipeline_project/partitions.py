"""The one partitioning scheme of the pipeline: UTC days, the last complete day being the newest partition."""

import os

import dagster as dg

# Overridable so a deployment can start its history where its source does; the demo source can
# generate any day, so the default only bounds what the UI offers for backfills.
PARTITIONS_START_DATE = os.environ.get("PIPELINE_PARTITIONS_START", "2025-01-01")

daily_partitions = dg.DailyPartitionsDefinition(start_date=PARTITIONS_START_DATE, timezone="UTC")
