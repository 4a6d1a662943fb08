"""The ingestion assets of the shop API's tables (`build_api_ingestion_asset`), and how one partition of such a
table is read and reconciled (`api_read`, `load_api_partition`).

A range of partitions runs as one step. Tables partitioned by business date also capture changes (`changes`):
older partitions whose records changed since the last run are rewritten in the same step, and reported as
materializations of those partitions; the watermark advances only when every such rewrite was committed.
"""

from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import polars as pl

from pipeline_project.ingest.asset_checks import raw_asset_key, reconciliation_result, schema_drift_result
from pipeline_project.ingest.changes import CapturedChanges, read_changes
from pipeline_project.ingest.extraction import ExtractStats
from pipeline_project.ingest.ingestion_step import (
    ingestion_asset,
    partition_days,
    partition_metadata,
    step_retry_only_if_it_can_help,
)
from pipeline_project.ingest.listing_filters import day_filter
from pipeline_project.ingest.loading import LoadResult, PartitionRead, load_partition
from pipeline_project.ingest.reconcile import Verdict
from pipeline_project.ingest.sources import ShopApiClient
from pipeline_project.lake.raw_store import Lake
from pipeline_project.quality.contracts import BATCH_ROWS, BUSINESS_DATE, RAW_CONTRACTS, RawTableContract
from pipeline_project.resources import LakeResource, ShopApiResource


def api_read(
    client: ShopApiClient,
    contract: RawTableContract,
    filters: dict[str, str],
    control: str = "endpoint",
    attempts: int = 2,
    records: Callable[[ExtractStats], Iterator[pl.DataFrame]] | None = None,
    not_after: datetime | None = None,
) -> PartitionRead:
    """How a partition of an API table is read and reconciled: the listing `filters` select (or, for a
    change-capture merge, the changed `records`), against the control endpoint (`control="endpoint"`) or a
    keys-only second pass at about half the page size (`control="key_listing"`)."""
    key_page_size = max(1, client.page_size // 2 + 1)
    return PartitionRead(
        batches=records or (lambda stats: client.iter_listing(contract, filters, stats, BATCH_ROWS)),
        control=(lambda: client.control_figures(contract, filters)) if control == "endpoint" else None,
        key_listing=lambda: client.listed_keys(contract, filters, key_page_size),
        attempts=attempts,
        merge_into_committed=records is not None,
        not_after=not_after,
    )


def load_api_partition(
    lake: Lake,
    client: ShopApiClient,
    contract: RawTableContract,
    day: date,
    run_id: str,
    control: str = "endpoint",
    attempts: int = 2,
    not_after: datetime | None = None,
) -> LoadResult:
    """Load one day of an API table (`day_filter`), reconciled against the source (`api_read`)."""
    filters = day_filter(contract.name, day, client.dimensions)
    read = api_read(client, contract, filters, control, attempts, not_after=not_after)
    return load_partition(lake, contract, day, run_id, read)


def _merge_changes(
    context: dg.AssetExecutionContext,
    client: ShopApiClient,
    api: ShopApiResource,
    lake: Lake,
    contract: RawTableContract,
    captured: CapturedChanges,
    not_after: datetime,
) -> dict[date, LoadResult]:
    """Rewrite each older partition that holds a changed record: its rows plus the changes, reconciled like any
    load; when that does not reconcile, the day is read whole instead."""
    results = {}
    for day in sorted(captured.by_day):
        filters = day_filter(contract.name, day, client.dimensions)
        changes = captured.by_day[day]

        def records(stats, changes=changes):
            stats.source = f"changes of {contract.name} since {captured.since:%Y-%m-%dT%H:%M:%SZ}"
            for frame in changes:
                stats.fetched_count += frame.height
                yield frame

        merge = api_read(client, contract, filters, api.control, api.reconcile_attempts, records, not_after)
        result = load_partition(lake, contract, day, context.run.run_id, merge)
        if not result.committed:
            problems = "; ".join(Verdict.from_metadata(result.manifest.verdict).problems)
            context.log.warning(
                f"raw_{contract.name} {day}: merging {result.manifest.changes_merged} changed record(s) did not "
                f"reconcile ({problems}); reading the day whole"
            )
            whole_day = api_read(client, contract, filters, api.control, api.reconcile_attempts, not_after=not_after)
            result = load_partition(lake, contract, day, context.run.run_id, whole_day)
        results[day] = result
    return results


def build_api_ingestion_asset(table: str) -> dg.AssetsDefinition:
    contract = RAW_CONTRACTS[table]
    captures_changes = contract.day_selection == BUSINESS_DATE

    @ingestion_asset(
        table,
        f"The shop API's `{table}` for one UTC day, contract-checked; failing rows are quarantined."
        + (" Older days whose records changed since the last run are rewritten too." if captures_changes else ""),
    )
    def ingest(context: dg.AssetExecutionContext, shop_api: ShopApiResource, lake: LakeResource):
        raw_layer = lake.lake()
        days = partition_days(context)
        started = datetime.now(UTC).replace(tzinfo=None)
        merged: dict[date, LoadResult] = {}
        with shop_api.client() as client, step_retry_only_if_it_can_help():
            if captures_changes:
                captured = read_changes(
                    client,
                    raw_layer,
                    contract,
                    set(days),
                    timedelta(minutes=shop_api.changes_overlap_minutes),
                    BATCH_ROWS,
                )
                merged = _merge_changes(context, client, shop_api, raw_layer, contract, captured, lake.not_after())
                for day, result in merged.items():
                    yield dg.AssetMaterialization(
                        raw_asset_key(table),
                        partition=day.isoformat(),
                        description=f"rewritten by change capture in run {context.run.run_id}",
                        metadata=partition_metadata(result.manifest, raw_layer, result.committed),
                    )
            for day in days:
                result = load_api_partition(
                    raw_layer,
                    client,
                    contract,
                    day,
                    context.run.run_id,
                    shop_api.control,
                    shop_api.reconcile_attempts,
                    lake.not_after(),
                )
                manifest = result.manifest
                context.log.info(
                    f"raw_{table} {day}: {'committed' if result.committed else 'NOT committed (did not reconcile)'}: "
                    f"{manifest.loaded_count} loaded, {manifest.quarantined_count} quarantined, "
                    f"{manifest.copies} copies dropped; {manifest.accounted.get('count')} keys accounted for, "
                    f"the source's {manifest.control.get('kind')} reports {manifest.control.get('count')}"
                )
                context.add_asset_metadata(
                    partition_metadata(manifest, raw_layer, result.committed), partition_key=day.isoformat()
                )
            if captures_changes and all(result.committed for result in merged.values()):
                raw_layer.advance_watermark(table, client.first_source_clock or started, context.run.run_id)
        yield dg.MaterializeResult(
            check_results=[
                reconciliation_result(table, raw_layer, [*days, *merged]),
                schema_drift_result(table, raw_layer, days),
            ]
        )

    return ingest
