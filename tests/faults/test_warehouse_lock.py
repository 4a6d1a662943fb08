"""A DuckDB warehouse file locked by another process (docs/reliability.md, the fault catalogue).

A real second process holds a read-write connection with an uncommitted change. The mart contract check
waits for the lock a bounded time, then fails naming the file, the holder's PID and the runbook; the data
is what it was; once the holder goes away (its transaction rolled back) the same check passes. A lock
released during the wait costs only the wait.
"""

import subprocess
import sys
import time
from datetime import date, timedelta
from decimal import Decimal

import duckdb
import pytest

from pipeline_project.quality.contracts import MART_CONTRACTS
from pipeline_project.quality.mart_checks import build_mart_contract_check
from pipeline_project.resources import WarehouseResource
from pipeline_project.transform.warehouse import LOCK_RUNBOOK, WarehouseLockedError

LOCK_WAIT_SECONDS = 1
DAYS = 3

# Holds the file read-write with a deletion it never commits; exits (rolling it back) on a line on stdin,
# or on its own after `hold_seconds` when given.
HOLDER = """
import sys, time, duckdb
connection = duckdb.connect(sys.argv[1])
connection.execute("begin")
connection.execute("delete from marts.daily_revenue")
print("holding", flush=True)
if len(sys.argv) > 2:
    time.sleep(float(sys.argv[2]))
else:
    sys.stdin.readline()
"""


@pytest.fixture
def warehouse_file(tmp_path):
    """A warehouse with a daily_revenue mart that meets its contract."""
    path = tmp_path / "warehouse.duckdb"
    rows = [
        (date(2026, 3, 14) + timedelta(days=n), 10 + n, 9 + n, 30, Decimal("500.00"), Decimal("20.50"), 8 + n)
        for n in range(DAYS)
    ]
    with duckdb.connect(str(path)) as connection:
        connection.execute("create schema marts")
        connection.execute(
            "create table marts.daily_revenue (order_date date, orders_count bigint, billable_orders_count bigint,"
            " items_sold bigint, gross_revenue decimal(18,2), refunded_revenue decimal(18,2),"
            " net_revenue decimal(18,2), average_order_value decimal(18,2), customers_count bigint)"
        )
        connection.executemany(
            "insert into marts.daily_revenue values (?, ?, ?, ?, ?, ?, ? - ?, ? / ?, ?)",
            [(d, o, b, i, g, r, g, r, g, b, c) for d, o, b, i, g, r, c in rows],
        )
    return path


def _mart_rows(path):
    with duckdb.connect(str(path), read_only=True) as connection:
        return connection.execute("select * from marts.daily_revenue order by order_date").fetchall()


def _hold(path, *hold_seconds):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), *map(str, hold_seconds)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "holding"
    return holder


def _check(path, lock_wait_seconds=LOCK_WAIT_SECONDS):
    check = build_mart_contract_check(MART_CONTRACTS["daily_revenue"])
    warehouse = WarehouseResource(path=str(path), lock_wait_seconds=lock_wait_seconds)
    return {result.check_name: result for result in check(warehouse=warehouse)}


def test_a_locked_warehouse_fails_the_check_in_bounded_time_naming_the_holder_then_passes(warehouse_file):
    before = _mart_rows(warehouse_file)
    holder = _hold(warehouse_file)
    try:
        started = time.monotonic()
        with pytest.raises(WarehouseLockedError) as locked:
            _check(warehouse_file)
        waited = time.monotonic() - started
    finally:
        holder.communicate("release\n", timeout=30)

    assert LOCK_WAIT_SECONDS <= waited < LOCK_WAIT_SECONDS + 5, "the wait is bounded by the setting"
    message = str(locked.value)
    assert locked.value.holder_pid == holder.pid
    assert f"PID {holder.pid}" in message and str(warehouse_file) in message and LOCK_RUNBOOK in message
    assert "python" in message, "the holder's process name (from /proc) or program is named"
    assert "PIPELINE_WAREHOUSE_LOCK_WAIT_SECONDS" in message, "the setting that bounds the wait is named"

    assert holder.returncode == 0
    assert _mart_rows(warehouse_file) == before, "the holder's uncommitted deletion was rolled back"
    results = _check(warehouse_file)
    assert results["contract_errors"].passed and results["contract_warnings"].passed
    assert results["contract_errors"].metadata["rows_checked"].value == DAYS


def test_a_lock_released_during_the_wait_only_delays_the_check(warehouse_file):
    before = _mart_rows(warehouse_file)
    holder = _hold(warehouse_file, 0.5)
    results = _check(warehouse_file, lock_wait_seconds=30)
    assert holder.wait(timeout=30) == 0
    assert results["contract_errors"].passed
    assert results["contract_errors"].metadata["rows_checked"].value == DAYS
    assert _mart_rows(warehouse_file) == before


def test_errors_other_than_a_lock_are_raised_at_once(tmp_path):
    missing = tmp_path / "warehouse.duckdb"
    started = time.monotonic()
    with pytest.raises(duckdb.IOException, match="warehouse.duckdb"):
        _check(missing, lock_wait_seconds=30)
    assert time.monotonic() - started < 10, "a missing file is not waited on as if it were locked"
    assert not missing.exists()
