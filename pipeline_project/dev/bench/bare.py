"""The bare run: the stages of a pipeline run without Dagster (the ingestion functions and their checks, one
`dbt build` planned as the dbt asset plans it, the mart contracts), the other side of the fixed cost."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from datetime import date, timedelta
from pathlib import Path

from pipeline_project.dev.bench.measure import dbt_artifacts
from pipeline_project.dev.bench.scenarios import END_DATE
from pipeline_project.settings import REPO_ROOT


def run_bare(days: int) -> dict:
    """The same stages without Dagster: the ingestion functions and the checks the ingestion assets run after
    them, one dbt build planned as the dbt asset plans it, the contract checks."""
    from pipeline_project.ingest.api_assets import load_api_partition
    from pipeline_project.ingest.asset_checks import reconciliation_result, schema_drift_result
    from pipeline_project.ingest.assets import API_TABLES, LANDING_TABLES
    from pipeline_project.ingest.landing_assets import landing_files_result, load_landing_partition
    from pipeline_project.ingest.landing_zone import DEFAULT_MAX_FILE_BYTES
    from pipeline_project.ingest.sources import ShopApiClient
    from pipeline_project.lake.raw_store import Lake
    from pipeline_project.quality.contracts import MART_CONTRACTS, RAW_CONTRACTS, failure_cases
    from pipeline_project.quality.mart_checks import count_failures
    from pipeline_project.transform import warehouse
    from pipeline_project.transform.project import dbt_project

    run_id = f"bare-{uuid.uuid4()}"
    started = time.monotonic()
    lake = Lake(os.environ["PIPELINE_LAKE_DIR"])
    landing = Path(os.environ["LANDING_DIR"])
    warehouse_path = Path(os.environ["PIPELINE_WAREHOUSE_PATH"])
    window = [END_DATE - timedelta(days=offset) for offset in range(days)]
    with ShopApiClient(os.environ["SHOP_API_URL"], os.environ["SHOP_API_TOKEN"]) as client:
        # Table by table as the assets load them, with the same checks at the end of each table.
        for table in API_TABLES:
            contract = RAW_CONTRACTS[table]
            for day in window:
                load_api_partition(lake, client, contract, day, run_id)
            reconciliation_result(table, lake, window)
            schema_drift_result(table, lake, window)
        for table in LANDING_TABLES:
            for day in window:
                load_landing_partition(lake, landing, RAW_CONTRACTS[table], day, run_id, DEFAULT_MAX_FILE_BYTES)
            reconciliation_result(table, lake, window)
            schema_drift_result(table, lake, window)
            landing_files_result(table, landing, window)
    dbt_started = time.monotonic()
    target = Path(os.environ["PIPELINE_STATE_DIR"]) / "dbt-target" / run_id
    build_bare(window, dbt_project.manifest_path, target)
    checks_started = time.monotonic()
    with warehouse.connect(warehouse_path, read_only=True) as connection:
        for contract in MART_CONTRACTS.values():
            frame = connection.sql(f"select * from {warehouse.mart_table(contract.mart)}").pl()
            if count_failures(contract, failure_cases(contract.model, frame))["ERROR"]:
                raise RuntimeError(f"contract of {contract.mart} failed in the bare run")
    finished = time.monotonic()
    return {
        "run_id": run_id,
        "wall_seconds": round(finished - started, 2),
        "dbt": round(checks_started - dbt_started, 2),
        "checks": round(finished - checks_started, 2),
        **dbt_artifacts(target),
    }


def build_bare(window: list[date], manifest_path: Path, target: Path, full_refresh: bool = False) -> None:
    """One `dbt build` planned exactly as the dbt asset plans its build (days, full refresh, watermark)."""
    from pipeline_project.lake.raw_store import Lake
    from pipeline_project.resources import WarehouseResource
    from pipeline_project.transform import dbt_days

    warehouse = WarehouseResource(path=os.environ["PIPELINE_WAREHOUSE_PATH"])
    plan = dbt_days.plan_build(
        window=window,
        lake=Lake(os.environ["PIPELINE_LAKE_DIR"]),
        warehouse=warehouse,
        digest=dbt_days.project_digest(manifest_path),
        full_refresh_requested=full_refresh,
    )
    # Reuse the parse of the project, as dagster-dbt does for its invocations (else dbt parses it all again).
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO_ROOT / "dbt_project" / "target" / "partial_parse.msgpack", target / "partial_parse.msgpack")
    env = {key: value for key, value in os.environ.items() if key != "PIPELINE_DBT_DAYS"}
    if plan.days is not None:
        env["PIPELINE_DBT_DAYS"] = plan.env_value()
    subprocess.run(
        [
            str(Path(sys.executable).parent / "dbt"),
            "build",
            "--quiet",
            "--profiles-dir",
            ".",
            "--target-path",
            str(target),
            "--log-path",
            str(target),
            "--log-format-file",
            "json",
            *(["--full-refresh"] if plan.full_refresh else []),
        ],
        cwd=REPO_ROOT / "dbt_project",
        env=env,
        check=True,
    )
    dbt_days.write_watermark(warehouse, dbt_days.Watermark(plan.lake, dbt_days.project_digest(manifest_path)))
