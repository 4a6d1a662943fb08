"""Ingestion assets: one daily-partitioned asset per source table, from source to the raw layer.

Each partition streams its source in bounded batches, splits every batch by its contract into loaded and
quarantined rows, and is committed only when what it accounts for agrees, key by key, with the source's
control figures (`loading`, `reconcile`); a record delivered twice is loaded once and the copy classified
(`dedupe`). A range of partitions runs as one step (single-run backfills), so a week's load costs one step,
not seven. Tables partitioned by business date also capture changes (`changes`): older partitions whose
records changed since the last run are rewritten in the same step, and reported as materializations of
those partitions.

Every asset carries a blocking `source_reconciled` check: a partition whose load did not reconcile (its
missing and unexpected keys named), or whose committed files no longer match their manifest, stops
everything downstream. Every batch is first compared with its contract's columns (`schema_drift`): breaking
drift fails the step before the partition is committed, additive drift loads and fails the non-blocking
WARN check `schema_drift`.

The assets of the shop API's tables are built by `api_assets`, those of the landing tables by
`landing_assets`; what they share is `ingestion_step` (their definition, step retries and metadata) and
`asset_checks` (the checks' results).
"""

from pipeline_project.ingest.api_assets import build_api_ingestion_asset
from pipeline_project.ingest.landing_assets import build_landing_ingestion_asset
from pipeline_project.quality.contracts import API_TABLES, LANDING_TABLES

__all__ = ["API_TABLES", "LANDING_TABLES"]

ingestion_assets = [
    *(build_api_ingestion_asset(table) for table in API_TABLES),
    *(build_landing_ingestion_asset(table) for table in LANDING_TABLES),
]
