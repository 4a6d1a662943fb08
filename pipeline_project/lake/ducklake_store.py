"""The raw layer on DuckLake (the production profile): partitions committed as DuckLake transactions.

Tables of the DuckLake (`catalog`):
    raw.<table>          rows that passed the contract, every partition in one table (`_partition_date`)
    quarantine.<table>   rows that failed it, with the rules they broke
    ledger.manifests     one row per committed partition: the manifest (`PartitionManifest`) as JSON
    ledger.rejected      the last load of a partition that did not reconcile (nothing committed)
    ledger.watermarks    where change capture of a table resumes (`changes`)

The load sequence is the embedded profile's (`loading`, `partition_writer.PartitionWriter`): batches stream to
temporary Parquet files in a local scratch directory (`PIPELINE_LAKE_DIR`), `stage` drops copies and computes
what the load accounts for, the caller reconciles, and only a load that agrees is committed. What differs is
the commit and the reads:

- A writer takes the partition's turn: a PostgreSQL advisory lock in the catalog database, held until the
  writer closes, released by PostgreSQL when the writer's session ends (a killed process, a lost node). Two
  runs of one partition take turns, and the second reads the source after the first has committed, as with
  the embedded profile's `flock`. The wait is bounded; the error names the holding run and PID.
- `commit` is one DuckLake transaction: delete the partition's rows from `raw.<table>` and
  `quarantine.<table>`, insert the staged files, replace the partition's ledger row and clear its rejected
  entry. DuckLake commits it atomically in the catalog, so a reader sees the old version or the new one with
  its ledger row, never a mix, and a writer killed before the commit leaves the previous version untouched
  (nothing to roll forward; its scratch files are deleted by the next writer of the partition). No file is
  renamed and no file lock is taken: the data path may be object storage.
- Commits of different partitions of one table run concurrently; DuckLake detects a conflict between two
  commits that change one table at the same moment, and the loser runs its transaction again
  (`catalog.in_transaction`): its staged files are still a complete, reconciled version of its partition.
- Instead of file checksums, the ledger row records each side's row count and an order-independent digest of
  its rows (`digest`); `verify` recomputes both from the tables, so rows changed, lost or added behind the
  ledger's back fail the blocking check, as a file that no longer matches its checksum does in the embedded
  profile.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import pyarrow as pa

from pipeline_project import fault_points
from pipeline_project.ingest.reconcile import Verdict
from pipeline_project.lake.catalog import ALIAS, DuckLakeSettings, connect, in_transaction, turn
from pipeline_project.lake.manifest import PartitionManifest, Watermark
from pipeline_project.lake.partition_writer import PartitionWriter
from pipeline_project.lake.raw_store import LOCK_WAIT_SECONDS, Lake, LakeIndex, PartitionBusy
from pipeline_project.quality.contracts import RawTableContract
from pipeline_project.transform.warehouse import quote_identifier, quote_literal

RAW, QUARANTINE, LEDGER = "raw", "quarantine", "ledger"
_LEDGER_TABLES = {
    "manifests": "table_name VARCHAR, partition DATE, run_id VARCHAR, committed_at VARCHAR, manifest VARCHAR",
    "rejected": "table_name VARCHAR, partition DATE, run_id VARCHAR, manifest VARCHAR",
    "watermarks": "table_name VARCHAR, since VARCHAR, run_id VARCHAR, recorded_at VARCHAR",
}


# The DuckLake attached once per process and settings (`DuckLakeStore.connection`).
_ATTACHED: dict[DuckLakeSettings, duckdb.DuckDBPyConnection] = {}
_EXISTING: set[tuple[DuckLakeSettings, str, str]] = set()
_LEDGER_READY: set[DuckLakeSettings] = set()


def _staged_file(path: Path) -> str:
    """A staged file as a relation. Not hive-partitioned: its folder's `date=` would become a column."""
    return f"read_parquet({quote_literal(str(path))}, hive_partitioning = false)"


def _relation(schema: str, table: str) -> str:
    """`lake."schema"."table"`: qualified by the DuckLake, so cursors (new connections) resolve it too."""
    return f"{ALIAS}.{quote_identifier(schema)}.{quote_identifier(table)}"


def digest(connection: duckdb.DuckDBPyConnection, source: str, where: str = "", params: list | None = None) -> str:
    """`rows=<n>;hash=<sum>`: the row count and the sum of every row's hash, over the columns in name order, so
    the same rows give the same digest whether read from a staged file or from the table, in any order."""
    columns = sorted(
        name for (name,) in connection.execute(f"select column_name from (describe select * from {source})").fetchall()
    )
    row = ", ".join(quote_identifier(name) for name in columns)
    count, total = connection.execute(
        f"select count(*), coalesce(sum(hash(row({row}))::hugeint), 0)::varchar from {source} {where}", params or []
    ).fetchone()
    return f"rows={count};hash={total}"


class DuckLakeStore(Lake):
    """The raw layer's commit and reads on DuckLake; paths of `Lake` are only the local scratch of staging."""

    def __init__(
        self, scratch: str | Path, settings: DuckLakeSettings, lock_wait_seconds: float = LOCK_WAIT_SECONDS
    ) -> None:
        super().__init__(Path(scratch) / "staging", lock_wait_seconds)
        self.settings = settings
        self._connection: duckdb.DuckDBPyConnection | None = None
        self._ledger_ready = False

    # --- the catalog -------------------------------------------------------------------------------------
    @property
    def connection(self) -> duckdb.DuckDBPyConnection:
        """A connection of its own (transactions are per connection) to the process's one attachment of the
        DuckLake: attaching costs about a second, so a run's assets share it."""
        if self._connection is None:
            attached = _ATTACHED.get(self.settings)
            if attached is None:
                attached = _ATTACHED[self.settings] = connect(self.settings)
            self._connection = attached.cursor()
            self._connection.execute(f"USE {ALIAS}")
        return self._connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _table_exists(self, schema: str, table: str) -> bool:
        """Whether the table exists (a table of the raw layer is never dropped, so a yes is remembered: asking
        the catalog costs a round trip to PostgreSQL)."""
        known = (self.settings, schema, table)
        if known in _EXISTING:
            return True
        exists = bool(
            self.connection.execute(
                "select count(*) from duckdb_tables() where database_name = 'lake' and schema_name = ? "
                "and table_name = ?",
                [schema, table],
            ).fetchone()[0]
        )
        if exists:
            _EXISTING.add(known)
        return exists

    def ensure_ledger(self) -> None:
        if self._ledger_ready or self.settings in _LEDGER_READY:
            return

        def create(connection: duckdb.DuckDBPyConnection) -> None:
            for schema in (RAW, QUARANTINE, LEDGER):
                connection.execute(f"create schema if not exists {ALIAS}.{quote_identifier(schema)}")
            for table, columns in _LEDGER_TABLES.items():
                connection.execute(f"create table if not exists {_relation(LEDGER, table)} ({columns})")

        in_transaction(self.connection, create, "creating the raw layer's schemas")
        self._ledger_ready = True
        _LEDGER_READY.add(self.settings)

    def ensure_table(self, schema: str, table: str, staged: Path) -> None:
        """Create `schema.table` with the staged file's columns, partitioned by day, if it does not exist yet."""
        if self._table_exists(schema, table):
            return

        def create(connection: duckdb.DuckDBPyConnection) -> None:
            if self._table_exists(schema, table):
                return
            relation = _relation(schema, table)
            source = _staged_file(staged)
            connection.execute(f"create table {relation} as select * from {source} limit 0")
            connection.execute(f"alter table {relation} set partitioned by (_partition_date)")

        in_transaction(self.connection, create, f"creating {schema}.{table}")

    # --- turns ---------------------------------------------------------------------------------------------
    @contextmanager
    def locked(self, table: str, day: date, holder: str, kind: str = "") -> Iterator[None]:
        """A partition's turn (`kind=""`); commits need no lock of their own (`.commit`): they are transactions."""
        if kind:
            with nullcontext():
                yield
            return
        with turn(
            self.settings,
            f"raw/{table}/{day.isoformat()}",
            holder,
            self.lock_wait_seconds,
            busy=lambda current: PartitionBusy(
                f"raw_{table} {day}: the partition is locked by {current}; "
                f"waited {self.lock_wait_seconds:g} s for it to finish"
            ),
        ):
            yield

    def complete_pending_commit(self, table: str, day: date) -> None:
        """Nothing is ever pending: a DuckLake commit is one transaction."""

    # --- reads ---------------------------------------------------------------------------------------------
    def _ledger_row(self, name: str, table: str, day: date) -> PartitionManifest | None:
        self.ensure_ledger()
        row = self.connection.execute(
            f"select manifest from {_relation(LEDGER, name)} where table_name = ? and partition = ? "
            "order by committed_at desc limit 1"
            if name == "manifests"
            else f"select manifest from {_relation(LEDGER, name)} where table_name = ? and partition = ? limit 1",
            [table, day],
        ).fetchone()
        return None if row is None else PartitionManifest.from_json(row[0])

    def read_manifest(self, table: str, day: date) -> PartitionManifest | None:
        return self._ledger_row("manifests", table, day)

    def read_verified(self, table: str, day: date) -> tuple[PartitionManifest | None, list[str]]:
        """The ledger row and the problems of the partition's rows, read in one snapshot of the DuckLake."""
        self.ensure_ledger()
        self.connection.execute("BEGIN TRANSACTION")
        try:
            manifest = self.read_manifest(table, day)
            return manifest, ([] if manifest is None else self.verify(manifest))
        finally:
            self.connection.execute("ROLLBACK")

    def verify(self, manifest: PartitionManifest) -> list[str]:
        problems = [*Verdict.from_metadata(manifest.verdict).problems, *manifest.ledger_problems()]
        day = date.fromisoformat(manifest.partition)
        for label, schema, expected, expected_rows in (
            ("data", RAW, manifest.data_sha256, manifest.loaded_count),
            ("quarantine", QUARANTINE, manifest.quarantine_sha256, manifest.quarantined_count),
        ):
            name = f"{schema}.{manifest.table} {manifest.partition}"
            if not self._table_exists(schema, manifest.table):
                problems.append(f"{label} table {schema}.{manifest.table} is missing")
                continue
            found = digest(self.connection, _relation(schema, manifest.table), "where _partition_date = ?", [day])
            rows = int(found.split(";")[0].removeprefix("rows="))
            if rows != expected_rows:
                problems.append(f"{label} {name} holds {rows} rows, manifest says {expected_rows}")
            elif found != expected:
                problems.append(f"{label} {name} does not match the digest in its manifest")
        return problems

    def read_rejected(self, table: str, day: date) -> PartitionManifest | None:
        return self._ledger_row("rejected", table, day)

    def committed_days(self, table: str) -> set[date]:
        self.ensure_ledger()
        rows = self.connection.execute(
            f"select distinct partition from {_relation(LEDGER, 'manifests')} where table_name = ?", [table]
        ).fetchall()
        return {day for (day,) in rows}

    def partition_signatures(self) -> LakeIndex:
        """Every committed partition's signature: a hash of its ledger row, which each commit replaces in the
        same transaction as the rows (there is no commit under way to see: a DuckLake commit is atomic)."""
        self.ensure_ledger()
        rows = self.connection.execute(
            f"select table_name, partition, md5(manifest) from {_relation(LEDGER, 'manifests')}"
        ).fetchall()
        return {(table, day): signature for table, day, signature in rows}

    def data_location(self, manifest: PartitionManifest) -> str:
        return manifest.data_file

    # --- writes --------------------------------------------------------------------------------------------
    def writer(self, contract: RawTableContract, day: date, run_id: str) -> DuckLakeWriter:
        return DuckLakeWriter(self, contract, day, run_id)

    def record_rejected(self, manifest: PartitionManifest) -> None:
        self.ensure_ledger()
        day = date.fromisoformat(manifest.partition)

        def replace(connection: duckdb.DuckDBPyConnection) -> None:
            relation = _relation(LEDGER, "rejected")
            connection.execute(f"delete from {relation} where table_name = ? and partition = ?", [manifest.table, day])
            connection.execute(
                f"insert into {relation} values (?, ?, ?, ?)",
                [manifest.table, day, manifest.run_id, json.dumps(asdict(manifest))],
            )

        in_transaction(self.connection, replace, f"raw_{manifest.table} {day}: recording the rejected load")

    # --- change capture ------------------------------------------------------------------------------------
    def read_watermark(self, table: str) -> Watermark | None:
        self.ensure_ledger()
        row = self.connection.execute(
            f"select table_name, since, run_id, recorded_at from {_relation(LEDGER, 'watermarks')} "
            "where table_name = ?",
            [table],
        ).fetchall()
        marks = [Watermark(*values) for values in row]
        return max(marks, key=lambda mark: mark.moment) if marks else None

    def advance_watermark(self, table: str, moment: datetime, run_id: str) -> Watermark:
        """Move the watermark forward in one transaction (a concurrent move conflicts and reads again)."""
        self.ensure_ledger()

        def advance(connection: duckdb.DuckDBPyConnection) -> Watermark:
            current = self.read_watermark(table)
            if current is not None and current.moment >= moment:
                return current
            mark = Watermark(table, moment.isoformat(), run_id, datetime.now(UTC).isoformat(timespec="seconds"))
            relation = _relation(LEDGER, "watermarks")
            connection.execute(f"delete from {relation} where table_name = ?", [table])
            connection.execute(f"insert into {relation} values (?, ?, ?, ?)", list(asdict(mark).values()))
            return mark

        return in_transaction(self.connection, advance, f"raw_{table}: advancing the watermark")


class DuckLakeWriter(PartitionWriter):
    """`PartitionWriter` whose turn is the catalog's advisory lock and whose commit is a DuckLake transaction."""

    lake: DuckLakeStore

    def __enter__(self) -> DuckLakeWriter:
        self.lake.ensure_ledger()
        return super().__enter__()  # takes the turn (`locked`), deletes scratch files of dead writers

    def _committed_batches(self, kind: str) -> Iterator[pa.RecordBatch]:
        schema = RAW if kind == "data" else QUARANTINE
        if not self.lake._table_exists(schema, self.contract.name):
            return
        reader = (
            self.lake.connection.cursor()
            .execute(f"select * from {_relation(schema, self.contract.name)} where _partition_date = ?", [self.day])
            .to_arrow_reader(50_000)
        )
        yield from reader

    def commit(self, manifest: PartitionManifest) -> PartitionManifest:
        """Insert the staged files and the ledger row in one DuckLake transaction (see the module docstring)."""
        started = time.perf_counter()
        store, table, day = self.lake, self.contract.name, self.day
        staged = {kind: _staged_file(path) for kind, path in self._tmp.items()}
        connection = store.connection
        manifest.data_sha256 = digest(connection, staged["data"])
        manifest.quarantine_sha256 = digest(connection, staged["quarantine"])
        manifest.data_file = f"ducklake:{RAW}.{table}/_partition_date={day.isoformat()}"
        manifest.quarantine_file = f"ducklake:{QUARANTINE}.{table}/_partition_date={day.isoformat()}"
        manifest.committed_at = datetime.now(UTC).isoformat(timespec="seconds")
        store.ensure_table(RAW, table, self._tmp["data"])
        store.ensure_table(QUARANTINE, table, self._tmp["quarantine"])

        def write(connection: duckdb.DuckDBPyConnection) -> None:
            for kind, schema in (("data", RAW), ("quarantine", QUARANTINE)):
                relation = _relation(schema, table)
                connection.execute(f"delete from {relation} where _partition_date = ?", [day])
                connection.execute(f"insert into {relation} by name select * from {staged[kind]}")
                if kind == "data":
                    fault_points.reached("after_data_before_manifest")
            manifests = _relation(LEDGER, "manifests")
            connection.execute(f"delete from {manifests} where table_name = ? and partition = ?", [table, day])
            connection.execute(
                f"insert into {manifests} values (?, ?, ?, ?, ?)",
                [table, day, self.run_id, manifest.committed_at, json.dumps(asdict(manifest))],
            )
            rejected = _relation(LEDGER, "rejected")
            connection.execute(f"delete from {rejected} where table_name = ? and partition = ?", [table, day])

        manifest.stage_seconds["write_raw"] = round(
            manifest.stage_seconds["write_raw"] + time.perf_counter() - started, 4
        )
        # The ledger row is serialized before the transaction, so the time of the commit itself is not in it.
        in_transaction(connection, write, f"raw_{table} {day}: committing run {self.run_id}")
        self._decided = True
        for path in self._tmp.values():
            path.unlink(missing_ok=True)
        return manifest
