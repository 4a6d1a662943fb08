"""Local runs store Dagster's events in SQLite without paying disk syncs per event.

Dagster's SQLite storage (what `make run`, `make check` and `make bench` use; deployments use PostgreSQL,
docs/deploy.md) opens a new connection for every statement group it writes and closes it afterwards: about
1,300 connections for the ~400 events of a one-day run (three per dbt test: planned, output, evaluation).
In WAL mode the last connection to a database file checkpoints the write-ahead log into the database when
it closes, and every commit syncs the log: on a busy disk that costs more than the run's own work.

`install()` makes every SQLite database that SQLAlchemy opens in this process
- commit with `synchronous=NORMAL`: in WAL mode a commit is then written but not synced. The database stays
  consistent if the process dies; only a power loss or an OS crash can lose the last commits of the local
  event log (the record of a run that would have to be rerun anyway);
- stay open through one extra connection per database file, held until the process exits, so that closing
  the per-event connections does not checkpoint (SQLite still checkpoints every 1,000 pages as usual).
"""

from __future__ import annotations

import sqlite3
import threading

from sqlalchemy import event
from sqlalchemy.engine import Engine

# Set to 1 to keep Dagster's own SQLite settings (the benchmark measures both).
STOCK_SETTING = "PIPELINE_SQLITE_STOCK"
_kept: dict[str, sqlite3.Connection] = {}
_lock = threading.Lock()
_installed = False


def _on_connect(dbapi_connection, _record) -> None:
    if not isinstance(dbapi_connection, sqlite3.Connection):
        return
    cursor = dbapi_connection.cursor()
    try:
        path = next((row[2] for row in cursor.execute("PRAGMA database_list") if row[1] == "main"), "")
        if path and path not in _kept:
            # Dagster puts its databases in WAL mode when it creates them; the keeper below needs it first.
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()
    if not path:
        return  # an in-memory database
    with _lock:
        if path not in _kept:
            keeper = sqlite3.connect(path, check_same_thread=False)
            # Reading the schema takes the shared lock that an open connection keeps on a WAL database.
            keeper.execute("select count(*) from sqlite_master").fetchall()
            _kept[path] = keeper


def install() -> None:
    """Apply the settings above to every SQLite database opened through SQLAlchemy from now on (idempotent)."""
    global _installed
    with _lock:
        if not _installed:
            event.listen(Engine, "connect", _on_connect)
            _installed = True


def kept_databases() -> list[str]:
    with _lock:
        return sorted(_kept)
