"""End to end on real components: demo API on 127.0.0.1, Parquet lake and DuckDB in tmp, real dbt, a real
Dagster instance. Two days are materialized twice; the marts must equal the generator's ground truth and
the rerun must leave every table's content unchanged."""

import shutil
from datetime import date
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from demo_source import DemoShopServer, ShopWorld, write_landing_files
from pipeline_project.definitions import defs
from pipeline_project.ingest.asset_checks import raw_asset_key
from pipeline_project.ingest.assets import API_TABLES, LANDING_TABLES
from pipeline_project.lake.raw_store import Lake
from pipeline_project.quality.contracts import MART_CONTRACTS, RAW_CONTRACTS
from pipeline_project.quality.mart_checks import build_mart_contract_check
from pipeline_project.resources import WarehouseResource

from harness import DAYS, TEST_SCALE, TOKEN, assert_marts_equal_ground_truth

pytestmark = pytest.mark.slow

RAW_TABLES = [*API_TABLES, *LANDING_TABLES]
MART_TABLES = ["daily_revenue", "customer_lifetime_value", "product_performance", "web_funnel"]


def run_days(instance: dg.DagsterInstance, days: list[date], selection=None) -> dg.ExecuteInProcessResult:
    job = defs.resolve_job_def("shop_pipeline")
    return job.execute_in_process(
        instance=instance,
        raise_on_error=False,
        asset_selection=selection,
        tags={
            ASSET_PARTITION_RANGE_START_TAG: min(days).isoformat(),
            ASSET_PARTITION_RANGE_END_TAG: max(days).isoformat(),
        },
    )


def content_fingerprints(lake_dir: Path, warehouse: Path) -> dict[str, tuple[int, str]]:
    """Row count and an order-independent digest of every raw table and mart, lineage columns excluded."""
    digest = "select count(*), md5(coalesce(string_agg(r::varchar, '|' order by r::varchar), '')) from ({}) r"
    prints = {}
    with duckdb.connect(str(warehouse), read_only=True) as connection:
        for table in RAW_TABLES:
            source = f"select * exclude (_batch_id, _loaded_at) from read_parquet('{lake_dir}/raw/{table}/*/*.parquet')"
            prints[f"raw/{table}"] = connection.execute(digest.format(source)).fetchone()
        for mart in MART_TABLES:
            prints[f"marts/{mart}"] = connection.execute(digest.format(f"select * from marts.{mart}")).fetchone()
        prints["snapshot_rows"] = connection.execute("select count(*) from snapshots.customers_snapshot").fetchone()
    return prints


@pytest.fixture(scope="module")
def pipeline_runs(tmp_path_factory):
    """Materialize DAYS twice against one state directory; keep what both runs left behind."""
    state = tmp_path_factory.mktemp("state")
    world = ShopWorld(scale=TEST_SCALE)
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
        for day in DAYS:
            write_landing_files(state / "landing", day, world)
        first = run_days(instance, DAYS)
        first_prints = content_fingerprints(state / "lake", state / "warehouse.duckdb")
        second = run_days(instance, DAYS)
        second_prints = content_fingerprints(state / "lake", state / "warehouse.duckdb")
        yield {
            "state": state,
            "world": world,
            "runs": [first, second],
            "prints": [first_prints, second_prints],
            "requests": server.request_count,
        }


def test_every_step_and_every_check_passes(pipeline_runs):
    for result in pipeline_runs["runs"]:
        assert result.success
        evaluations = result.get_asset_check_evaluations()
        failed = [f"{e.asset_key.to_user_string()}:{e.check_name}" for e in evaluations if not e.passed]
        assert not failed
        checked = {e.asset_key.to_user_string() for e in evaluations}
        assert {f"raw_{table}" for table in RAW_TABLES} <= checked
        assert {"daily_revenue", "customer_lifetime_value", "stg_orders"} <= checked
        assert len(evaluations) >= 60


def test_every_partition_is_materialized_with_counts(pipeline_runs):
    result = pipeline_runs["runs"][0]
    world: ShopWorld = pipeline_runs["world"]
    for table in RAW_TABLES:
        events = result.asset_materializations_for_node(f"raw_{table}")
        by_partition = {event.partition: event.metadata for event in events}
        assert set(by_partition) == {day.isoformat() for day in DAYS}
        for day in DAYS:
            metadata = by_partition[day.isoformat()]
            expected = world.record_counts(day)[table]
            assert metadata["dagster/row_count"].value == expected
            assert metadata["fetched_count"].value == expected
            assert metadata["control_figures"].value["count"] == expected
            assert metadata["accounted_keys"].value["count"] == expected
            assert metadata["reconciled"].value and metadata["committed"].value
            assert metadata["quarantined_count"].value == 0
            assert sum(metadata["copies_dropped"].value.values()) == 0


def test_marts_equal_the_generators_ground_truth(pipeline_runs):
    world: ShopWorld = pipeline_runs["world"]
    warehouse = pipeline_runs["state"] / "warehouse.duckdb"
    with duckdb.connect(str(warehouse), read_only=True) as connection:
        assert_marts_equal_ground_truth(connection, world, DAYS)
    net_total = sum(world.ground_truth(day)["net_revenue_cents"] for day in DAYS)
    refunded_total = sum(world.ground_truth(day)["refunded_revenue_cents"] for day in DAYS)
    gross_total = sum(world.ground_truth(day)["gross_revenue_cents"] for day in DAYS)
    # Lifetime value and product revenue count net-status orders only: gross minus refunded orders.
    assert gross_total - refunded_total == net_total


def test_rerunning_the_same_days_leaves_every_table_identical(pipeline_runs):
    first, second = pipeline_runs["prints"]
    assert first == second
    assert all(rows > 0 for rows, _ in (first[f"raw/{t}"] for t in RAW_TABLES))


def test_ledger_reconciles_every_partition(pipeline_runs):
    lake = Lake(pipeline_runs["state"] / "lake")
    run_id = pipeline_runs["runs"][1].run_id
    for table in RAW_TABLES:
        for day in DAYS:
            manifest = lake.read_manifest(table, day)
            assert manifest.run_id == run_id
            assert manifest.reconciled and not lake.verify(manifest)


def test_bad_records_are_quarantined_with_the_rule_they_broke(state_dir, instance, monkeypatch):
    world = ShopWorld(scale=TEST_SCALE, bad_record_rate=0.03)
    day = DAYS[0]
    write_landing_files(state_dir / "landing", day, world)
    with DemoShopServer(world, token=TOKEN) as server:
        monkeypatch.setenv("SHOP_API_URL", server.url)
        monkeypatch.setenv("SHOP_API_TOKEN", TOKEN)
        result = run_days(instance, [day], selection=[raw_asset_key(t) for t in RAW_TABLES])
    assert result.success
    lake = Lake(state_dir / "lake")
    for table in RAW_TABLES:
        manifest = lake.read_manifest(table, day)
        bad = world.bad_records(table, day)
        assert bad, f"the generator injected no bad {table}"
        assert manifest.control["count"] == world.record_counts(day)[table]
        assert manifest.copies == 0
        assert manifest.control["count"] == manifest.loaded_count + manifest.quarantined_count
        assert manifest.quarantined_count == len(bad)
        key = RAW_CONTRACTS[table].primary_key
        with duckdb.connect() as connection:
            quarantined = dict(
                connection.execute(
                    f"select {key}, _quarantine_reason from read_parquet(?)",
                    [str(lake.quarantine_path(table, day))],
                ).fetchall()
            )
            loaded_bad = connection.execute(
                f"select count(*) from read_parquet(?) where {key} in (select unnest(?))",
                [str(lake.data_path(table, day)), list(bad)],
            ).fetchone()[0]
        assert set(quarantined) == set(bad)
        assert loaded_bad == 0
        for pk, column in bad.items():
            assert quarantined[pk].startswith(f"{column}:"), (table, pk, quarantined[pk])
    evaluations = result.get_asset_check_evaluations()
    assert evaluations and all(e.passed for e in evaluations)


def test_mart_contract_blocks_on_error_rules_and_only_warns_on_warn_rules(pipeline_runs, tmp_path):
    broken = tmp_path / "warehouse.duckdb"
    shutil.copy(pipeline_runs["state"] / "warehouse.duckdb", broken)
    with duckdb.connect(str(broken)) as connection:
        connection.execute(
            "update marts.daily_revenue set net_revenue = -5, average_order_value = 20000 where order_date = ?",
            [DAYS[0]],
        )
    check = build_mart_contract_check(MART_CONTRACTS["daily_revenue"])
    results = {r.check_name: r for r in check(warehouse=WarehouseResource(path=str(broken)))}
    errors, warnings = results["contract_errors"], results["contract_warnings"]
    assert not errors.passed and errors.severity == dg.AssetCheckSeverity.ERROR
    assert errors.metadata["fail/net_revenue:greater_than_or_equal_to"].value == 1
    assert errors.metadata["fail/table:net_is_gross_minus_refunds"].value == 1
    assert not warnings.passed and warnings.severity == dg.AssetCheckSeverity.WARN
    assert warnings.metadata["fail/average_order_value:less_than_or_equal_to"].value == 1

    clean = {
        r.check_name: r
        for r in check(warehouse=WarehouseResource(path=str(pipeline_runs["state"] / "warehouse.duckdb")))
    }
    assert clean["contract_errors"].passed and clean["contract_warnings"].passed


def test_samples_of_failing_rows_mask_personal_data(pipeline_runs, tmp_path):
    broken = tmp_path / "warehouse.duckdb"
    shutil.copy(pipeline_runs["state"] / "warehouse.duckdb", broken)
    with duckdb.connect(str(broken)) as connection:
        (customer,) = connection.execute("select min(customer_id) from marts.customer_lifetime_value").fetchone()
        connection.execute(
            "update marts.customer_lifetime_value set email = 'jane.doe.4711@mail' where customer_id = ?", [customer]
        )
    check = build_mart_contract_check(MART_CONTRACTS["customer_lifetime_value"])
    warnings = {r.check_name: r for r in check(warehouse=WarehouseResource(path=str(broken)))}["contract_warnings"]
    sample = warnings.metadata["sample"].value
    assert not warnings.passed and "email:str_matches" in sample
    assert "jane" not in sample and "4711" not in sample and "| j***@*** |" in sample
