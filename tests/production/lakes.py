"""Fixtures of the production profile's tests (`make test-production`): a throwaway PostgreSQL cluster
(Debian's binaries, a free loopback port, a password as a production server would demand) holding DuckLake
catalogs, one database per test. Test modules import them (`from lakes import cluster_fixture, ducklake_fixture`), so
each module that uses the session-scoped cluster starts its own."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from postgres import Cluster, server_binaries, throwaway_cluster  # noqa: E402

from pipeline_project.lake.catalog import DuckLakeSettings  # noqa: E402

# A canary: it must never appear in a log, an event, metadata or an error.
CATALOG_PASSWORD = "canary-catalog-password-7f3a"
_databases = itertools.count()


@pytest.fixture(scope="session", name="cluster")
def cluster_fixture() -> Iterator[Cluster]:
    if server_binaries() is None:
        pytest.fail("PostgreSQL server binaries are not installed (Debian package postgresql; .ci/run installs it)")
    with throwaway_cluster(password=CATALOG_PASSWORD, settings=("max_connections=200",)) as started:
        yield started


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


@pytest.fixture(name="ducklake")
def ducklake_fixture(cluster: Cluster, tmp_path: Path) -> DuckLakeSettings:
    return new_ducklake(cluster, tmp_path)
