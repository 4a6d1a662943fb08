"""DuckLakes for the production profile's tests: the catalog password, a new DuckLake with its own catalog
database on the throwaway cluster (conftest.py's `cluster`), and the settings and environment a process is
given to reach it."""

from __future__ import annotations

import itertools
from pathlib import Path

from postgres import Cluster

from pipeline_project.lake.catalog import DuckLakeSettings

# A canary: it must never appear in a log, an event, metadata or an error.
CATALOG_PASSWORD = "canary-catalog-password-7f3a"
_databases = itertools.count()


def catalog_settings(cluster: Cluster, database: str, data_path: Path) -> DuckLakeSettings:
    return DuckLakeSettings(
        catalog=f"host={cluster.host} port={cluster.port} user={cluster.user} dbname={database}",
        data_path=str(data_path),
        password=CATALOG_PASSWORD,
    )


def catalog_env(settings: DuckLakeSettings) -> dict[str, str]:
    return {
        "PIPELINE_PROFILE": "production",
        "PIPELINE_DUCKLAKE_CATALOG": settings.catalog,
        "PIPELINE_DUCKLAKE_DATA_PATH": settings.data_path,
        "PIPELINE_DUCKLAKE_CATALOG_PASSWORD": settings.password,
    }


def new_ducklake(cluster: Cluster, directory: Path) -> DuckLakeSettings:
    """A new, empty DuckLake: its own catalog database, data files under `directory`."""
    database = f"lake_{next(_databases)}"
    cluster.psql(f"create database {database}")
    (directory / "ducklake-data").mkdir(parents=True)
    return catalog_settings(cluster, database, directory / "ducklake-data")
