"""The code location loads, has the whole graph, and does not shell out to dbt while loading."""

import functools
import inspect
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from dagster_dbt import DbtCliResource
from dotenv import dotenv_values

from pipeline_project.definitions import defs
from pipeline_project.resources import ShopDbtCliResource
from pipeline_project.settings import REPO_ROOT

RAW_TABLES = ["customers", "products", "orders", "order_items", "payments", "web_events"]
MARTS = ["daily_revenue", "customer_lifetime_value", "product_performance", "web_funnel"]


def test_definitions_validate():
    dg.Definitions.validate_loadable(defs)


def test_graph_runs_source_to_marts():
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert {f"raw_{table}" for table in RAW_TABLES} <= keys
    assert set(MARTS) <= keys
    assert "customers_snapshot" in keys
    # Customers and products are versioned: every version is staged first, the latest one from there.
    first_staging = {"customers": "stg_customer_versions", "products": "stg_product_versions"}
    for table in RAW_TABLES:
        staging = first_staging.get(table, f"stg_{table}")
        assert graph.get(dg.AssetKey(staging)).parent_keys == {dg.AssetKey(f"raw_{table}")}
    upstream_of_revenue = dg.AssetSelection.assets("daily_revenue").upstream().resolve(graph)
    assert {dg.AssetKey("raw_orders"), dg.AssetKey("raw_order_items")} <= upstream_of_revenue


def test_checks_cover_raw_tables_dbt_tests_and_mart_contracts():
    check_keys = {(key.asset_key.to_user_string(), key.name) for key in defs.resolve_asset_graph().asset_check_keys}
    for table in RAW_TABLES:
        assert (f"raw_{table}", "source_reconciled") in check_keys
    for mart in ("daily_revenue", "customer_lifetime_value"):
        assert (mart, "contract_errors") in check_keys
        assert (mart, "contract_warnings") in check_keys
    dbt_tests = {name for asset, name in check_keys if name.startswith(("unique_", "not_null_", "relationships_"))}
    assert any(name.startswith("unique_stg_orders") for name in dbt_tests)
    assert any(name.startswith("relationships_stg_orders") for name in dbt_tests)


@pytest.mark.slow
def test_loading_the_code_location_never_runs_dbt():
    probe = (
        "import subprocess\n"
        "class Guard(subprocess.Popen):\n"
        "    def __init__(self, args, *rest, **kwargs):\n"
        "        if 'dbt' in str(args):\n"
        "            raise AssertionError(f'dbt started at import time: {args}')\n"
        "        super().__init__(args, *rest, **kwargs)\n"
        "subprocess.Popen = Guard\n"
        "import pipeline_project.definitions\n"
        "print('loaded')\n"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp"}
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "loaded" in result.stdout


@pytest.mark.slow
def test_the_import_guard_does_catch_dbt_under_the_dev_cli():
    """The guard above is only worth something if it trips when dbt does run (prepare_if_dev under dev)."""
    probe = (
        "import subprocess\n"
        "class Guard(subprocess.Popen):\n"
        "    def __init__(self, args, *rest, **kwargs):\n"
        "        if 'dbt' in str(args):\n"
        "            raise AssertionError('dbt started')\n"
        "        super().__init__(args, *rest, **kwargs)\n"
        "subprocess.Popen = Guard\n"
        "import pipeline_project.transform.project\n"
    )
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": "/tmp", "DAGSTER_IS_DEV_CLI": "1"}
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode != 0 and "dbt started" in result.stderr


READ_OPTIONAL_SETTINGS = """
import dagster as dg
from pipeline_project.definitions import defs
resources = {name: defs.resources[name] for name in ("landing", "warehouse")}
with dg.build_resources(resources) as built:
    print(built.landing.max_file_bytes, built.warehouse.lock_wait_seconds)
"""


@pytest.mark.slow
def test_optional_settings_reach_their_resources_and_default_when_empty(tmp_path):
    def resolved(**settings: str) -> list[str]:
        env = {
            "PATH": "/usr/bin:/bin",
            "LANDING_DIR": str(tmp_path),
            "PIPELINE_WAREHOUSE_PATH": str(tmp_path / "warehouse.duckdb"),
            **settings,
        }
        completed = subprocess.run(
            [sys.executable, "-c", READ_OPTIONAL_SETTINGS], env=env, capture_output=True, text=True, check=True
        )
        return completed.stdout.split()

    assert resolved(LANDING_MAX_FILE_BYTES="", PIPELINE_WAREHOUSE_LOCK_WAIT_SECONDS="") == ["536870912", "30"]
    assert resolved(LANDING_MAX_FILE_BYTES="1024", PIPELINE_WAREHOUSE_LOCK_WAIT_SECONDS="5") == ["1024", "5"]


READ_RESOLVED_RESOURCES = """
import os
import dagster as dg
from pipeline_project.definitions import defs
resources = {name: defs.resources[name] for name in ("lake", "landing", "warehouse", "alerting")}
with dg.build_resources(resources) as built:
    print(built.lake.lake().root)
    print(built.landing.directory)
    print(built.warehouse.resolved_path)
print(os.environ["ALERT_DIR"])
"""


@pytest.mark.slow
def test_plain_dagster_dev_with_env_example_resolves_every_path_under_the_state_directory(tmp_path):
    """`dagster dev` without make, with `.env.example`'s (empty) values and another working directory: the
    code location applies the same defaults `make dev` does instead of paths relative to where it started."""
    example = {name: value or "" for name, value in dotenv_values(REPO_ROOT / ".env.example").items()}
    assert example["PIPELINE_LAKE_DIR"] == "" and "ALERT_WEBHOOK_URL" in example
    example = {name: value for name, value in example.items() if not name.startswith("ALERT_")}
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **example, "PIPELINE_STATE_DIR": str(tmp_path / "state")}
    completed = subprocess.run(
        [sys.executable, "-c", READ_RESOLVED_RESOURCES], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    state = tmp_path / "state"
    assert completed.stdout.split() == [
        str(state / "lake"),
        str(state / "landing"),
        str(state / "warehouse.duckdb"),
        str(state / "alerts"),
    ]


def test_the_private_dagster_dbt_hooks_the_dbt_resource_overrides_still_exist():
    """`ShopDbtCliResource` replaces two private members of `DbtCliResource`; a dagster-dbt upgrade that
    renames them would silently bring back their cost, so their disappearance fails here."""
    assert isinstance(inspect.getattr_static(DbtCliResource, "_cli_version"), functools.cached_property)
    adapter_hook = inspect.getattr_static(DbtCliResource, "_initialize_dbt_core_adapter")
    assert list(inspect.signature(adapter_hook).parameters) == ["self", "args"]
    assert ShopDbtCliResource._initialize_dbt_core_adapter is not adapter_hook
