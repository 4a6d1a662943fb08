"""Crash safety (docs/reliability.md: the fault catalogue's SIGKILL row, and "Crashes"): a run SIGKILLed at
each named fault point leaves the previous good state readable and consistent (manifests match their files,
marts are queryable and hold what they held), the run it left STARTED is failed by run monitoring, and a
rerun completes with exactly the data a clean run gives.

A good state (every table and the marts for DAY, from a clean source) is built once and restored for each
test. The killed run reads a changed source (the same day with 3% bad records, so both the data and the
quarantine file change); the mid-dbt run builds the dbt models after NEXT_DAY arrived.
"""

import logging
import shutil
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import EmptyWorkspaceTarget
from dagster._daemon.monitoring.run_monitoring import execute_run_monitoring_iteration
from dbt.cli.main import dbtRunner
from fault_harness import (
    child_env,
    clean_and_changed_worlds,
    kill_when_file_appears,
    lake_fingerprint,
    leftovers,
    materialize,
    run_here,
    start,
    warehouse_fingerprint,
    write_instance_config,
)

from demo_source import DemoShopServer, ShopWorld, write_landing_files
from pipeline_project.fault_points import FAULT_POINTS, MID_DBT_MARKER_SUFFIX, SETTING, UnknownFaultPoint, reached
from pipeline_project.ingest.assets import API_TABLES, LANDING_TABLES
from pipeline_project.lake.raw_store import Lake
from pipeline_project.settings import REPO_ROOT
from pipeline_project.transform.dbt_assets import shop_dbt_assets

from harness import DAYS, TEST_SCALE, TOKEN

DAY, NEXT_DAY = DAYS
TABLE = "orders"
RAW_TABLES = (*API_TABLES, *LANDING_TABLES)
RAW_POINTS = ("after_extract", "mid_write", "after_data_before_manifest")
# Short enough that the killed run has exceeded it when the test looks; the project's value is in dagster.yaml.
TEST_MAX_RUNTIME_SECONDS = 1


@pytest.fixture(scope="module")
def worlds():
    return clean_and_changed_worlds(TEST_SCALE)


@pytest.fixture(scope="module")
def sources(worlds):
    with (
        DemoShopServer(worlds["clean"], token=TOKEN) as clean,
        DemoShopServer(worlds["changed"], token=TOKEN) as changed,
    ):
        yield {"clean": clean, "changed": changed}


def new_state(path: Path) -> Path:
    (path / "lake").mkdir(parents=True)
    (path / "landing").mkdir()
    write_instance_config(path / "dagster_home", TEST_MAX_RUNTIME_SECONDS)
    return path


@pytest.fixture(scope="module")
def good_state(tmp_path_factory, sources, worlds):
    """Every table and mart of DAY from the clean source, with its fingerprints, kept as a template."""
    base = tmp_path_factory.mktemp("good")
    state = new_state(base / "state")
    write_landing_files(state / "landing", DAY, worlds["clean"])
    result = run_here(child_env(state, sources["clean"].url, TOKEN), DAY.isoformat())
    assert result.success
    shutil.copytree(state, base / "template", ignore=shutil.ignore_patterns("dagster_home"))
    return {
        "state": state,
        "template": base / "template",
        "lake": lake_fingerprint(state / "lake", RAW_TABLES),
        "marts": warehouse_fingerprint(state / "warehouse.duckdb"),
    }


def restore(good_state: dict) -> Path:
    """The good state, back at the path it was built at (dbt's views name the lake by its path), with a
    fresh Dagster instance."""
    state = good_state["state"]
    shutil.rmtree(state)
    shutil.copytree(good_state["template"], state)
    write_instance_config(state / "dagster_home", TEST_MAX_RUNTIME_SECONDS)
    return state


@pytest.fixture(scope="module")
def clean_changed_orders(tmp_path_factory, sources):
    """What a clean run of raw_orders for DAY from the changed source leaves in the lake."""
    state = new_state(tmp_path_factory.mktemp("reference") / "state")
    assert run_here(child_env(state, sources["changed"].url, TOKEN), DAY.isoformat(), ["raw_orders"]).success
    return lake_fingerprint(state / "lake", (TABLE,))[TABLE]


def assert_every_partition_reconciles(lake: Lake, days) -> None:
    for table in RAW_TABLES:
        for day in days:
            manifest, problems = lake.read_verified(table, day)
            assert manifest is not None and manifest.reconciled, (table, day)
            assert problems == [], (table, day)


def fail_abandoned_runs(home: Path) -> dict[str, dg.DagsterRun]:
    """One iteration of the run monitoring daemon over the instance; every run afterwards, by id."""
    with dg.DagsterInstance.from_config(str(home)) as instance:
        with WorkspaceProcessContext(instance, EmptyWorkspaceTarget()) as workspace:
            list(execute_run_monitoring_iteration(workspace, logging.getLogger("run_monitoring")))
        return {run.run_id: run for run in instance.get_runs()}


def assert_run_monitoring_fails_the_killed_run(home: Path) -> None:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        started = [run.run_id for run in instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))]
    assert len(started) == 1, "the killed run stays STARTED: nothing is left to report its end"
    runs = fail_abandoned_runs(home)
    assert runs[started[0]].status == dg.DagsterRunStatus.FAILURE
    with dg.DagsterInstance.from_config(str(home)) as instance:
        messages = [event.message for event in instance.all_logs(started[0])]
    assert f"Canceling due to exceeding maximum runtime of {TEST_MAX_RUNTIME_SECONDS} seconds." in messages


def test_the_project_instance_fails_runs_that_outlive_a_maximum_runtime(tmp_path):
    project = write_instance_config(tmp_path, TEST_MAX_RUNTIME_SECONDS)
    assert project["run_monitoring"]["enabled"] is True
    assert 0 < project["run_monitoring"]["max_runtime_seconds"] <= 4 * 3600
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_max_runtime_seconds == TEST_MAX_RUNTIME_SECONDS


def test_fault_points_are_inert_unless_named_and_a_misspelt_one_is_an_error(monkeypatch):
    monkeypatch.delenv(SETTING, raising=False)
    for point in FAULT_POINTS:
        reached(point)
    monkeypatch.setenv(SETTING, "mid_dbt")  # reached inside dbt only: every point of the Python code passes
    for point in FAULT_POINTS.keys() - {"mid_dbt"}:
        reached(point)
    monkeypatch.setenv(SETTING, "mid_wirte")
    with pytest.raises(UnknownFaultPoint, match=f"{SETTING}='mid_wirte' is not a fault point"):
        reached("mid_write")


def test_no_deployment_arms_a_fault_point():
    deployment = [*(REPO_ROOT / "deploy").rglob("*"), REPO_ROOT / ".env.example", REPO_ROOT / "dagster.yaml"]
    deployment += [REPO_ROOT / "pipeline_project" / "settings.py", REPO_ROOT / "dbt_project" / "profiles.yml"]
    armed = [str(path) for path in deployment if path.is_file() and SETTING in path.read_text()]
    assert armed == []


@pytest.mark.slow
def test_the_mid_dbt_post_hook_of_every_mart_renders_nothing_unless_armed(tmp_path, monkeypatch):
    """dbt runs no statement for a hook that renders empty, so an unarmed mart build executes none of it."""
    dbt_project = REPO_ROOT / "dbt_project"
    marts = yaml.safe_load((dbt_project / "dbt_project.yml").read_text())["models"]["shop"]["marts"]
    assert marts["+post-hook"] == "{{ fault_point_mid_dbt() }}"
    monkeypatch.delenv(SETTING, raising=False)
    monkeypatch.setenv("PIPELINE_WAREHOUSE_PATH", str(tmp_path / "warehouse.duckdb"))
    result = dbtRunner().invoke(
        ["compile", "--quiet", "--inline", marts["+post-hook"], "--project-dir", str(dbt_project)]
        + ["--profiles-dir", str(dbt_project), "--target-path", str(tmp_path / "target")]
        + ["--log-path", str(tmp_path / "logs")]
    )
    assert result.success, result.exception
    [hook] = result.result.results
    assert hook.node.compiled_code.strip() == ""


@pytest.mark.slow
@pytest.mark.parametrize("point", RAW_POINTS)
def test_a_kill_during_ingestion_keeps_a_consistent_partition_and_the_rerun_completes(
    point, sources, good_state, clean_changed_orders
):
    state = restore(good_state)
    env = child_env(state, sources["changed"].url, TOKEN)
    lake = Lake(state / "lake")

    killed = materialize({**env, SETTING: point}, DAY.isoformat(), ["raw_orders"])

    assert killed.killed, killed.stderr[-3000:]
    decided = lake.pending_manifest_path(TABLE, DAY).exists()
    # Only a kill after the new manifest was written down leaves a commit to roll forward.
    assert decided == (point == "after_data_before_manifest")
    if decided:
        on_disk = lake_fingerprint(state / "lake", (TABLE,))[TABLE]
        assert on_disk["raw"] == clean_changed_orders["raw"], "the new data file is in place"
        assert on_disk["quarantine"] == good_state["lake"][TABLE]["quarantine"], "the old quarantine file is too"
    if point == "mid_write":
        assert leftovers(state), "the dead run's temporary files are on disk until the next write"
    assert_every_partition_reconciles(lake, [DAY])
    expected = clean_changed_orders if decided else good_state["lake"][TABLE]
    assert lake_fingerprint(state / "lake", (TABLE,))[TABLE] == expected
    assert warehouse_fingerprint(state / "warehouse.duckdb") == good_state["marts"]
    assert_run_monitoring_fails_the_killed_run(state / "dagster_home")

    rerun = run_here(env, DAY.isoformat(), ["raw_orders"])

    assert rerun.success
    assert all(
        evaluation.passed
        for evaluation in rerun.get_asset_check_evaluations()
        if evaluation.check_name == "source_reconciled"
    )
    assert_every_partition_reconciles(lake, [DAY])
    manifest = lake.read_manifest(TABLE, DAY)
    assert manifest.quarantined_count > 0, "the changed source's bad records are quarantined"
    after_rerun = lake_fingerprint(state / "lake", RAW_TABLES)
    assert after_rerun == {**good_state["lake"], TABLE: clean_changed_orders}
    assert leftovers(state) == []


def marts_by_day(warehouse: Path) -> dict:
    with duckdb.connect(str(warehouse), read_only=True) as connection:
        revenue = connection.execute(
            "select order_date, orders_count, net_revenue * 100 from marts.daily_revenue order by order_date"
        ).fetchall()
        funnel = connection.execute("select event_date, sessions from marts.web_funnel order by event_date").fetchall()
        half_built = connection.execute(
            "select table_name from information_schema.tables "
            "where table_name like '%__dbt_tmp' or table_name like '%__dbt_backup'"
        ).fetchall()
    return {"daily_revenue": revenue, "web_funnel": funnel, "half_built": half_built}


def truth(world: ShopWorld, days) -> dict:
    return {
        "daily_revenue": [
            (day, world.ground_truth(day)["orders_count"], world.ground_truth(day)["net_revenue_cents"]) for day in days
        ],
        "web_funnel": [(day, world.ground_truth(day)["sessions"]) for day in days],
        "half_built": [],
    }


@pytest.mark.slow
def test_a_kill_inside_dbt_keeps_the_last_built_marts_and_the_rerun_builds_them(sources, worlds, good_state):
    state = restore(good_state)
    env = child_env(state, sources["clean"].url, TOKEN)
    warehouse = state / "warehouse.duckdb"
    write_landing_files(state / "landing", NEXT_DAY, worlds["clean"])
    assert run_here(env, NEXT_DAY.isoformat(), [f"raw_{table}" for table in RAW_TABLES]).success
    # Every dbt model (staging and intermediate tables take NEXT_DAY in before the marts do); the kill comes
    # in the first mart's transaction, after the models upstream of it were committed.
    dbt_models = [key.to_user_string() for key in shop_dbt_assets.keys]

    child = start({**env, SETTING: "mid_dbt"}, NEXT_DAY.isoformat(), dbt_models)
    killed = kill_when_file_appears(child, Path(f"{warehouse}{MID_DBT_MARKER_SUFFIX}"))

    assert killed.killed
    assert warehouse_fingerprint(warehouse) == good_state["marts"]
    assert marts_by_day(warehouse) == truth(worlds["clean"], [DAY])
    assert_run_monitoring_fails_the_killed_run(state / "dagster_home")

    rerun = run_here(env, NEXT_DAY.isoformat(), dbt_models)

    assert rerun.success
    assert all(evaluation.passed for evaluation in rerun.get_asset_check_evaluations())
    assert marts_by_day(warehouse) == truth(worlds["clean"], [DAY, NEXT_DAY])
    assert_every_partition_reconciles(Lake(state / "lake"), [DAY, NEXT_DAY])
    assert leftovers(state) == []
