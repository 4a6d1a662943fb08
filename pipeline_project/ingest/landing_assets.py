"""The ingestion assets of the landing tables (`build_landing_ingestion_asset`): each partition is built from
the day's landing files (`landing_zone`, `load_landing_partition`), and a WARN check, `landing_files_accepted`,
fails while any of its files was rejected (`landing_files_result`).
"""

from datetime import date, datetime
from pathlib import Path

import dagster as dg

from pipeline_project.ingest.asset_checks import raw_asset_key, reconciliation_result, schema_drift_result
from pipeline_project.ingest.ingestion_step import (
    ingestion_asset,
    partition_days,
    partition_metadata,
    step_retry_only_if_it_can_help,
)
from pipeline_project.ingest.landing_reader import iter_landing_batches
from pipeline_project.ingest.landing_zone import LandingDay, read_rejections
from pipeline_project.ingest.loading import PartitionRead, UnreconciledLoad, load_partition
from pipeline_project.ingest.reconcile import Verdict
from pipeline_project.lake.manifest import PartitionManifest
from pipeline_project.lake.raw_store import Lake
from pipeline_project.quality.contracts import BATCH_ROWS, RAW_CONTRACTS, RawTableContract
from pipeline_project.resources import LakeResource, LandingResource

LANDING_FILES_CHECK = "landing_files_accepted"


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

    @ingestion_asset(
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
        days = partition_days(context)
        for day in days:
            with step_retry_only_if_it_can_help():
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
