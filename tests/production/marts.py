"""Shared by the production tests: loading days into a raw layer without Dagster, running dbt against the
DuckLake, and comparing the marts with the demo world's ground truth."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import duckdb

from demo_source import ShopWorld, write_landing_files
from pipeline_project.ingest.api_assets import load_api_partition
from pipeline_project.ingest.landing_assets import load_landing_partition
from pipeline_project.ingest.landing_zone import DEFAULT_MAX_FILE_BYTES
from pipeline_project.ingest.sources import ShopApiClient
from pipeline_project.lake.raw_store import Lake
from pipeline_project.quality.contracts import API_TABLES, LANDING_TABLES, RAW_CONTRACTS

REPO = Path(__file__).resolve().parents[2]
MARTS = ("daily_revenue", "customer_lifetime_value", "product_performance", "web_funnel")


def load_days(lake: Lake, url: str, token: str, world: ShopWorld, landing: Path, days: list[date], run_id: str) -> None:
    with ShopApiClient(url, token, max_backoff_seconds=0.05) as client:
        for day in days:
            for table in API_TABLES:
                assert load_api_partition(lake, client, RAW_CONTRACTS[table], day, run_id).committed, (table, day)
            write_landing_files(landing, day, world)
            for table in LANDING_TABLES:
                load_landing_partition(lake, landing, RAW_CONTRACTS[table], day, run_id, DEFAULT_MAX_FILE_BYTES)


def dbt_build(env: dict[str, str], project_dir: Path, target_dir: Path) -> subprocess.CompletedProcess:
    """`dbt build` of `project_dir` in a process of its own, its artifacts and logs under `target_dir`."""
    return subprocess.run(
        [
            str(Path(sys.executable).parent / "dbt"),
            "build",
            "--project-dir",
            str(project_dir),
            "--profiles-dir",
            str(project_dir),
            "--target-path",
            str(target_dir / "target"),
            "--log-path",
            str(target_dir / "logs"),
        ],
        env={**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false", **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


def mart_contents(connection: duckdb.DuckDBPyConnection) -> dict[str, list[tuple]]:
    return {mart: connection.execute(f"select * from lake.marts.{mart} order by all").fetchall() for mart in MARTS}
