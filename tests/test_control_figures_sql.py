"""The control-figure SQL that docs/completeness.md gives source owners computes, in a real PostgreSQL, exactly
the count and key checksum the pipeline compares with (`reconcile.key_checksum`), so a source can implement
`GET /v1/<table>/control` from the document alone."""

from __future__ import annotations

import hashlib
import re
from datetime import date
from pathlib import Path

import pytest
from postgres import server_binaries, throwaway_cluster

from pipeline_project.ingest.reconcile import key_checksum, key_text

DOC = Path(__file__).resolve().parents[1] / "docs" / "completeness.md"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.skipif(server_binaries() is None, reason="needs PostgreSQL's server (.ci/run installs it)"),
]


def documented_sql() -> str:
    """The one SQL block of the document that computes control figures (others show how to read the ledger)."""
    (sql,) = [block for block in re.findall(r"```sql\n(.*?)```", DOC.read_text(), flags=re.S) if "md5(" in block]
    return sql


def test_the_documented_sql_computes_the_pipelines_control_figures(world):
    day = date(2026, 3, 14)
    keys = [order["order_id"] for order in world.orders_on(day)]
    # Hashes of both signs as a signed 64-bit integer, so the SQL's step back to unsigned is exercised.
    assert {hashlib.md5(key_text(key).encode()).digest()[0] >= 0x80 for key in keys} == {True, False}
    rows = ",".join(f"({key}, '{day.isoformat()} 12:00:00')" for key in keys)
    with throwaway_cluster() as cluster:
        cluster.psql(f"create table orders (order_id bigint, ordered_at timestamp); insert into orders values {rows};")
        count, checksum = cluster.psql(documented_sql().replace(":day", f"'{day.isoformat()}'")).split("|")
    assert int(count) == len(keys)
    assert int(checksum) == key_checksum({key_text(key) for key in keys})
