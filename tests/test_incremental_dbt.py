"""Incremental dbt builds equal a full refresh, late changes included (real dbt, DuckDB, demo source, Dagster).

Three days arrive one at a time; after each, the dbt assets are materialized for that day's partition, so
every build after the first is incremental. Before the last day arrives, older raw partitions are rewritten
the way a run commits them (a new data file and manifest through the lake's partition writer), as change
capture does when records change weeks later: an order of the first day is refunded and another one goes
away (quarantined when re-extracted), a customer's version of the second day goes away while an older
version of them appears on the first day, and another customer's only version goes away. The last day's
build must take in exactly the days that changed, and then every model must hold what one full refresh over
the same raw layer builds: marts and the SCD2 history row for row, staging and intermediate tables too (but
for the zero rows and tombstones that record, in an incremental build, where a key's data went away).
"""

from __future__ import annotations

from collections import Counter
from datetime import date, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest
from dagster._core.events import DagsterEventType

from demo_source import DemoShopServer, ShopWorld, write_landing_files
from pipeline_project.ingest.api_assets import load_api_partition
from pipeline_project.ingest.assets import API_TABLES, LANDING_TABLES
from pipeline_project.ingest.extraction import ExtractStats
from pipeline_project.ingest.landing_assets import load_landing_partition
from pipeline_project.ingest.landing_zone import DEFAULT_MAX_FILE_BYTES
from pipeline_project.ingest.sources import ShopApiClient
from pipeline_project.lake.partition_writer import LINEAGE_SCHEMA
from pipeline_project.lake.raw_store import Lake
from pipeline_project.quality.contracts import RAW_CONTRACTS
from pipeline_project.resources import LakeResource, WarehouseResource, dbt_resource
from pipeline_project.transform.dbt_assets import FULL_REFRESH_TAG, shop_dbt_assets
from pipeline_project.transform.dbt_days import read_watermark
from pipeline_project.transform.project import dbt_project

from harness import TEST_SCALE, TOKEN

pytestmark = pytest.mark.slow

DAYS = [date(2026, 3, 14), date(2026, 3, 15), date(2026, 3, 16)]
FIRST, SECOND, LAST = DAYS
SCHEMAS = ("staging", "intermediate", "marts", "snapshots")
# Rows an incremental build keeps and a full refresh does not have: a zero row where a key's activity on a
# rebuilt day went away, a tombstone (updated_at null) where a version went away.
KEPT_ROWS = {
    "intermediate.int_customer_order_days": lambda row: row[2:] == (0, 0, None, None),
    "intermediate.int_product_days": lambda row: row[2:] == (0, 0, 0, 0, 0),
    "staging.stg_customer_versions": lambda row: row[8] is None,
    "staging.stg_product_versions": lambda row: row[8] is None,
}


def ingest(lake: Lake, landing: Path, client: ShopApiClient, world: ShopWorld, day: date) -> None:
    """Every raw table of `day`, committed by the ingestion functions the assets run."""
    write_landing_files(landing, day, world)
    for table in API_TABLES:
        load_api_partition(lake, client, RAW_CONTRACTS[table], day, f"ingest-{day}")
    for table in LANDING_TABLES:
        load_landing_partition(lake, landing, RAW_CONTRACTS[table], day, f"ingest-{day}", DEFAULT_MAX_FILE_BYTES)


def recommit(lake: Lake, table: str, day: date, change, run_id: str) -> None:
    """Rewrite raw partition (`table`, `day`) with `change(frame)` applied, committed like a run commits it."""
    contract = RAW_CONTRACTS[table]
    frame = change(pl.read_parquet(lake.data_path(table, day)).drop(list(LINEAGE_SCHEMA)))
    with lake.writer(contract, day, run_id) as writer:
        writer.append(frame, pl.DataFrame())
        stats = ExtractStats(source_reported_count=frame.height, fetched_count=frame.height)
        manifest, _ = writer.stage(stats, {"extract": 0.0, "validate": 0.0}, {})
        writer.commit(manifest)


def build(instance, lake: Path, warehouse: Path, day: date, full_refresh: bool = False) -> dg.ExecuteInProcessResult:
    result = dg.materialize(
        [shop_dbt_assets],
        instance=instance,
        partition_key=day.isoformat(),
        tags={FULL_REFRESH_TAG: "true"} if full_refresh else None,
        resources={
            "dbt": dbt_resource(dbt_project),
            "lake": LakeResource(root=str(lake)),
            "warehouse": WarehouseResource(path=str(warehouse)),
        },
        raise_on_error=False,
    )
    assert result.success, [e.message for e in result.all_events if e.event_type == DagsterEventType.STEP_FAILURE]
    return result


def build_message(instance, result: dg.ExecuteInProcessResult) -> str:
    [message] = [
        record.user_message
        for record in instance.all_logs(result.run_id)
        if record.user_message.startswith("dbt build")
    ]
    return message


def tables(connection) -> list[str]:
    return [
        f"{schema}.{name}"
        for schema, name in connection.execute(
            "select table_schema, table_name from information_schema.tables "
            f"where table_schema in {SCHEMAS} order by all"
        ).fetchall()
    ]


def rows(connection, table: str) -> list[tuple]:
    return connection.execute(f"select * from {table} order by all").fetchall()


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    root = tmp_path_factory.mktemp("incremental")
    lake_dir, landing, warehouse = root / "lake", root / "landing", root / "warehouse.duckdb"
    lake_dir.mkdir()
    landing.mkdir()
    lake = Lake(lake_dir)
    world = ShopWorld(scale=TEST_SCALE)
    messages, revenue_before = {}, None
    with (
        dg.instance_for_test() as instance,
        DemoShopServer(world, token=TOKEN) as server,
        ShopApiClient(server.url, TOKEN) as client,
    ):
        for day in DAYS:
            if day == LAST:
                with duckdb.connect(str(warehouse), read_only=True) as connection:
                    revenue_before = connection.execute(
                        "select * from marts.daily_revenue where order_date = ?", [FIRST]
                    ).fetchone()
                changes = make_late_changes(lake, run_id="change-capture")
            ingest(lake, landing, client, world, day)
            messages[day] = build_message(instance, build(instance, lake_dir, warehouse, day))
        full = root / "full.duckdb"
        build(instance, lake_dir, full, LAST, full_refresh=True)
    return {
        "incremental": warehouse,
        "full": full,
        "messages": messages,
        "changes": changes,
        "revenue_before": revenue_before,
        "lake": lake_dir,
    }


def make_late_changes(lake: Lake, run_id: str) -> dict:
    """Late changes to the first two days, committed before the last day's run."""
    orders = pl.read_parquet(lake.data_path("orders", FIRST))
    paid = orders.filter(pl.col("order_status") == "delivered").sort("order_id")
    refunded_id, removed_id = paid["order_id"][0], paid["order_id"][1]
    removed_customer = paid["customer_id"][1]
    refunded_at = datetime.combine(LAST, datetime.min.time())

    def refund_and_remove(frame: pl.DataFrame) -> pl.DataFrame:
        frame = frame.filter(pl.col("order_id") != removed_id)
        refunded = pl.col("order_id") == refunded_id
        return frame.with_columns(
            pl.when(refunded).then(pl.lit("refunded")).otherwise(pl.col("order_status")).alias("order_status"),
            pl.when(refunded).then(pl.lit(refunded_at)).otherwise(pl.col("updated_at")).alias("updated_at"),
        )

    recommit(lake, "orders", FIRST, refund_and_remove, run_id)

    # A customer whose only version is on the second day: that version goes away and an older one (other
    # loyalty tier) appears on the first day, so the latest version moves to an older, rebuilt partition.
    first = pl.read_parquet(lake.data_path("customers", FIRST))
    second = pl.read_parquet(lake.data_path("customers", SECOND))
    moved = second.filter(~pl.col("customer_id").is_in(first["customer_id"].implode())).sort("customer_id").head(1)
    moved_id = moved["customer_id"][0]
    older = moved.drop(list(LINEAGE_SCHEMA)).with_columns(
        pl.lit(datetime.combine(FIRST, datetime.min.time()) + timedelta(hours=23)).alias("updated_at"),
        pl.when(pl.col("loyalty_tier") == "gold")
        .then(pl.lit("silver"))
        .otherwise(pl.lit("gold"))
        .alias("loyalty_tier"),
    )
    # Another customer whose only version is on the second day: that version goes away for good, so the
    # customer leaves the customer marts and the history too (their orders stay, as a source may send them).
    gone_id = second.filter(~pl.col("customer_id").is_in([*first["customer_id"], moved_id, removed_customer])).sort(
        "customer_id"
    )["customer_id"][0]
    recommit(
        lake, "customers", SECOND, lambda frame: frame.filter(~pl.col("customer_id").is_in([moved_id, gone_id])), run_id
    )
    recommit(lake, "customers", FIRST, lambda frame: pl.concat([frame, older], how="vertical_relaxed"), run_id)
    return {
        "refunded": refunded_id,
        "removed": removed_id,
        "removed_customer": removed_customer,
        "moved_customer": moved_id,
        "gone_customer": gone_id,
    }


def test_each_build_takes_in_its_day_and_the_days_that_changed(builds):
    messages = builds["messages"]
    assert messages[FIRST].startswith("dbt build: full refresh (the warehouse has no watermark yet)")
    for day in DAYS[1:-1]:
        assert messages[day].startswith(f"dbt build of 1 day(s) (1 in the window, 1 day(s) changed in the lake): {day}")
    assert messages[LAST] == (
        f"dbt build of 3 day(s) (1 in the window, 3 day(s) changed in the lake): {FIRST}, {SECOND}, {LAST}"
    )
    with duckdb.connect(str(builds["incremental"]), read_only=True) as connection:
        assert read_watermark(WarehouseResource(path=str(builds["incremental"]))) is not None
        assert connection.execute("select count(*) from marts.daily_revenue").fetchone() == (len(DAYS),)


def test_late_changes_reach_the_marts(builds):
    changes = builds["changes"]
    with duckdb.connect(str(builds["incremental"]), read_only=True) as connection:
        after = connection.execute("select * from marts.daily_revenue where order_date = ?", [FIRST]).fetchone()
        orders = {
            order_id: status
            for order_id, status in connection.execute(
                "select order_id, order_status from intermediate.int_order_totals where order_id in (?, ?)",
                [changes["refunded"], changes["removed"]],
            ).fetchall()
        }
        tiers = connection.execute(
            "select loyalty_tier, _partition_date, dbt_valid_to is null from snapshots.customers_snapshot "
            "where customer_id = ?",
            [changes["moved_customer"]],
        ).fetchall()
        lifetime_tier = connection.execute(
            "select loyalty_tier from marts.customer_lifetime_value where customer_id = ?", [changes["moved_customer"]]
        ).fetchone()
    before = builds["revenue_before"]
    assert after[1] == before[1] - 1, "orders_count of the first day drops by the removed order"
    assert after[5] > before[5], "refunded_revenue of the first day grows by the refunded order"
    assert orders == {changes["refunded"]: "refunded"}
    assert len(tiers) == 1 and tiers[0][1] == FIRST and tiers[0][2], "only the first day's version is left"
    assert lifetime_tier == (tiers[0][0],)


def test_incremental_builds_equal_a_full_refresh_row_for_row(builds):
    with (
        duckdb.connect(str(builds["incremental"]), read_only=True) as incremental,
        duckdb.connect(str(builds["full"]), read_only=True) as full,
    ):
        assert tables(incremental) == tables(full)
        assert {"marts.customer_lifetime_value", "snapshots.customers_snapshot"} <= set(tables(full))
        kept = {}
        for table in tables(full):
            expected, built = rows(full, table), rows(incremental, table)
            assert expected, f"{table} is empty"
            if table in KEPT_ROWS:
                kept[table] = Counter(built) - Counter(expected)
                assert not Counter(expected) - Counter(built), f"{table} lacks rows of a full refresh"
                assert all(KEPT_ROWS[table](row) for row in kept[table]), f"{table} has rows a full refresh has not"
            else:
                assert built == expected, f"{table} differs from a full refresh"
        (customer,) = incremental.execute(
            "select customer_id from staging.stg_orders where order_id = ?", [builds["changes"]["removed"]]
        ).fetchone() or (None,)
    # The removed order is gone from staging; its customer's first day keeps a zero row unless they have
    # other orders that day.
    assert customer is None
    zero_days = {(row[0], row[1]) for row in kept["intermediate.int_customer_order_days"]}
    assert zero_days <= {(FIRST, builds["changes"]["removed_customer"])}
    tombstones = {(row[0], row[9]) for row in kept["staging.stg_customer_versions"]}
    assert tombstones == {(builds["changes"]["moved_customer"], SECOND), (builds["changes"]["gone_customer"], SECOND)}


def test_a_customer_whose_every_version_went_away_leaves_the_marts_and_the_history(builds):
    gone = builds["changes"]["gone_customer"]
    with duckdb.connect(str(builds["incremental"]), read_only=True) as connection:
        for table in ("staging.stg_customers", "marts.customer_lifetime_value", "snapshots.customers_snapshot"):
            assert connection.execute(f"select count(*) from {table} where customer_id = ?", [gone]).fetchone() == (
                0,
            ), f"customer {gone} is still in {table}"
