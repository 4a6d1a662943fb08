"""The code location: every asset, check, job, schedule, sensor and resource, with the SLA policies applied."""

import os

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from pipeline_project.alerting.resource import alerting_resource_from_env
from pipeline_project.alerting.sensors import monitoring_sensors
from pipeline_project.catalog.partitions import LOOKBACK_DAYS, lookback_window
from pipeline_project.catalog.policies import INGESTION_GROUP, apply_sla_policies
from pipeline_project.ingest.assets import ingestion_assets
from pipeline_project.ingest.sensors import landing_file_sensor
from pipeline_project.quality.mart_checks import mart_contract_checks
from pipeline_project.resources import (
    DuckLakeResource,
    LakeResource,
    LandingResource,
    ShopApiResource,
    WarehouseResource,
    dbt_resource,
)
from pipeline_project.settings import resolve_environment
from pipeline_project.transform.dbt_assets import shop_dbt_assets
from pipeline_project.transform.project import dbt_project

# The code location applies its own defaults, so plain `dagster dev` behaves like `make dev` (`settings`).
resolve_environment(instance_home=False)

# The production profile's backfills (deploy/, tests/production/): one run per day of ingestion, as many at
# once as the run queue allows, then one run of everything downstream.
raw_ingestion_job = dg.define_asset_job(
    "raw_ingestion",
    selection=dg.AssetSelection.groups(INGESTION_GROUP),
    description="The ingestion assets of the selected days only (a backfill of it runs one run per day).",
)
transform_job = dg.define_asset_job(
    "transform",
    selection=dg.AssetSelection.all() - dg.AssetSelection.groups(INGESTION_GROUP),
    description="One dbt build of a range of days and the mart contracts over the raw layer as it is; no ingestion.",
)

shop_pipeline_job = dg.define_asset_job(
    "shop_pipeline",
    selection=dg.AssetSelection.all(),
    description="Every asset: ingestion of the selected days, then one dbt build and the mart contracts.",
)

# Every check that can run without rematerializing its asset: dbt tests and mart contracts. (The
# reconciliation checks are part of their ingestion step, which verifies what it just wrote.)
asset_checks_job = dg.define_asset_job(
    "asset_checks",
    selection=dg.AssetSelection.all_asset_checks() - dg.AssetSelection.checks_for_assets(*ingestion_assets),
    description="Runs the dbt tests and mart contracts against the warehouse as it is, materializing nothing.",
)


@dg.schedule(
    name="shop_pipeline_schedule",
    job=shop_pipeline_job,
    cron_schedule="15 2 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description=f"Daily at 02:15 UTC: the whole graph for the last {LOOKBACK_DAYS} days, so late records land.",
)
def daily_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    window = lookback_window(context.scheduled_execution_time.date())
    if window is None:
        return dg.SkipReason("no complete partition yet")
    first, last = window
    return dg.RunRequest(
        run_key=last.isoformat(),
        tags={ASSET_PARTITION_RANGE_START_TAG: first.isoformat(), ASSET_PARTITION_RANGE_END_TAG: last.isoformat()},
    )


# The in-process executor: with one DuckDB writer there is nothing to parallelise across processes, and
# each multiprocess step costs ~2 s of start-up. Deployments that scale out set PIPELINE_EXECUTOR.
EXECUTORS = {"in_process": dg.in_process_executor, "multiprocess": dg.multiprocess_executor}
executor_name = os.environ.get("PIPELINE_EXECUTOR", "in_process")
if executor_name not in EXECUTORS:
    raise ValueError(f"PIPELINE_EXECUTOR={executor_name!r} is not one of {sorted(EXECUTORS)}")

# An empty or unset LANDING_MAX_FILE_BYTES keeps the resource's default cap (512 MiB), an empty or unset
# PIPELINE_WAREHOUSE_LOCK_WAIT_SECONDS the warehouse's default wait (30 s).
landing_cap_configured = bool(os.environ.get("LANDING_MAX_FILE_BYTES"))
warehouse_wait_configured = bool(os.environ.get("PIPELINE_WAREHOUSE_LOCK_WAIT_SECONDS"))


def optional_settings(resource: type[dg.ConfigurableResource], **fields: str) -> dict[str, dg.EnvVar]:
    """Fields of `resource` taken from the environment variables named, for those that are set and not empty
    (as whole numbers for integer fields); the others keep the resource's default."""
    return {
        field: dg.EnvVar.int(name) if resource.model_fields[field].annotation is int else dg.EnvVar(name)
        for field, name in fields.items()
        if os.environ.get(name)
    }


# The production profile (PIPELINE_PROFILE=production, `pipeline_project.lake`): the raw layer and the warehouse
# on DuckLake. Unset, the embedded profile needs none of these settings; secrets stay EnvVars.
PROFILE = os.environ.get("PIPELINE_PROFILE") or "embedded"
ducklake = DuckLakeResource(
    **optional_settings(
        DuckLakeResource,
        catalog="PIPELINE_DUCKLAKE_CATALOG",
        data_path="PIPELINE_DUCKLAKE_DATA_PATH",
        password="PIPELINE_DUCKLAKE_CATALOG_PASSWORD",
        s3_endpoint="PIPELINE_S3_ENDPOINT",
        s3_region="PIPELINE_S3_REGION",
        s3_key_id="PIPELINE_S3_KEY_ID",
        s3_secret="PIPELINE_S3_SECRET",
        s3_url_style="PIPELINE_S3_URL_STYLE",
        s3_use_ssl="PIPELINE_S3_USE_SSL",
    )
)
profile_settings = {"profile": PROFILE, "ducklake": ducklake} if PROFILE != "embedded" else {}

defs = apply_sla_policies(
    dg.Definitions(
        assets=[*ingestion_assets, shop_dbt_assets],
        asset_checks=mart_contract_checks,
        jobs=[shop_pipeline_job, asset_checks_job, raw_ingestion_job, transform_job],
        schedules=[daily_schedule],
        sensors=[landing_file_sensor, *monitoring_sensors],
        executor=EXECUTORS[executor_name],
        resources={
            "shop_api": ShopApiResource(
                base_url=dg.EnvVar("SHOP_API_URL"),
                token=dg.EnvVar("SHOP_API_TOKEN"),
                **optional_settings(ShopApiResource, control="SHOP_API_CONTROL", dimensions="SHOP_API_DIMENSIONS"),
            ),
            "landing": LandingResource(
                directory=dg.EnvVar("LANDING_DIR"),
                **({"max_file_bytes": dg.EnvVar.int("LANDING_MAX_FILE_BYTES")} if landing_cap_configured else {}),
            ),
            "lake": LakeResource(
                root=dg.EnvVar("PIPELINE_LAKE_DIR"),
                **optional_settings(LakeResource, max_clock_skew_minutes="PIPELINE_MAX_CLOCK_SKEW_MINUTES"),
                **profile_settings,
            ),
            "warehouse": WarehouseResource(
                path=dg.EnvVar("PIPELINE_WAREHOUSE_PATH"),
                **(
                    {"lock_wait_seconds": dg.EnvVar.int("PIPELINE_WAREHOUSE_LOCK_WAIT_SECONDS")}
                    if warehouse_wait_configured
                    else {}
                ),
                **profile_settings,
            ),
            "dbt": dbt_resource(dbt_project),
            "alerting": alerting_resource_from_env(),
        },
    )
)
