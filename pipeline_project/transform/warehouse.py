"""The DuckDB warehouse as Python reaches it: opening the file while another process may hold its lock, and
naming its tables in SQL.

DuckDB lets one process open a database file for writing (or several processes for reading); any other
process that opens it gets `IOException: Could not set lock on file "...": Conflicting lock is held in
<program> (PID <n>)` at once. `connect` retries that with a short backoff for a bounded time, because a
dbt build or a check releases the file within seconds, then raises `WarehouseLockedError`, which names the
file, the holding process and the runbook. Any other error is raised at once.

Table names cannot be bound as SQL parameters, so they come only from `mart_table`: the marts the
contracts declare, in the schema dbt builds them in, checked and double-quoted. Values are always bound
with `?`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from pipeline_project.quality.contracts import MART_CONTRACTS

MART_SCHEMA = "marts"
DEFAULT_LOCK_WAIT_SECONDS = 30
LOCK_RUNBOOK = "runbooks/transformation-failure.md"
_FIRST_BACKOFF_SECONDS = 0.05
_MAX_BACKOFF_SECONDS = 1.0
_LOCK_CONFLICT = re.compile(r"Conflicting lock is held in (?P<program>.*?) \(PID (?P<pid>\d+)\)")
# The names DuckDB and dbt agree on without quoting; anything else is not one of ours.
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class WarehouseLockedError(RuntimeError):
    """Another process kept the warehouse file locked for longer than the configured wait."""

    def __init__(self, path: Path, waited_seconds: float, holder_pid: int | None, holder: str) -> None:
        self.path = path
        self.holder_pid = holder_pid
        super().__init__(
            f"warehouse {path} is locked by {holder}; gave up after waiting {waited_seconds:.1f} s "
            f"(PIPELINE_WAREHOUSE_LOCK_WAIT_SECONDS). Close that process's connection, or wait for it to finish, "
            f"then rerun. Runbook: {LOCK_RUNBOOK} (another process holds the warehouse file)"
        )


class UnknownTableError(ValueError):
    """A table name that is not one of the warehouse's known tables, so it is never put into SQL."""


def quote_identifier(name: str) -> str:
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise UnknownTableError(f"{name!r} is not a valid warehouse identifier (expected {_IDENTIFIER.pattern})")
    return f'"{name}"'


def quote_literal(text: str) -> str:
    """A SQL string literal of `text` (quotes doubled), for the statements that take no bound parameters
    (ATTACH, INSTALL, CREATE SECRET, read_parquet of a path)."""
    return "'" + str(text).replace("'", "''") + "'"


def mart_table(mart: str) -> str:
    """`"marts"."<mart>"` for a mart a contract declares; anything else raises UnknownTableError."""
    if mart not in MART_CONTRACTS:
        raise UnknownTableError(f"{mart!r} is not a known mart (known: {', '.join(sorted(MART_CONTRACTS))})")
    return f"{quote_identifier(MART_SCHEMA)}.{quote_identifier(mart)}"


def _process_name(pid: int) -> str | None:
    # Only the short name (comm): a command line can carry credentials.
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() or None
    except OSError:
        return None


def _describe_lock_holder(message: str) -> tuple[int | None, str]:
    """The holder's PID and a description of it, from DuckDB's lock-conflict message (plus /proc if present)."""
    conflict = _LOCK_CONFLICT.search(message)
    if conflict is None:
        return None, "another process (DuckDB did not name it)"
    pid, program = int(conflict["pid"]), conflict["program"]
    name = _process_name(pid)
    if name:
        return pid, f"PID {pid} (process {name!r}, program {program})"
    if Path("/proc").is_dir():
        return pid, f"PID {pid} (program {program}, no longer running)"
    return pid, f"PID {pid} (program {program})"


def _open(path: Path, read_only: bool) -> tuple[duckdb.DuckDBPyConnection | None, str]:
    """A connection, or None and DuckDB's message when another process holds the file's lock."""
    try:
        return duckdb.connect(str(path), read_only=read_only), ""
    except duckdb.IOException as error:
        if "Could not set lock on file" not in str(error):
            raise
        return None, str(error)


@contextmanager
def connect(
    path: str | Path, *, read_only: bool, lock_wait_seconds: float = DEFAULT_LOCK_WAIT_SECONDS
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection to the warehouse file, closed on exit, waiting up to `lock_wait_seconds` for its lock."""
    path = Path(path).resolve()
    started = time.monotonic()
    backoff = _FIRST_BACKOFF_SECONDS
    connection, conflict = _open(path, read_only)
    while connection is None:
        waited = time.monotonic() - started
        if waited >= lock_wait_seconds:
            raise WarehouseLockedError(path, waited, *_describe_lock_holder(conflict))
        time.sleep(min(backoff, lock_wait_seconds - waited))
        backoff = min(backoff * 2, _MAX_BACKOFF_SECONDS)
        connection, conflict = _open(path, read_only)
    try:
        yield connection
    finally:
        connection.close()
