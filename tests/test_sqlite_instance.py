"""The local runs' SQLite settings: commits not synced to disk, and no checkpoint each time Dagster closes
one of its per-event connections (a connection is kept open per database file)."""

import sqlite3

import sqlalchemy
from sqlalchemy.pool import NullPool

from pipeline_project.dev import sqlite_instance


def test_every_sqlite_database_commits_without_a_sync_and_stays_open_between_connections(tmp_path):
    sqlite_instance.install()
    sqlite_instance.install()  # idempotent
    path = tmp_path / "events.db"
    for _ in range(3):  # Dagster's pattern: a new engine and connection per event, closed afterwards
        engine = sqlalchemy.create_engine(f"sqlite:///{path}", poolclass=NullPool)
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("create table if not exists events (n integer)"))
            connection.execute(sqlalchemy.text("insert into events values (1)"))
            connection.commit()
            (synchronous,) = connection.execute(sqlalchemy.text("pragma synchronous")).fetchone()
            (journal,) = connection.execute(sqlalchemy.text("pragma journal_mode")).fetchone()
        engine.dispose()
        # The last connection to a WAL database checkpoints and deletes the log when it closes; the kept
        # connection means closing this one did not.
        assert (tmp_path / "events.db-wal").exists()
    assert (synchronous, journal) == (1, "wal")  # NORMAL
    assert str(path) in sqlite_instance.kept_databases()
    with sqlite3.connect(path) as reader:
        assert reader.execute("select count(*) from events").fetchone() == (3,)
