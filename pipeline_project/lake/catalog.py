"""The DuckLake of the production profile: its settings, connections to it, and per-partition turns.

One DuckLake holds the raw layer (schemas `raw`, `quarantine`, `ledger`) and the warehouse dbt builds
(`staging`, `intermediate`, `marts`, `snapshots`). Its catalog is a PostgreSQL database
(`PIPELINE_DUCKLAKE_CATALOG`, a libpq connection string without the password); its data files are under
`PIPELINE_DUCKLAKE_DATA_PATH`: a local directory, a shared filesystem, or `s3://bucket/prefix` on S3-compatible
object storage (httpfs; `PIPELINE_S3_*`). Every process that writes opens its own connection: DuckLake commits
are optimistic transactions in the catalog, so writers on several machines need no shared lock file.

The catalog's password (`PIPELINE_DUCKLAKE_CATALOG_PASSWORD`) reaches libpq as `PGPASSWORD` in the environment
of this process and of the dbt it starts (`export_password`), never in a connection string, a log line or an
error. Object-storage keys become a DuckDB secret of the connection.

Inlined data is turned off (`DATA_INLINING_ROW_LIMIT 0`): rows inlined into the catalog make every writer of a
table conflict with every other, and the raw layer's partitions are never that small for long.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import TypeVar

import duckdb

from pipeline_project.lake.extensions import ensure_installed
from pipeline_project.transform.warehouse import quote_literal

PROFILES = ("embedded", "production")
ALIAS = "lake"
# How long a commit keeps retrying DuckLake transaction conflicts with other writers before it gives up.
CONFLICT_RETRY_SECONDS = 120.0
_ATTACH_ATTEMPTS = 5
_T = TypeVar("_T")


class CatalogNotConfigured(ValueError):
    """The production profile was selected without the settings it needs."""


@dataclass(frozen=True)
class DuckLakeSettings:
    catalog: str  # libpq key=value string, e.g. "host=db port=5432 user=pipeline dbname=ducklake"
    data_path: str
    password: str = ""
    s3_endpoint: str = ""
    s3_region: str = ""
    s3_key_id: str = ""
    s3_secret: str = ""
    s3_url_style: str = ""
    s3_use_ssl: str = ""

    def __post_init__(self) -> None:
        if not self.catalog or not self.data_path:
            raise CatalogNotConfigured(
                "PIPELINE_PROFILE=production needs PIPELINE_DUCKLAKE_CATALOG (a libpq connection string of the "
                "PostgreSQL catalog database, without the password) and PIPELINE_DUCKLAKE_DATA_PATH"
            )
        if re.search(r"\bpassword\s*=", self.catalog, re.IGNORECASE):
            raise CatalogNotConfigured(
                "PIPELINE_DUCKLAKE_CATALOG must not carry a password; set PIPELINE_DUCKLAKE_CATALOG_PASSWORD"
            )

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> DuckLakeSettings:
        env = os.environ if environ is None else environ
        return cls(
            catalog=env.get("PIPELINE_DUCKLAKE_CATALOG", ""),
            data_path=env.get("PIPELINE_DUCKLAKE_DATA_PATH", ""),
            password=env.get("PIPELINE_DUCKLAKE_CATALOG_PASSWORD", ""),
            s3_endpoint=env.get("PIPELINE_S3_ENDPOINT", ""),
            s3_region=env.get("PIPELINE_S3_REGION", ""),
            s3_key_id=env.get("PIPELINE_S3_KEY_ID", ""),
            s3_secret=env.get("PIPELINE_S3_SECRET", ""),
            s3_url_style=env.get("PIPELINE_S3_URL_STYLE", ""),
            s3_use_ssl=env.get("PIPELINE_S3_USE_SSL", ""),
        )

    @property
    def on_object_storage(self) -> bool:
        return self.data_path.startswith(("s3://", "s3a://", "gs://", "r2://"))

    def export_password(self) -> None:
        """Make the catalog's password libpq's (this process's connections and dbt's, which inherits it)."""
        if self.password:
            os.environ["PGPASSWORD"] = self.password


def profile_from_env() -> str:
    profile = os.environ.get("PIPELINE_PROFILE") or "embedded"
    if profile not in PROFILES:
        raise ValueError(f"PIPELINE_PROFILE must be one of {', '.join(PROFILES)}, got {profile!r}")
    return profile


def connect(settings: DuckLakeSettings, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the DuckLake attached as `lake` (and made the default database)."""
    settings.export_password()
    connection = duckdb.connect()
    try:
        ensure_installed(connection)
        connection.execute("SET TimeZone = 'UTC'")
        if settings.on_object_storage:
            connection.execute("LOAD httpfs")
            options = {
                "KEY_ID": settings.s3_key_id,
                "SECRET": settings.s3_secret,
                "REGION": settings.s3_region,
                "ENDPOINT": settings.s3_endpoint,
                "URL_STYLE": settings.s3_url_style,
            }
            fields = [f"{name} {quote_literal(value)}" for name, value in options.items() if value]
            if settings.s3_use_ssl:
                fields.append(f"USE_SSL {'true' if settings.s3_use_ssl.lower() in ('1', 'true', 'yes') else 'false'}")
            secret = "".join(", " + field for field in fields)
            connection.execute(f"CREATE TEMPORARY SECRET pipeline_object_storage (TYPE s3{secret})")
        options = [f"DATA_PATH {quote_literal(settings.data_path)}", "DATA_INLINING_ROW_LIMIT 0"]
        if read_only:
            options = [f"DATA_PATH {quote_literal(settings.data_path)}", "READ_ONLY"]
        path = quote_literal("ducklake:postgres:" + settings.catalog)
        for attempt in range(_ATTACH_ATTEMPTS):
            try:
                connection.execute(f"ATTACH {path} AS {ALIAS} ({', '.join(options)})")
                break
            except duckdb.Error as error:
                # Processes attaching a new catalog at the same moment all try to create its tables; the
                # losers find them created and attach on the next try.
                if "Failed to initialize DuckLake" not in str(error) or attempt == _ATTACH_ATTEMPTS - 1:
                    raise
                time.sleep(0.2 * (attempt + 1))
        connection.execute(f"USE {ALIAS}")
    except BaseException:
        connection.close()
        raise
    return connection


def is_conflict(error: Exception) -> bool:
    """A DuckLake commit that lost to a concurrent one (retrying the whole transaction can succeed)."""
    text = str(error)
    return isinstance(error, duckdb.TransactionException) or (
        isinstance(error, duckdb.Error)
        and ("Transaction conflict" in text or "Failed to commit DuckLake transaction" in text)
    )


def in_transaction(
    connection: duckdb.DuckDBPyConnection,
    work: Callable[[duckdb.DuckDBPyConnection], _T],
    what: str,
    retry_seconds: float = CONFLICT_RETRY_SECONDS,
) -> _T:
    """Run `work` in one transaction and commit it, running it again from the start while the commit conflicts
    with another writer's (with jittered backoff, for at most `retry_seconds`)."""
    deadline = time.monotonic() + retry_seconds
    backoff = 0.05
    while True:
        connection.execute("BEGIN TRANSACTION")
        try:
            result = work(connection)
            connection.execute("COMMIT")
            return result
        except Exception as error:
            with suppress(duckdb.Error):  # a failed COMMIT has already ended the transaction
                connection.execute("ROLLBACK")
            if not is_conflict(error) or time.monotonic() + backoff > deadline:
                if is_conflict(error):
                    raise TimeoutError(
                        f"{what}: still conflicting with other writers after {retry_seconds:g} s: {error}"
                    ) from error
                raise
            time.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, 2.0)


def _lock_keys(name: str) -> tuple[int, int]:
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return (int.from_bytes(digest[:4], "big", signed=True), int.from_bytes(digest[4:], "big", signed=True))


@contextmanager
def turn(
    settings: DuckLakeSettings, name: str, holder: str, wait_seconds: float, busy: Callable[[str], Exception]
) -> Iterator[None]:
    """Hold the catalog's advisory lock `name` (a partition's turn), waiting at most `wait_seconds`.

    PostgreSQL releases a session's advisory locks when its connection ends, so a writer that dies gives its
    turn up as a killed process gave up its `flock` in the embedded profile; the holder is named by the
    `application_name` of the session that holds it."""
    import psycopg2  # the production extra

    settings.export_password()
    keys = _lock_keys(name)
    connection = psycopg2.connect(settings.catalog, application_name=holder[:63], connect_timeout=30)
    connection.autocommit = True
    try:
        deadline = time.monotonic() + wait_seconds
        backoff = 0.05
        with connection.cursor() as cursor:
            while True:
                cursor.execute("select pg_try_advisory_lock(%s, %s)", keys)
                if cursor.fetchone()[0]:
                    break
                if time.monotonic() >= deadline:
                    cursor.execute(
                        "select a.application_name, a.client_addr from pg_locks l join pg_stat_activity a using (pid) "
                        "where l.locktype = 'advisory' and l.classid = %s::oid and l.objid = %s::oid and l.granted",
                        (keys[0] & 0xFFFFFFFF, keys[1] & 0xFFFFFFFF),
                    )
                    found = cursor.fetchone()
                    raise busy(found[0] if found and found[0] else "another session of the catalog")
                time.sleep(min(backoff, max(0.0, deadline - time.monotonic())))
                backoff = min(backoff * 2, 1.0)
        yield
    finally:
        connection.close()  # ends the session, which releases its advisory locks
