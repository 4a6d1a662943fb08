"""What every ingestion asset shares: its definition (`ingestion_asset`: daily partitions, a range of them as
one step, the SLA catalogue's retry policy and pool, the checks of `asset_checks`), which failures its step's
RetryPolicy may retry (`step_retry_only_if_it_can_help`), and the metadata it reports per partition
(`partition_metadata`).
"""

from contextlib import contextmanager
from datetime import date

import dagster as dg

from pipeline_project.catalog.partitions import daily_partitions
from pipeline_project.catalog.policies import INGESTION_GROUP, SLA_CATALOGUE
from pipeline_project.ingest.asset_checks import RECONCILIATION_CHECK, SCHEMA_DRIFT_CHECK, raw_asset_key
from pipeline_project.ingest.landing_fs import LandingLinkError
from pipeline_project.ingest.loading import UnreconciledLoad
from pipeline_project.ingest.reconcile import Verdict
from pipeline_project.ingest.source_errors import SourceError
from pipeline_project.lake.manifest import PartitionManifest
from pipeline_project.lake.partition_writer import RawLayerFull
from pipeline_project.lake.raw_store import Lake
from pipeline_project.quality.schema_drift import SchemaDriftError


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


@contextmanager
def step_retry_only_if_it_can_help():
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


def partition_days(context: dg.AssetExecutionContext) -> list[date]:
    return [date.fromisoformat(key) for key in context.partition_keys]


def ingestion_asset(table: str, description: str, extra_checks: tuple[dg.AssetCheckSpec, ...] = ()):
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
