"""Resources: the configured handles assets use to reach the source, the landing directory, the lake and the
warehouse. Every setting comes from an environment variable (see `.env.example`); secrets stay EnvVars so
only their names ever appear in run config, logs or the UI."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb

from pipeline_project.raw_store import Lake
from pipeline_project.sources import ShopApiClient


class ShopApiResource(dg.ConfigurableResource):
    """The shop's REST API (the bundled demo source by default)."""

    base_url: str
    token: str
    page_size: int = 5000
    timeout_seconds: float = 30.0
    max_attempts: int = 5

    def client(self) -> ShopApiClient:
        return ShopApiClient(
            self.base_url,
            self.token,
            page_size=self.page_size,
            timeout_seconds=self.timeout_seconds,
            max_attempts=self.max_attempts,
        )


class LandingResource(dg.ConfigurableResource):
    """The directory upstream systems drop files into (web events as JSON lines)."""

    directory: str

    @property
    def path(self) -> Path:
        return Path(self.directory).resolve()


class LakeResource(dg.ConfigurableResource):
    """The raw layer: Parquet partitions, quarantine and manifests."""

    root: str

    def lake(self) -> Lake:
        return Lake(self.root)


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB warehouse dbt builds; checks read it through short-lived read-only connections."""

    path: str

    @property
    def resolved_path(self) -> Path:
        return Path(self.path).resolve()

    @contextmanager
    def read_only(self):
        connection = duckdb.connect(str(self.resolved_path), read_only=True)
        try:
            yield connection
        finally:
            connection.close()
