"""Which days a dbt build takes in: the window plus the raw partitions committed since the warehouse's
watermark (any table, any run), found from manifest signatures only; a full refresh when there is no
watermark or the dbt project changed. Real lake commits, a real DuckDB warehouse, no dbt."""

from __future__ import annotations

from datetime import date, datetime, time

import polars as pl
import pytest

from pipeline_project.ingest.extraction import ExtractStats
from pipeline_project.lake.raw_store import Lake
from pipeline_project.quality.contracts import RAW_CONTRACTS
from pipeline_project.resources import WarehouseResource
from pipeline_project.transform import dbt_days

D1, D2, D3 = date(2026, 3, 14), date(2026, 3, 15), date(2026, 3, 16)
ORDERS = RAW_CONTRACTS["orders"]


def commit(lake: Lake, day: date, run_id: str, rows: int = 2) -> None:
    """A partition of raw orders committed the way a run commits it."""
    at = datetime.combine(day, time(10))
    frame = pl.DataFrame(
        {
            "order_id": list(range(1, rows + 1)),
            "customer_id": [1] * rows,
            "order_status": ["paid"] * rows,
            "channel": ["web"] * rows,
            "currency": ["USD"] * rows,
            "ordered_at": [at] * rows,
            "updated_at": [at] * rows,
        }
    )
    with lake.writer(ORDERS, day, run_id) as writer:
        writer.append(frame, pl.DataFrame())
        manifest, _ = writer.stage(ExtractStats(source_reported_count=rows, fetched_count=rows), {}, {})
        writer.commit(manifest)


@pytest.fixture
def lake(tmp_path) -> Lake:
    return Lake(tmp_path / "lake")


def plan(lake: Lake, warehouse, window, digest="v1", full=False) -> dbt_days.BuildPlan:
    return dbt_days.plan_build(
        window=window,
        lake=lake,
        warehouse=warehouse,
        digest=digest,
        full_refresh_requested=full,
    )


def test_changed_days_are_the_partitions_committed_pending_or_removed_since_the_listing(lake):
    commit(lake, D1, "run-1")
    commit(lake, D2, "run-1")
    listed = lake.partition_signatures()
    assert set(listed) == {("orders", D1), ("orders", D2)}
    assert dbt_days.changed_days(listed, lake.partition_signatures()) == set()

    commit(lake, D1, "run-2")  # a late change re-commits an older day
    commit(lake, D3, "run-2")  # a new day
    assert dbt_days.changed_days(listed, lake.partition_signatures()) == {D1, D3}

    lake.pending_manifest_path("orders", D2).write_text("{}")  # a commit under way
    assert dbt_days.changed_days(listed, lake.partition_signatures()) == {D1, D2, D3}
    lake.pending_manifest_path("orders", D2).unlink()

    lake.manifest_path("orders", D2).unlink()  # a partition removed by hand
    assert dbt_days.changed_days(listed, lake.partition_signatures()) == {D1, D2, D3}


def test_a_build_takes_in_its_window_and_what_changed_since_the_watermark_of_its_warehouse(lake, tmp_path):
    warehouse = WarehouseResource(path=str(tmp_path / "warehouse.duckdb"), lock_wait_seconds=5)
    commit(lake, D1, "run-1")
    first = plan(lake, warehouse, [D1])
    assert (first.full_refresh, first.reason) == (True, "the warehouse has no watermark yet")
    dbt_days.write_watermark(warehouse, dbt_days.Watermark(first.lake, "v1"))
    assert dbt_days.read_watermark(warehouse) == dbt_days.Watermark(first.lake, "v1")

    assert plan(lake, warehouse, [D2]).days == (D2,)
    commit(lake, D2, "run-2")
    commit(lake, D1, "run-2")
    second = plan(lake, warehouse, [D2])
    assert (second.full_refresh, second.days) == (False, (D1, D2))
    assert second.env_value() == f"{D1},{D2}"
    # Until a build records a new watermark, the same days stay to be taken in (a failed build loses none).
    assert plan(lake, warehouse, [D3]).days == (D1, D2, D3)
    dbt_days.write_watermark(warehouse, dbt_days.Watermark(second.lake, "v1"))
    assert plan(lake, warehouse, [D3]).days == (D3,)

    assert plan(lake, warehouse, [D3], digest="v2").full_refresh
    assert plan(lake, warehouse, [D3], full=True).reason == "full refresh requested"


def test_the_project_digest_changes_with_a_model_and_with_a_macro(tmp_path):
    import json

    manifest = {
        "metadata": {"project_name": "shop"},
        "nodes": {
            "model.shop.a": {"resource_type": "model", "checksum": {"checksum": "1"}, "config": {"x": 1}},
            "test.shop.t": {"resource_type": "test", "checksum": {"checksum": "9"}, "config": {}},
        },
        "macros": {
            "macro.shop.m": {"package_name": "shop", "macro_sql": "select 1"},
            "macro.dbt.n": {"package_name": "dbt", "macro_sql": "select 2"},
        },
    }

    def digest(**changes) -> str:
        path = tmp_path / f"manifest-{len(list(tmp_path.iterdir()))}.json"
        edited = json.loads(json.dumps(manifest))
        for dotted, value in changes.items():
            *parents, leaf = dotted.split("/")
            target = edited
            for key in parents:
                target = target[key]
            target[leaf] = value
        path.write_text(json.dumps(edited))
        return dbt_days.project_digest(path)

    base = digest()
    assert digest() == base
    assert digest(**{"nodes/test.shop.t/checksum": {"checksum": "8"}}) == base  # tests do not shape the tables
    assert digest(**{"macros/macro.dbt.n/macro_sql": "select 3"}) == base  # nor dbt's own macros
    assert digest(**{"nodes/model.shop.a/checksum": {"checksum": "2"}}) != base
    assert digest(**{"nodes/model.shop.a/config": {"x": 2}}) != base
    assert digest(**{"macros/macro.shop.m/macro_sql": "select 4"}) != base
