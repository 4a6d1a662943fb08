"""Fixtures of the production profile's tests (`make test-production`): a throwaway PostgreSQL cluster
(Debian's binaries, a free loopback port, a password as a production server would demand) holding DuckLake
catalogs, and a new DuckLake per test. Each test module that uses the cluster starts its own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from lakes import CATALOG_PASSWORD, new_ducklake
from postgres import Cluster, server_binaries, throwaway_cluster

from pipeline_project.lake.catalog import DuckLakeSettings


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    if server_binaries() is None:
        pytest.fail("PostgreSQL server binaries are not installed (Debian package postgresql; .ci/run installs it)")
    with throwaway_cluster(password=CATALOG_PASSWORD, settings=("max_connections=200",)) as started:
        yield started


@pytest.fixture
def ducklake(cluster: Cluster, tmp_path: Path) -> DuckLakeSettings:
    return new_ducklake(cluster, tmp_path)
