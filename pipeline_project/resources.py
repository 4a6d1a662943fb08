"""Resources: the configured handles assets use to reach the source, the landing directory, the lake and the
warehouse. Every setting comes from an environment variable (see `.env.example`); secrets stay EnvVars so
only their names ever appear in run config, logs or the UI."""

from __future__ import annotations

import sys
from contextlib import AbstractContextManager, closing
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path

import dagster as dg
import duckdb
from dagster_dbt import DbtCliResource
from dbt.version import __version__ as dbt_core_version
from packaging import version
from pydantic import Field, PrivateAttr

from pipeline_project.ingest.circuit_breaker import CircuitBreaker
from pipeline_project.ingest.landing_zone import DEFAULT_MAX_FILE_BYTES
from pipeline_project.ingest.listing_filters import DIMENSION_MODES
from pipeline_project.ingest.sources import CONTROL_MODES, ShopApiClient, source_host
from pipeline_project.lake.catalog import PROFILES, DuckLakeSettings
from pipeline_project.lake.catalog import connect as connect_ducklake
from pipeline_project.lake.raw_store import Lake
from pipeline_project.transform import warehouse


class ShopApiResource(dg.ConfigurableResource):
    """The shop's REST API (the bundled demo source by default).

    One circuit breaker per run: Dagster sets the resource up once per run (once per step process with the
    multiprocess executor), and every client it hands out shares the breaker, so once the source has failed
    `circuit_failure_threshold` requests in a row the run's other assets and step retries fail fast
    instead of hammering it, until `circuit_cooldown_seconds` have passed (see `circuit_breaker`).
    """

    base_url: str
    token: str
    page_size: int = 5000
    timeout_seconds: float = 30.0
    max_attempts: int = 5
    circuit_failure_threshold: int = 5
    circuit_cooldown_seconds: float = 60.0
    control: str = Field(
        default="endpoint",
        description="Where control figures come from: `endpoint` (the source's control endpoint) or `key_listing` "
        "(a keys-only second pass, for a source without one). SHOP_API_CONTROL.",
    )
    dimensions: str = Field(
        default="daily_versions",
        description="What the source keeps of customers and products: `daily_versions` (a version per day) or "
        "`current_state`. SHOP_API_DIMENSIONS.",
    )
    reconcile_attempts: int = Field(
        default=2, ge=1, description="Reads of a partition before a load that does not reconcile is rejected."
    )
    changes_overlap_minutes: int = Field(
        default=60, ge=0, description="How far before its watermark change capture reads again."
    )
    _breaker: CircuitBreaker | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._breaker = self._new_breaker()

    def _new_breaker(self) -> CircuitBreaker:
        return CircuitBreaker(source_host(self.base_url), self.circuit_failure_threshold, self.circuit_cooldown_seconds)

    def client(self) -> ShopApiClient:
        """A client sharing the run's breaker (outside a run, where nothing set one up, a breaker of its own)."""
        if self.control not in CONTROL_MODES:
            raise ValueError(f"SHOP_API_CONTROL must be one of {', '.join(CONTROL_MODES)}, got {self.control!r}")
        if self.dimensions not in DIMENSION_MODES:
            raise ValueError(
                f"SHOP_API_DIMENSIONS must be one of {', '.join(DIMENSION_MODES)}, got {self.dimensions!r}"
            )
        return ShopApiClient(
            self.base_url,
            self.token,
            page_size=self.page_size,
            timeout_seconds=self.timeout_seconds,
            max_attempts=self.max_attempts,
            breaker=self._breaker or self._new_breaker(),
            dimensions=self.dimensions,
        )


class LandingResource(dg.ConfigurableResource):
    """The directory upstream systems drop files into (web events as JSON lines; layout in `landing`)."""

    directory: str
    max_file_bytes: int = Field(
        default=DEFAULT_MAX_FILE_BYTES, description="Larger files are rejected before they are parsed."
    )

    @property
    def path(self) -> Path:
        return Path(self.directory).resolve()


class DuckLakeResource(dg.ConfigurableResource):
    """The DuckLake of the production profile (`pipeline_project.lake.catalog`): its PostgreSQL catalog, data
    path and, for object storage, S3 settings. The password and the object-storage secret are EnvVars."""

    catalog: str = Field(
        default="", description="libpq connection string of the catalog, no password. PIPELINE_DUCKLAKE_CATALOG."
    )
    data_path: str = Field(
        default="", description="Directory or s3:// prefix of the data files. PIPELINE_DUCKLAKE_DATA_PATH."
    )
    password: str = Field(
        default="", description="The catalog's password (a secret). PIPELINE_DUCKLAKE_CATALOG_PASSWORD."
    )
    s3_endpoint: str = ""
    s3_region: str = ""
    s3_key_id: str = ""
    s3_secret: str = Field(default="", description="Object-storage secret key (a secret). PIPELINE_S3_SECRET.")
    s3_url_style: str = ""
    s3_use_ssl: str = ""

    def settings(self) -> DuckLakeSettings:
        settings = DuckLakeSettings(**self.model_dump())
        settings.export_password()  # dbt, started by this process, reaches the catalog with it too
        return settings


class LakeResource(dg.ConfigurableResource):
    """The raw layer: Parquet partitions, quarantine and manifests (`embedded`), or tables of a DuckLake
    (`production`, with `root` as the local scratch directory of staging); see `pipeline_project.lake`."""

    root: str
    profile: str = Field(default="embedded", description="`embedded` or `production`. PIPELINE_PROFILE.")
    ducklake: DuckLakeResource | None = None
    max_clock_skew_minutes: int = Field(
        default=10,
        ge=0,
        description="Records stamped later than now plus this are quarantined (`<column>:in_future`).",
    )

    def not_after(self) -> datetime:
        """The latest timestamp a record loaded now may carry."""
        return datetime.now(UTC).replace(tzinfo=None) + timedelta(minutes=self.max_clock_skew_minutes)

    def lake(self) -> Lake:
        if self.profile not in PROFILES:
            raise ValueError(f"PIPELINE_PROFILE must be one of {', '.join(PROFILES)}, got {self.profile!r}")
        if self.profile == "production":
            from pipeline_project.lake.ducklake_store import DuckLakeStore

            return DuckLakeStore(self.root, (self.ducklake or DuckLakeResource()).settings())
        return Lake(self.root)


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB warehouse dbt builds; checks read it through short-lived read-only connections, waiting a
    bounded time while another process holds the file (see `warehouse`)."""

    path: str
    lock_wait_seconds: int = Field(
        default=warehouse.DEFAULT_LOCK_WAIT_SECONDS,
        description="How long to wait for another process's lock on the file before failing with its PID.",
    )
    profile: str = Field(
        default="embedded",
        description="`embedded` (the DuckDB file at `path`) or `production` (the DuckLake). PIPELINE_PROFILE.",
    )
    ducklake: DuckLakeResource | None = None

    @property
    def resolved_path(self) -> Path:
        return Path(self.path).resolve()

    def read_only(self) -> AbstractContextManager[duckdb.DuckDBPyConnection]:
        return self.connect(read_only=True)

    def connect(self, read_only: bool) -> AbstractContextManager[duckdb.DuckDBPyConnection]:
        if self.profile == "production":  # DuckLake readers never wait for a writer
            return closing(connect_ducklake((self.ducklake or DuckLakeResource()).settings(), read_only=read_only))
        return warehouse.connect(self.resolved_path, read_only=read_only, lock_wait_seconds=self.lock_wait_seconds)

    def exists(self) -> bool:
        """Whether there is a warehouse to read (the DuckLake is created when it is first attached)."""
        return self.profile == "production" or self.resolved_path.exists()


class ShopDbtCliResource(DbtCliResource):
    """The dbt CLI without two fixed costs per run that this project does not use (~6 s of every run).

    dagster-dbt asks a `dbt --version` subprocess for the version of the dbt that is, here, always the
    dbt-core installed next to this interpreter, and opens a dbt adapter inside the Dagster process, which
    only `fetch_row_counts`/`fetch_column_metadata` need (and which would also hold the DuckDB file open).
    """

    @cached_property
    def _cli_version(self) -> version.Version:
        return version.parse(dbt_core_version)

    def _initialize_dbt_core_adapter(self, args):
        return None


def dbt_resource(project) -> ShopDbtCliResource:
    # The dbt next to this interpreter, so an un-activated virtualenv still finds it.
    return ShopDbtCliResource(project_dir=project, dbt_executable=str(Path(sys.executable).parent / "dbt"))
