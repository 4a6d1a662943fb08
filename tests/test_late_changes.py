"""Ground truth over time: the demo shop's orders keep changing for weeks after their day (shipped, delivered,
refunded up to 30 days later), and the marts must follow.

Sixty days are loaded the way a deployment does, by the scheduled run every three days with a three-day
lookback, each against the source as its clock stands at 02:15 of that day (real Dagster runs, the real demo
API on 127.0.0.1, real dbt). After the last run, the marts equal the generator's truth as of the last run
for every one of the sixty days, including days whose own window was loaded weeks earlier: change capture
rewrote exactly the partitions whose records changed. A source that keeps only the current state of its
dimensions loses no customer or product from staging on any run."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import dagster as dg
import duckdb
import pytest
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from demo_source import DemoShopServer, Faults, ShopWorld, write_landing_files
from pipeline_project.definitions import defs
from pipeline_project.ingest.api_assets import api_read
from pipeline_project.ingest.asset_checks import raw_asset_key
from pipeline_project.ingest.assets import ingestion_assets
from pipeline_project.ingest.listing_filters import day_filter
from pipeline_project.ingest.loading import load_partition
from pipeline_project.ingest.sources import ShopApiClient
from pipeline_project.lake.raw_store import Lake
from pipeline_project.quality.contracts import API_TABLES, RAW_CONTRACTS
from pipeline_project.resources import ShopApiResource
from pipeline_project.transform.dbt_assets import shop_dbt_assets

from harness import TOKEN

pytestmark = pytest.mark.slow

FIRST_DAY = date(2026, 3, 1)
DAYS = 60
LOOKBACK = 3
SCALE = 0.02
REVENUE = (
    "select order_date, orders_count, billable_orders_count, items_sold, cast(gross_revenue * 100 as bigint), "
    "cast(refunded_revenue * 100 as bigint), cast(net_revenue * 100 as bigint), customers_count "
    "from marts.daily_revenue order by order_date"
)
TRUTH = (
    "orders_count",
    "billable_orders_count",
    "items_sold",
    "gross_revenue_cents",
    "refunded_revenue_cents",
    "net_revenue_cents",
    "customers_count",
)


def scheduled_run(instance, server, at: datetime, selection=None) -> dg.ExecuteInProcessResult:
    """The run the daily schedule starts at `at` (the last LOOKBACK days), against the source as of `at`."""
    server.set_faults(Faults(as_of=at.isoformat()))
    first, last = at.date() - timedelta(days=LOOKBACK), at.date() - timedelta(days=1)
    return defs.resolve_job_def("shop_pipeline").execute_in_process(
        instance=instance,
        asset_selection=selection,
        raise_on_error=False,
        tags={ASSET_PARTITION_RANGE_START_TAG: first.isoformat(), ASSET_PARTITION_RANGE_END_TAG: last.isoformat()},
    )


def at_0215(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, 2, 15, tzinfo=UTC)


@pytest.fixture(scope="module")
def sixty_days(tmp_path_factory):
    state = tmp_path_factory.mktemp("late-changes")
    world = ShopWorld(scale=SCALE)
    run_days = [FIRST_DAY + timedelta(days=LOOKBACK * (n + 1)) for n in range(DAYS // LOOKBACK)]
    with (
        pytest.MonkeyPatch.context() as env,
        dg.instance_for_test() as instance,
        DemoShopServer(world, token=TOKEN) as server,
    ):
        env.setenv("PIPELINE_LAKE_DIR", str(state / "lake"))
        env.setenv("PIPELINE_WAREHOUSE_PATH", str(state / "warehouse.duckdb"))
        env.setenv("LANDING_DIR", str(state / "landing"))
        env.setenv("SHOP_API_URL", server.url)
        env.setenv("SHOP_API_TOKEN", TOKEN)
        ingestion = [raw_asset_key(table) for table in API_TABLES]
        runs = [scheduled_run(instance, server, at_0215(day), ingestion) for day in run_days[:-1]]
        last_window = [run_days[-1] - timedelta(days=n) for n in range(1, LOOKBACK + 1)]
        for day in last_window:
            write_landing_files(state / "landing", day, world)
        runs.append(scheduled_run(instance, server, at_0215(run_days[-1])))
        yield {"state": state, "world": world, "runs": runs, "run_days": run_days}


def test_every_run_succeeds(sixty_days):
    failures = [
        (run.run_id, [event.message for event in run.all_events if event.is_step_failure])
        for run in sixty_days["runs"]
        if not run.success
    ]
    assert not failures


def test_the_marts_equal_the_truth_as_of_the_last_run_for_every_day(sixty_days):
    world: ShopWorld = sixty_days["world"]
    last_run = at_0215(sixty_days["run_days"][-1]).replace(tzinfo=None)
    with duckdb.connect(str(sixty_days["state"] / "warehouse.duckdb"), read_only=True) as connection:
        marts = {row[0]: row[1:] for row in connection.execute(REVENUE).fetchall()}
    days = [FIRST_DAY + timedelta(days=n) for n in range(DAYS)]
    assert sorted(marts) == days
    wrong = {
        day: (marts[day], truth)
        for day in days
        if marts[day] != (truth := tuple(world.ground_truth(day, as_of=last_run)[name] for name in TRUTH))
    }
    assert not wrong


def test_late_changes_did_change_days_loaded_weeks_earlier(sixty_days):
    """The marts above are right because older partitions were rewritten, not because nothing changed."""
    world: ShopWorld = sixty_days["world"]
    run_days = sixty_days["run_days"]
    last_run = at_0215(run_days[-1]).replace(tzinfo=None)
    refunds_after_the_lookback = 0
    for day in (FIRST_DAY + timedelta(days=n) for n in range(DAYS - 30)):
        own_run = at_0215(next(run for run in run_days if run > day)).replace(tzinfo=None)
        then, now = world.ground_truth(day, as_of=own_run), world.ground_truth(day, as_of=last_run)
        if now["refunded_revenue_cents"] > then["refunded_revenue_cents"]:
            refunds_after_the_lookback += 1
    assert refunds_after_the_lookback >= 10, "the world must refund orders weeks after their day"

    lake = Lake(sixty_days["state"] / "lake")
    last_run_id = sixty_days["runs"][-1].run_id
    rewritten = [
        day
        for day in (FIRST_DAY + timedelta(days=n) for n in range(DAYS - LOOKBACK))
        if (manifest := lake.read_manifest("orders", day)).run_id == last_run_id
    ]
    assert rewritten, "the last run rewrote older partitions whose orders changed"
    for day in rewritten:
        manifest = lake.read_manifest("orders", day)
        assert manifest.changes_merged > 0 and manifest.reconciled
    materialized = {event.partition for event in sixty_days["runs"][-1].asset_materializations_for_node("raw_orders")}
    assert {day.isoformat() for day in rewritten} <= materialized, "each rewritten partition is reported"


def test_a_source_that_keeps_only_current_dimensions_loses_no_record_from_staging(tmp_path, monkeypatch, instance):
    world = ShopWorld(scale=SCALE)
    monkeypatch.setenv("PIPELINE_LAKE_DIR", str(tmp_path / "lake"))
    monkeypatch.setenv("PIPELINE_WAREHOUSE_PATH", str(tmp_path / "warehouse.duckdb"))
    monkeypatch.setenv("LANDING_DIR", str(tmp_path / "landing"))
    dimensions = [raw_asset_key("customers"), raw_asset_key("products")]
    staging = [
        dg.AssetKey(name) for name in ("stg_customer_versions", "stg_customers", "stg_product_versions", "stg_products")
    ]
    staged: list[tuple[set[int], set[int]]] = []
    with DemoShopServer(world, token=TOKEN, dimensions="current_state") as server:
        # The resources of the code location, with the policy SHOP_API_DIMENSIONS=current_state selects.
        resources = {
            **defs.resources,
            "shop_api": ShopApiResource(base_url=server.url, token=TOKEN, dimensions="current_state"),
        }
        assets = [*ingestion_assets, shop_dbt_assets]
        for n in range(6):
            at = at_0215(FIRST_DAY + timedelta(days=LOOKBACK + n))
            server.set_faults(Faults(as_of=at.isoformat()))
            window = [(at.date() - timedelta(days=days)).isoformat() for days in (LOOKBACK, 1)]
            run = dg.materialize(
                assets,
                selection=dimensions + staging,
                instance=instance,
                resources=resources,
                tags={ASSET_PARTITION_RANGE_START_TAG: window[0], ASSET_PARTITION_RANGE_END_TAG: window[1]},
            )
            assert run.success
            staged.append(_staging_keys(tmp_path / "warehouse.duckdb"))
    for before, after in zip(staged, staged[1:], strict=False):
        assert before[0] <= after[0], "a customer disappeared from staging"
        assert before[1] <= after[1], "a product disappeared from staging"
    assert len(staged[-1][1]) == 500


def _staging_keys(warehouse) -> tuple[set[int], set[int]]:
    """The keys the staging tables hold after the run's build."""
    with duckdb.connect(str(warehouse), read_only=True) as connection:
        customers = {key for (key,) in connection.execute("select customer_id from staging.stg_customers").fetchall()}
        products = {key for (key,) in connection.execute("select product_id from staging.stg_products").fetchall()}
    return customers, products


def test_a_current_state_record_updated_while_the_listing_is_read_does_not_fail_the_day(tmp_path):
    """Customers keep signing up and ordering while a day is read: the first read races them (its control
    figures before and after differ) and is read again, which then reconciles; the day commits."""
    world = ShopWorld(scale=0.2)
    day = FIRST_DAY
    first, later = at_0215(day + timedelta(days=1)), at_0215(day + timedelta(days=1)) + timedelta(hours=6)
    contract = RAW_CONTRACTS["customers"]
    reads = []
    with DemoShopServer(world, token=TOKEN, dimensions="current_state") as server:
        server.set_faults(Faults(as_of=first.isoformat()))
        with ShopApiClient(server.url, TOKEN, page_size=20, dimensions="current_state") as client:
            read = api_read(client, contract, day_filter("customers", day, "current_state"))
            listing = read.batches

            def the_clock_moves_during_the_first_read(stats):
                reads.append(stats)
                for batch in listing(stats):
                    if len(reads) == 1:
                        server.set_faults(Faults(as_of=later.isoformat()))
                    yield batch

            read.batches = the_clock_moves_during_the_first_read
            result = load_partition(Lake(tmp_path / "lake"), contract, day, "run-race", read)
    assert len(reads) == 2 and result.committed and result.manifest.attempts == 2
    clock = later.replace(tzinfo=None)
    current = world.current_versions_between("customers", datetime(2026, 3, 1), clock + timedelta(seconds=1), clock)
    assert result.manifest.accounted["count"] == len(current) > 0
