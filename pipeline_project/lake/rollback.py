"""Rolling the warehouse's tables back to an earlier DuckLake snapshot (the production profile's data rollback).

Every DuckLake commit is a snapshot, and DuckLake keeps what older snapshots need until they are expired, so
a mart that a bad build replaced can be read as it stood before (`AT (VERSION => n)` or
`AT (TIMESTAMP => t)`). Rolling back writes that old content as the tables' new version, all tables in one
transaction: readers see the bad marts or the restored ones, never a mix, and the bad build stays in the
history (it can be rolled forward to again the same way). The raw layer is not touched: it is the source of
truth the next good build starts from.

    python -m pipeline_project.lake.rollback snapshots                  # what changed in the latest snapshots
    python -m pipeline_project.lake.rollback marts --as-of 2026-12-07T02:14:00Z   # before the bad run started
    python -m pipeline_project.lake.rollback marts --to-snapshot 412 [--schemas marts,snapshots] [--dry-run]

`make rollback-marts AS_OF=...` or `SNAPSHOT=...` runs the same with the environment of the deployment
(PIPELINE_PROFILE=production and the PIPELINE_DUCKLAKE_* settings). Then materialize the marts' checks
(`asset_checks` job) to confirm the restored state, and fix the cause before the next scheduled build.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from datetime import datetime

import duckdb

from pipeline_project.lake.catalog import ALIAS, DuckLakeSettings, connect, in_transaction
from pipeline_project.transform.warehouse import quote_identifier

DEFAULT_SCHEMAS = ("marts",)


@dataclass(frozen=True)
class Restored:
    snapshot: int
    tables: list[str]
    absent_then: list[str]  # tables that did not exist at the snapshot: left as they are


def snapshots(connection: duckdb.DuckDBPyConnection, limit: int = 20) -> list[tuple[int, datetime, dict]]:
    return connection.execute(
        f"select snapshot_id, snapshot_time, changes from ducklake_snapshots('{ALIAS}') "
        "order by snapshot_id desc limit ?",
        [limit],
    ).fetchall()


def current_snapshot(connection: duckdb.DuckDBPyConnection) -> int:
    return connection.execute(f"select max(snapshot_id) from ducklake_snapshots('{ALIAS}')").fetchone()[0]


def snapshot_as_of(connection: duckdb.DuckDBPyConnection, moment: datetime) -> int:
    """The last snapshot committed at or before `moment`."""
    found = connection.execute(
        f"select max(snapshot_id) from ducklake_snapshots('{ALIAS}') where snapshot_time <= ?", [moment]
    ).fetchone()[0]
    if found is None:
        raise ValueError(f"the DuckLake has no snapshot at or before {moment.isoformat()}")
    return found


def _tables(connection: duckdb.DuckDBPyConnection, schemas: tuple[str, ...], at: int | None = None) -> list[str]:
    clause = "" if at is None else f" at (version => {int(at)})"
    found = []
    for schema in schemas:
        quoted = quote_identifier(schema)
        try:
            rows = connection.execute(
                "select table_name from duckdb_tables() where database_name = ? and schema_name = ?", [ALIAS, schema]
            ).fetchall()
        except duckdb.Error:
            rows = []
        for (table,) in rows:
            try:
                connection.execute(
                    f"select 1 from {ALIAS}.{quoted}.{quote_identifier(table)}{clause} limit 0"
                ).fetchall()
            except duckdb.Error:
                continue  # not there at that snapshot
            found.append(f"{schema}.{table}")
    return sorted(found)


def restore(
    connection: duckdb.DuckDBPyConnection, snapshot: int, schemas: tuple[str, ...] = DEFAULT_SCHEMAS
) -> Restored:
    """Make every table of `schemas` hold what it held at `snapshot`, in one transaction."""
    if snapshot >= current_snapshot(connection):
        raise ValueError(f"snapshot {snapshot} is not older than the current one; nothing to roll back to")
    now = _tables(connection, schemas)
    then = set(_tables(connection, schemas, at=snapshot))
    restored = [name for name in now if name in then]

    def write(connection: duckdb.DuckDBPyConnection) -> None:
        for name in restored:
            schema, table = name.split(".")
            relation = f"{ALIAS}.{quote_identifier(schema)}.{quote_identifier(table)}"
            connection.execute(
                f"create or replace table {relation} as select * from {relation} at (version => {int(snapshot)})"
            )

    in_transaction(connection, write, f"rolling back {', '.join(restored)} to snapshot {snapshot}")
    return Restored(snapshot, restored, [name for name in now if name not in then])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline_project.lake.rollback", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("snapshots", help="list the latest DuckLake snapshots and what each changed")
    listing.add_argument("--limit", type=int, default=20)
    marts = commands.add_parser("marts", help="restore the warehouse's tables as of an earlier snapshot")
    target = marts.add_mutually_exclusive_group(required=True)
    target.add_argument("--to-snapshot", type=int, help="the snapshot id (see `snapshots`)")
    target.add_argument("--as-of", help="ISO 8601 time, e.g. the bad run's start: the last snapshot before it")
    marts.add_argument("--schemas", default=",".join(DEFAULT_SCHEMAS), help="comma-separated (default: marts)")
    marts.add_argument("--dry-run", action="store_true", help="say what would be restored, change nothing")
    args = parser.parse_args(argv)

    connection = connect(DuckLakeSettings.from_env())
    try:
        if args.command == "snapshots":
            for snapshot_id, moment, changes in snapshots(connection, args.limit):
                print(f"{snapshot_id:>8}  {moment:%Y-%m-%dT%H:%M:%S%z}  {changes}")
            return 0
        schemas = tuple(part.strip() for part in args.schemas.split(",") if part.strip())
        if args.as_of:
            snapshot = snapshot_as_of(connection, datetime.fromisoformat(args.as_of.replace("Z", "+00:00")))
        else:
            snapshot = args.to_snapshot
        if args.dry_run:
            tables = _tables(connection, schemas, at=snapshot)
            print(f"would restore {len(tables)} table(s) to snapshot {snapshot}: {', '.join(tables)}")
            return 0
        restored = restore(connection, snapshot, schemas)
        print(
            f"restored {len(restored.tables)} table(s) to snapshot {restored.snapshot} "
            f"(now snapshot {current_snapshot(connection)}): {', '.join(restored.tables)}"
        )
        if restored.absent_then:
            print(f"not present at snapshot {snapshot}, left as they are: {', '.join(restored.absent_then)}")
        return 0
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        connection.close()


if __name__ == "__main__":
    sys.exit(main())
