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
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import polars as pl

from pipeline_project.catalog.partitions import daily_partitions
from pipeline_project.catalog.policies import INGESTION_GROUP, SLA_CATALOGUE
from pipeline_project.ingest.changes import CapturedChanges, read_changes
from pipeline_project.ingest.landing_zone import LandingDay, LandingLinkError, read_rejections
from pipeline_project.ingest.loading import LoadResult, PartitionRead, UnreconciledLoad, load_partition
from pipeline_project.ingest.reconcile import Verdict
from pipeline_project.ingest.sources import ExtractStats, ShopApiClient, SourceError, day_filter, iter_landing_batches
from pipeline_project.lake.manifest import PartitionManifest
from pipeline_project.lake.partition_writer import RawLayerFull
from pipeline_project.lake.raw_store import Lake
from pipeline_project.quality.contracts import (
    API_TABLES,
    BATCH_ROWS,
    BUSINESS_DATE,
    LANDING_TABLES,
    RAW_CONTRACTS,
    RawTableContract,
)
from pipeline_project.quality.schema_drift import SchemaDiff, SchemaDriftError
from pipeline_project.resources import LakeResource, LandingResource, ShopApiResource

__all__ = ["API_TABLES", "LANDING_TABLES"]

RECONCILIATION_CHECK = "source_reconciled"
SCHEMA_DRIFT_CHECK = "schema_drift"
LANDING_FILES_CHECK = "landing_files_accepted"


def raw_asset_key(table: str) -> dg.AssetKey:
    return dg.AssetKey(f"raw_{table}")


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


def partition_metadata(manifest: PartitionManifest, lake: Lake, committed: bool = True) -> dict:
    verdict = Verdict.from_metadata(manifest.verdict)
    metadata = {
        "dagster/row_count": manifest.loaded_count,
        "committed": committed,
        "quarantined_count": manifest.quarantined_count,
        "copies_dropped": dg.MetadataValue.json(manifest.copies_dropped),
        "source_reported_count": manifest.source_reported_count,
        "fetched_count": manifest.fetched_count,
        "accounted_keys": dg.MetadataValue.json(manifest.accounted),
        "control_figures": dg.MetadataValue.json(manifest.control),
        "reconciled": verdict.agrees,
        "quarantine_reasons": dg.MetadataValue.json(manifest.quarantine_reasons),
        "stage_seconds": dg.MetadataValue.json(manifest.stage_seconds),
    }
    if committed:
        metadata["data_file"] = dg.MetadataValue.path(lake.data_location(manifest))
        metadata["data_sha256"] = manifest.data_sha256
    else:
        metadata["not_committed"] = dg.MetadataValue.md(
            "This load did not reconcile, so the partition keeps its previous version:\n\n"
            + "\n".join(f"- {problem}" for problem in verdict.problems)
        )
    if manifest.changes_merged:
        metadata["changes_merged"] = manifest.changes_merged
    return metadata


def _partition_problems(lake: Lake, table: str, day: date) -> tuple[list[str], dict | None]:
    """Why a partition does not reconcile (empty when it does), and the keys its rejected load got wrong."""
    rejected = lake.read_rejected(table, day)
    if rejected is not None:
        verdict = Verdict.from_metadata(rejected.verdict)
        differing = {
            "missing_count": verdict.missing_count,
            "unexpected_count": verdict.unexpected_count,
            "missing_sample": verdict.missing_sample,
            "unexpected_sample": verdict.unexpected_sample,
        }
        return [f"the load of run {rejected.run_id} was not committed: {'; '.join(verdict.problems)}"], differing
    manifest, found = lake.read_verified(table, day)
    if manifest is None:
        return ["no load of this partition was committed"], None
    return found, None


def reconciliation_result(table: str, lake: Lake, days: list[date]) -> dg.AssetCheckResult:
    """Re-read each partition's ledger and files from disk: a load that did not reconcile, a partition never
    committed, or files that no longer match their manifest fail the check."""
    problems: dict[str, list[str]] = {}
    keys: dict[str, dict] = {}
    totals = {"accounted_keys": 0, "control_keys": 0, "loaded": 0, "quarantined": 0, "copies_dropped": 0}
    for day in sorted(set(days)):
        found, differing = _partition_problems(lake, table, day)
        if found:
            problems[day.isoformat()] = found
        if differing:
            keys[day.isoformat()] = differing
        manifest = lake.read_manifest(table, day)
        if manifest is not None:
            totals["accounted_keys"] += manifest.accounted.get("count", 0)
            totals["control_keys"] += manifest.control.get("count", 0)
            totals["loaded"] += manifest.loaded_count
            totals["quarantined"] += manifest.quarantined_count
            totals["copies_dropped"] += manifest.copies
    return dg.AssetCheckResult(
        asset_key=raw_asset_key(table),
        check_name=RECONCILIATION_CHECK,
        passed=not problems,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "partitions_checked": len(set(days)),
            "partitions_failing": dg.MetadataValue.json(problems),
            "keys_differing": dg.MetadataValue.json(keys),
            "missing_keys": sum(entry["missing_count"] or 0 for entry in keys.values()),
            "unexpected_keys": sum(entry["unexpected_count"] or 0 for entry in keys.values()),
            **{f"{name}_rows" if name in ("loaded", "quarantined") else name: count for name, count in totals.items()},
        },
        description=None if not problems else f"{len(problems)} partition(s) of raw_{table} do not reconcile",
    )


def schema_drift_result(table: str, lake: Lake, days: list[date]) -> dg.AssetCheckResult:
    """The additive drift the committed partitions recorded in their manifests (breaking drift commits none)."""
    drifted: dict[str, SchemaDiff] = {}
    for day in days:
        manifest = lake.read_manifest(table, day)
        if manifest is not None and (diff := SchemaDiff.from_metadata(manifest.schema_drift)):
            drifted[day.isoformat()] = diff
    return dg.AssetCheckResult(
        asset_key=raw_asset_key(table),
        check_name=SCHEMA_DRIFT_CHECK,
        passed=not drifted,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "partitions_checked": len(days),
            "partitions_drifted": len(drifted),
            SCHEMA_DRIFT_CHECK: dg.MetadataValue.json({day: diff.to_metadata() for day, diff in drifted.items()}),
            "diff": dg.MetadataValue.md(
                "\n\n".join(f"{day}:\n```\n{diff.render()}\n```" for day, diff in drifted.items()) or "no schema drift"
            ),
        },
        description=None
        if not drifted
        else f"raw_{table}: the source's columns differ from the contract in {len(drifted)} partition(s); "
        "loaded the contract's columns only",
    )


@contextmanager
def _step_retry_only_if_it_can_help():
    """The client already retried transient failures; the step's RetryPolicy gets another go at those
    (a source that is down for minutes), but a rejected token or request, a source whose schema broke
    the contract, a full disk or a link in the landing folders fails the run at once."""
    try:
        yield
    except SourceError as error:
        raise dg.Failure(description=str(error), allow_retries=error.retryable) from None
    except (RawLayerFull, UnreconciledLoad) as error:
        raise dg.Failure(description=str(error), allow_retries=False) from None
    except SchemaDriftError as error:
        raise dg.Failure(
            description=str(error),
            allow_retries=False,
            metadata={
                "table": error.table,
                "partition": error.partition,
                "source": error.source,
                SCHEMA_DRIFT_CHECK: dg.MetadataValue.json(error.diff.to_metadata()),
                "diff": dg.MetadataValue.md(f"```\n{error.diff.render()}\n```"),
            },
        ) from None
    except LandingLinkError as error:  # a link planted in the landing folders stays until someone removes it
        raise dg.Failure(description=str(error), allow_retries=False) from None


def _partition_days(context: dg.AssetExecutionContext) -> list[date]:
    return [date.fromisoformat(key) for key in context.partition_keys]


def _ingestion_asset(table: str, description: str, extra_checks: tuple[dg.AssetCheckSpec, ...] = ()):
    policy = SLA_CATALOGUE[INGESTION_GROUP]
    return dg.asset(
        key=raw_asset_key(table),
        group_name=INGESTION_GROUP,
        description=description,
        partitions_def=daily_partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        kinds={"python", "parquet"},
        check_specs=[
            dg.AssetCheckSpec(
                RECONCILIATION_CHECK,
                asset=raw_asset_key(table),
                blocking=True,
                description=(
                    "Every partition's distinct keys (loaded plus quarantined) agree with the source's control "
                    "figures (count, key checksum, amount total), every record that arrived is loaded, "
                    "quarantined or a classified copy, and the files match their manifest."
                ),
            ),
            dg.AssetCheckSpec(
                SCHEMA_DRIFT_CHECK,
                asset=raw_asset_key(table),
                blocking=False,
                description="The source sent exactly the contract's columns (additive drift loads and warns here; "
                "breaking drift fails the step).",
            ),
            *extra_checks,
        ],
        retry_policy=policy.retry,
        pool=policy.pool,
    )


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

    @_ingestion_asset(
        table,
        f"The shop API's `{table}` for one UTC day, contract-checked; failing rows are quarantined."
        + (" Older days whose records changed since the last run are rewritten too." if captures_changes else ""),
    )
    def ingest(context: dg.AssetExecutionContext, shop_api: ShopApiResource, lake: LakeResource):
        raw_layer = lake.lake()
        days = _partition_days(context)
        started = datetime.now(UTC).replace(tzinfo=None)
        merged: dict[date, LoadResult] = {}
        with shop_api.client() as client, _step_retry_only_if_it_can_help():
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


def load_landing_partition(
    lake: Lake,
    landing_dir: Path,
    contract: RawTableContract,
    day: date,
    run_id: str,
    max_file_bytes: int,
    not_after: datetime | None = None,
) -> tuple[PartitionManifest, LandingDay]:
    """Claim the day's landing files, build its partition from them and the day's archived files, archive them.

    Every line read is accounted for (loaded, quarantined, or a copy dropped), so a landing load that does not
    add up is a defect: it raises, nothing is committed and the claimed files wait for the next load."""
    landing_day = LandingDay(landing_dir, contract.name, day, run_id, max_file_bytes)

    def build(files: list[Path]) -> PartitionManifest:
        read = PartitionRead(
            batches=lambda stats: iter_landing_batches(contract, files, stats, BATCH_ROWS, max_file_bytes),
            attempts=1,
            not_after=not_after,
        )
        result = load_partition(lake, contract, day, run_id, read)
        if not result.committed:
            problems = Verdict.from_metadata(result.manifest.verdict).problems
            raise UnreconciledLoad(f"raw_{contract.name} {day}: {'; '.join(problems)}; nothing was committed")
        return result.manifest

    with landing_day.locked():
        landing_day.claim()
        manifest = landing_day.load(build)
    return manifest, landing_day


def landing_files_result(table: str, landing_dir: Path, days: list[date]) -> dg.AssetCheckResult:
    """Warn while any of the days has rejected files: they stay in `rejected/` until someone deals with them."""
    rejected = {
        day.isoformat(): [
            {"file": r.file, "reason": r.reason, "detail": r.detail, "first_bad_line": r.first_bad_line} for r in found
        ]
        for day in days
        if (found := read_rejections(landing_dir, table, day))
    }
    count = sum(len(files) for files in rejected.values())
    return dg.AssetCheckResult(
        asset_key=raw_asset_key(table),
        check_name=LANDING_FILES_CHECK,
        passed=not rejected,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"rejected_files": dg.MetadataValue.json(rejected), "rejected_count": count},
        description=None
        if not rejected
        else f"{count} landing file(s) of {table} were rejected; see {table}/rejected/<day>/*.reason.json",
    )


def build_landing_ingestion_asset(table: str) -> dg.AssetsDefinition:
    contract = RAW_CONTRACTS[table]

    @_ingestion_asset(
        table,
        f"`{table}` landing files (JSON lines) of one UTC day, contract-checked; failing rows are quarantined.",
        extra_checks=(
            dg.AssetCheckSpec(
                LANDING_FILES_CHECK,
                asset=raw_asset_key(table),
                description="No landing file of the partition was rejected (too large, a symlink, an unsafe "
                "name, not JSON lines); rejected files wait in `rejected/` with a reason file.",
            ),
        ),
    )
    def ingest(context: dg.AssetExecutionContext, landing: LandingResource, lake: LakeResource) -> dg.MaterializeResult:
        raw_layer = lake.lake()
        days = _partition_days(context)
        for day in days:
            with _step_retry_only_if_it_can_help():
                manifest, landing_day = load_landing_partition(
                    raw_layer,
                    landing.path,
                    contract,
                    day,
                    context.run.run_id,
                    landing.max_file_bytes,
                    lake.not_after(),
                )
            for rejection in landing_day.rejections:
                context.log.warning(
                    f"raw_{table} {day}: rejected landing file {rejection.file!r} ({rejection.reason}): "
                    f"{rejection.detail}"
                )
            context.log.info(
                f"raw_{table} {day}: {len(manifest.source_files)} file(s), {manifest.fetched_count} line(s): "
                f"{manifest.loaded_count} loaded, {manifest.quarantined_count} quarantined, {manifest.copies} copies "
                f"dropped; {len(landing_day.rejections)} file(s) rejected"
            )
            context.add_asset_metadata(
                {
                    **partition_metadata(manifest, raw_layer),
                    "landing_files": dg.MetadataValue.json(manifest.source_files),
                    "landing_files_rejected": dg.MetadataValue.json({r.file: r.reason for r in landing_day.rejections}),
                },
                partition_key=day.isoformat(),
            )
        return dg.MaterializeResult(
            check_results=[
                reconciliation_result(table, raw_layer, days),
                schema_drift_result(table, raw_layer, days),
                landing_files_result(table, landing.path, days),
            ]
        )

    return ingest


ingestion_assets = [
    *(build_api_ingestion_asset(table) for table in API_TABLES),
    *(build_landing_ingestion_asset(table) for table in LANDING_TABLES),
]
