"""dbt faults (docs/reliability.md, the fault catalogue's dbt row), injected into a copy of the dbt project in a
temporary directory.

One clean run makes the baseline: one day ingested from the demo source, then `dbt build` of an unchanged
copy of dbt_project/. Each test starts from that baseline lake and warehouse, breaks the copy, runs the real
dbt assets over it (the same `build_shop_dbt_assets` the code location uses), and proves on the data that
the marts still hold their previous tables and that they are correct again once the fault is fixed:

- a model refs a model that does not exist: dbt exits 2 before building anything; the dbt step fails
  once (recompiling cannot fix it), with dbt's own message; the marts are untouched.
- a replayed raw batch duplicates orders and staging has lost its dedupe: in a build of the orders
  lineage, `unique` on stg_orders fails with the failing count, the models downstream are skipped and keep
  their tables, and the step is not retried.
- a mart's query runs past the run's `dagster/max_runtime`: the real daemon's run monitoring cancels
  the run launched through the real code server, dagster-dbt interrupts dbt, DuckDB rolls the model's
  transaction back; the dbt step is not retried, the run worker exits and frees the pool slot and the
  lock; the run failure reads "Exceeded maximum runtime", which the alerting classifies as a
  transformation timeout; the next run builds the mart.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml
from dagster._core.events import DagsterEventType
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    WILL_RETRY_TAG,
)
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import WorkspaceFileTarget
from dagster_dbt import DbtProject
from dagster_graphql.cli import execute_query
from fault_harness import DIGEST

from demo_source import DemoShopServer, ShopWorld, write_landing_files
from pipeline_project.alerting.alert import AlertKind
from pipeline_project.alerting.signals import TIMEOUT_MESSAGE, run_failure_signal
from pipeline_project.alerting.sla import SlaLookup
from pipeline_project.catalog.policies import WAREHOUSE_POOL
from pipeline_project.definitions import defs
from pipeline_project.ingest.asset_checks import raw_asset_key
from pipeline_project.ingest.assets import API_TABLES, LANDING_TABLES
from pipeline_project.lake.raw_store import Lake
from pipeline_project.ops.wait import wait_until
from pipeline_project.quality.mart_checks import mart_contract_checks
from pipeline_project.resources import LakeResource, WarehouseResource, dbt_resource
from pipeline_project.settings import OPTIONAL_ALERT_SETTINGS, REPO_ROOT
from pipeline_project.transform.dbt_assets import build_shop_dbt_assets

from harness import DAYS, TEST_SCALE, TOKEN
from receivers import free_port

pytestmark = pytest.mark.slow

DAY = DAYS[0]
DBT_STEP = "shop_dbt_assets"
ORDER_MARTS = ("daily_revenue", "customer_lifetime_value", "product_performance")
ORDERS_LINEAGE = ["stg_orders", "int_order_totals", *ORDER_MARTS]
BIN = Path(sys.executable).parent
# The heavy query: a trillion-row cross join that DuckDB cannot prune; dbt's cancel interrupts it. On one
# thread, so the fault burns one core of the machine, not all.
ENDLESS_FILTER = "where (select count(*) from range(1000000) a, range(1000000) b where hash(a.range, b.range) = 42) = 0"
SINGLE_THREADED = "{{ config(pre_hook='set threads = 1') }}\n"
# The heavy model starts 6-10 s after the run does (run worker start, dbt start and parse).
MAX_RUNTIME_SECONDS = 15
WAIT_SECONDS = 120
LAUNCH_RUN = """
mutation Launch($executionParams: ExecutionParams!) {
  launchRun(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""


def mart_fingerprints(warehouse: Path) -> dict[str, tuple[int, str]]:
    """Row count and order-independent digest of every table in the marts schema (a stray table shows too)."""
    with duckdb.connect(str(warehouse), read_only=True) as connection:
        tables = connection.execute(
            "select table_name from information_schema.tables where table_schema = 'marts' order by 1"
        ).fetchall()
        return {
            name: connection.execute(DIGEST.format(f'select * from marts."{name}"')).fetchone() for (name,) in tables
        }


def leftover_relations(warehouse: Path) -> list[str]:
    """Intermediate relations of dbt's table swap; an interrupted or failed build must leave none."""
    with duckdb.connect(str(warehouse), read_only=True) as connection:
        rows = connection.execute(
            "select table_schema || '.' || table_name from information_schema.tables "
            "where contains(table_name, '__dbt_tmp') or contains(table_name, '__dbt_backup')"
        ).fetchall()
    return [name for (name,) in rows]


def daily_revenue_matches_ground_truth(warehouse: Path, world: ShopWorld) -> bool:
    truth = world.ground_truth(DAY)
    with duckdb.connect(str(warehouse), read_only=True) as connection:
        row = connection.execute(
            "select orders_count, billable_orders_count, items_sold, gross_revenue * 100, refunded_revenue * 100, "
            "net_revenue * 100, customers_count from marts.daily_revenue where order_date = ?",
            [DAY],
        ).fetchone()
    return row == tuple(
        truth[name]
        for name in (
            "orders_count",
            "billable_orders_count",
            "items_sold",
            "gross_revenue_cents",
            "refunded_revenue_cents",
            "net_revenue_cents",
            "customers_count",
        )
    )


@dataclass
class Stage:
    """One state directory (lake, warehouse, a copy of the dbt project) and the baseline to return it to."""

    root: Path
    world: ShopWorld
    baseline: dict[str, tuple[int, str]] = field(default_factory=dict)

    @property
    def lake(self) -> Path:
        return self.root / "lake"

    @property
    def warehouse(self) -> Path:
        return self.root / "warehouse.duckdb"

    @property
    def project_dir(self) -> Path:
        return self.root / "dbt_project"

    @property
    def saved(self) -> Path:
        return self.root / "baseline"

    @cached_property
    def project(self) -> DbtProject:
        return DbtProject(project_dir=self.project_dir, profiles_dir=self.project_dir)

    @cached_property
    def dbt_assets(self) -> dg.AssetsDefinition:
        return build_shop_dbt_assets(self.project)

    def build(self, instance: dg.DagsterInstance, selection: list[str] | None = None) -> dg.ExecuteInProcessResult:
        """The dbt assets of the copy and the mart contracts, materialized in process for DAY's partition."""
        return dg.materialize(
            [self.dbt_assets, *mart_contract_checks],
            instance=instance,
            selection=[dg.AssetKey(name) for name in selection] if selection else None,
            partition_key=DAY.isoformat(),
            raise_on_error=False,
            resources={
                "dbt": dbt_resource(self.project),
                "lake": LakeResource(root=str(self.lake)),
                "warehouse": WarehouseResource(path=str(self.warehouse)),
            },
        )

    def save_baseline(self) -> None:
        self.saved.mkdir()
        shutil.copytree(self.lake, self.saved / "lake")
        shutil.copy(self.warehouse, self.saved / "warehouse.duckdb")
        self.baseline = mart_fingerprints(self.warehouse)

    def reset(self) -> None:
        shutil.rmtree(self.lake)
        shutil.copytree(self.saved / "lake", self.lake)
        shutil.copy(self.saved / "warehouse.duckdb", self.warehouse)

    @contextmanager
    def model_changed(self, model: str, old: str, new: str, prepend: str = "") -> Iterator[None]:
        path = self.project_dir / "models" / model
        original = path.read_text()
        assert old in original, f"{model} no longer contains {old!r}: update the fault"
        path.write_text(prepend + original.replace(old, new))
        try:
            yield
        finally:
            path.write_text(original)


def copy_dbt_project(destination: Path) -> None:
    """dbt_project/ without its build output, plus the manifest the code location loads its assets from."""
    shutil.copytree(REPO_ROOT / "dbt_project", destination, ignore=shutil.ignore_patterns("target", "logs"))
    (destination / "target").mkdir()
    shutil.copy(REPO_ROOT / "dbt_project" / "target" / "manifest.json", destination / "target" / "manifest.json")


def keep_partial_parse(project_dir: Path) -> None:
    """dagster-dbt seeds every invocation with target/partial_parse.msgpack; seeding it with the baseline's
    parse (same paths, same profile) lets later builds re-parse only the files a test changed."""
    [invocation] = (project_dir / "target").glob("shop_dbt_assets-*")
    shutil.copy(invocation / "partial_parse.msgpack", project_dir / "target" / "partial_parse.msgpack")


@pytest.fixture(scope="module")
def baseline_stage(tmp_path_factory) -> Iterator[Stage]:
    """A clean ingestion of DAY and a clean build of the unchanged project copy: the state every test starts from."""
    stage = Stage(root=tmp_path_factory.mktemp("dbt-faults"), world=ShopWorld(scale=TEST_SCALE))
    landing = stage.root / "landing"
    stage.lake.mkdir()
    landing.mkdir()
    write_landing_files(landing, DAY, stage.world)
    copy_dbt_project(stage.project_dir)
    with (
        pytest.MonkeyPatch.context() as env,
        dg.instance_for_test() as instance,
        DemoShopServer(stage.world, token=TOKEN) as server,
    ):
        env.setenv("PIPELINE_LAKE_DIR", str(stage.lake))
        env.setenv("PIPELINE_WAREHOUSE_PATH", str(stage.warehouse))
        env.setenv("LANDING_DIR", str(landing))
        env.setenv("SHOP_API_URL", server.url)
        env.setenv("SHOP_API_TOKEN", TOKEN)
        ingestion = defs.resolve_job_def("shop_pipeline").execute_in_process(
            instance=instance,
            asset_selection=[raw_asset_key(table) for table in [*API_TABLES, *LANDING_TABLES]],
            tags={ASSET_PARTITION_RANGE_START_TAG: DAY.isoformat(), ASSET_PARTITION_RANGE_END_TAG: DAY.isoformat()},
        )
        assert ingestion.success
        assert stage.build(instance).success
        keep_partial_parse(stage.project_dir)
        stage.save_baseline()
        assert daily_revenue_matches_ground_truth(stage.warehouse, stage.world)
        assert set(stage.baseline) == {"daily_revenue", "customer_lifetime_value", "product_performance", "web_funnel"}
        yield stage


@pytest.fixture
def stage(baseline_stage: Stage) -> Stage:
    baseline_stage.reset()
    return baseline_stage


def step_events(result: dg.ExecuteInProcessResult, step_key: str, *types: DagsterEventType) -> list[dg.DagsterEvent]:
    return [e for e in result.all_events if e.step_key == step_key and e.event_type in types]


def retries(result: dg.ExecuteInProcessResult) -> list[dg.DagsterEvent]:
    return step_events(result, DBT_STEP, DagsterEventType.STEP_UP_FOR_RETRY, DagsterEventType.STEP_RESTARTED)


def materialized(result: dg.ExecuteInProcessResult) -> set[str]:
    return {event.asset_key.to_user_string() for event in result.get_asset_materialization_events()}


def test_compile_error_fails_the_dbt_asset_once_and_the_old_marts_stay_served(stage, instance):
    with stage.model_changed("marts/daily_revenue.sql", "ref('int_order_totals')", "ref('nope')"):
        broken = stage.build(instance)

    assert not broken.success
    [failure] = step_events(broken, DBT_STEP, DagsterEventType.STEP_FAILURE)
    message = failure.step_failure_data.error.message
    assert "Compilation Error" in message
    assert "Model 'model.shop.daily_revenue' (models/marts/daily_revenue.sql) depends on a node named 'nope'" in message
    assert failure.step_failure_data.user_failure_data.metadata["dbt_exit_code"].value == 2
    assert not retries(broken), "a project that does not compile was retried"
    assert not materialized(broken)
    assert mart_fingerprints(stage.warehouse) == stage.baseline

    fixed = stage.build(instance, selection=["daily_revenue"])
    assert fixed.success
    assert materialized(fixed) == {"daily_revenue"}
    assert mart_fingerprints(stage.warehouse) == stage.baseline
    assert daily_revenue_matches_ground_truth(stage.warehouse, stage.world)


def test_duplicate_key_fails_the_unique_check_and_the_skipped_marts_keep_their_tables(stage, instance):
    orders = Lake(stage.lake).data_path("orders", DAY)
    with duckdb.connect() as connection:
        # A batch written twice: three orders of the partition again, in a second file of the partition.
        connection.execute(
            f"copy (select * from read_parquet('{orders}') order by order_id limit 3) "
            f"to '{orders.parent / 'replayed.parquet'}' (format parquet)"
        )
        (duplicated_keys,) = connection.execute(
            f"select count(*) from (select order_id from read_parquet('{orders.parent}/*.parquet') "
            "group by order_id having count(*) > 1)"
        ).fetchone()
    assert duplicated_keys == 3

    with stage.model_changed("staging/stg_orders.sql", "{{ latest_per_key('order_id') }}", ""):
        broken = stage.build(instance, selection=ORDERS_LINEAGE)

    assert not broken.success
    [evaluation] = [e for e in broken.get_asset_check_evaluations() if not e.passed]
    assert (evaluation.asset_key, evaluation.check_name) == (dg.AssetKey("stg_orders"), "unique_stg_orders_order_id")
    assert evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert evaluation.metadata["dagster_dbt/failed_row_count"].value == duplicated_keys
    [failure] = step_events(broken, DBT_STEP, DagsterEventType.STEP_FAILURE)
    assert failure.step_failure_data.error.cls_name == "DagsterAssetCheckFailedError"
    assert not retries(broken), "a failing dbt test was retried"
    assert materialized(broken) == {"stg_orders"}, "a model downstream of the failing test was built"
    assert mart_fingerprints(stage.warehouse) == stage.baseline

    fixed = stage.build(instance, selection=ORDERS_LINEAGE)
    assert fixed.success
    assert all(e.passed for e in fixed.get_asset_check_evaluations())
    assert mart_fingerprints(stage.warehouse) == stage.baseline
    assert daily_revenue_matches_ground_truth(stage.warehouse, stage.world)
    with duckdb.connect(str(stage.warehouse), read_only=True) as connection:
        rows, keys = connection.execute("select count(*), count(distinct order_id) from staging.stg_orders").fetchone()
    assert rows == keys


class CodeLocation:
    """The real code location served by `dagster api grpc`, with `dagster-daemon` against a tmp instance."""

    def __init__(self, stage: Stage, home: Path):
        self.home = home
        self.port = free_port()
        self.workspace = home / "workspace.yaml"
        self.workspace.write_text(
            yaml.safe_dump(
                {"load_from": [{"grpc_server": {"host": "127.0.0.1", "port": self.port, "location_name": "shop"}}]}
            )
        )
        self.env = {
            **os.environ,
            **{name: "" for name in OPTIONAL_ALERT_SETTINGS},
            "DAGSTER_HOME": str(home),
            "PIPELINE_DBT_PROJECT_DIR": str(stage.project_dir),
            "PIPELINE_LAKE_DIR": str(stage.lake),
            "PIPELINE_WAREHOUSE_PATH": str(stage.warehouse),
            "LANDING_DIR": str(stage.root / "landing"),
            "SHOP_API_URL": "http://127.0.0.1:9",
            "SHOP_API_TOKEN": "not-used-by-dbt",
            "ALERT_DIR": str(home / "alerts"),
            "DAGSTER_WEBSERVER_URL": "http://127.0.0.1:3000",
        }
        self.processes: list[subprocess.Popen] = []

    def start(self) -> None:
        server = self._spawn(
            "dagster", "api", "grpc", "-m", "pipeline_project.definitions", "-h", "127.0.0.1", "-p", str(self.port)
        )

        def serving() -> bool:
            assert server.poll() is None, f"the code server exited with {server.returncode}: {self._log(server)}"
            return _accepts(self.port)

        wait_until(serving, WAIT_SECONDS, "the code server accepting connections", interval=0.2)
        self._spawn("dagster-daemon", "run", "-w", str(self.workspace))

    def launch(self, instance: dg.DagsterInstance, asset: str, tags: dict[str, str]) -> str:
        """Launch a run the way the UI's Materialize button does (GraphQL `launchRun`); the daemon dequeues it."""
        variables = {
            "executionParams": {
                "selector": {
                    "repositoryLocationName": "shop",
                    "repositoryName": "__repository__",
                    "jobName": "shop_pipeline",
                    "assetSelection": [{"path": [asset]}],
                },
                "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
            }
        }
        with WorkspaceProcessContext(instance, WorkspaceFileTarget(paths=[str(self.workspace)])) as workspace:
            launched = execute_query(workspace, LAUNCH_RUN, variables)["data"]["launchRun"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        return launched["run"]["runId"]

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                os.killpg(process.pid, 15)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, 9)
                    process.wait()

    def _spawn(self, executable: str, *args: str) -> subprocess.Popen:
        log = (self.home / f"{executable}.log").open("w")
        process = subprocess.Popen(
            [str(BIN / executable), *args],
            env=self.env,
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes.append(process)
        return process

    def _log(self, process: subprocess.Popen) -> str:
        return (self.home / f"{Path(process.args[0]).name}.log").read_text()[-2000:]


def _accepts(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def wait_for_run(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRun:
    def finished() -> dg.DagsterRun | None:
        run = instance.get_run_by_id(run_id)
        return run if run is not None and run.is_finished else None

    def status(_) -> str:
        run = instance.get_run_by_id(run_id)
        return str(run and run.status)

    return wait_until(finished, WAIT_SECONDS, f"run {run_id} finished", interval=0.5, describe=status)


def wait_for_tag(instance: dg.DagsterInstance, run_id: str, tag: str) -> str:
    return wait_until(
        lambda: instance.get_run_by_id(run_id).tags.get(tag), WAIT_SECONDS, f"run {run_id} tagged {tag}", interval=0.5
    )


def run_worker_pid(instance: dg.DagsterInstance, run_id: str) -> int:
    for record in instance.get_records_for_run(run_id, of_type=DagsterEventType.ENGINE_EVENT).records:
        pid = record.event_log_entry.dagster_event.pid
        if pid is not None:
            return pid
    raise AssertionError(f"no engine event of run {run_id} names its process")


def wait_until_exited(pid: int) -> None:
    """The process is gone (or a zombie its parent has yet to reap): nothing of it holds the warehouse."""
    status = Path(f"/proc/{pid}/status")
    wait_until(
        lambda: not status.exists() or "State:\tZ" in status.read_text(),
        WAIT_SECONDS,
        f"run worker {pid} gone after its run ended",
        interval=0.2,
    )


def dbt_messages(stage: Stage, run_id: str) -> list[str]:
    """What dbt logged (its structured debug log) in the one invocation of the run."""
    [invocation] = (stage.project_dir / "target").glob(f"shop_dbt_assets-{run_id[:7]}-*")
    lines = (invocation / "dbt.log").read_text().splitlines()
    return [json.loads(line)["info"]["msg"] for line in lines if line.startswith("{")]


def test_transformation_timeout_cancels_the_run_keeps_the_old_mart_and_the_next_run_builds_it(stage, tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    config = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())
    config["run_monitoring"]["poll_interval_seconds"] = 1
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    location = CodeLocation(stage, home)
    heavy = stage.model_changed(
        "marts/daily_revenue.sql",
        "    from orders\n    group by order_date",
        f"    from orders\n    {ENDLESS_FILTER}\n    group by order_date",
        prepend=SINGLE_THREADED,
    )
    # The instance's storage exists before the daemon opens it (two processes creating it at once race).
    with dg.DagsterInstance.from_config(str(home)) as instance:
        try:
            with heavy:
                location.start()
                timed_out_id = location.launch(
                    instance,
                    "daily_revenue",
                    {
                        "dagster/max_runtime": str(MAX_RUNTIME_SECONDS),
                        ASSET_PARTITION_RANGE_START_TAG: DAY.isoformat(),
                        ASSET_PARTITION_RANGE_END_TAG: DAY.isoformat(),
                    },
                )
                timed_out = wait_for_run(instance, timed_out_id)
                wait_until_exited(run_worker_pid(instance, timed_out_id))

            assert timed_out.status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)
            events = instance.all_logs(timed_out_id)
            # Run monitoring fails the run first; the run worker's own failure follows once dbt has stopped.
            first_failure, *_ = instance.get_records_for_run(timed_out_id, of_type=DagsterEventType.RUN_FAILURE).records
            message = first_failure.event_log_entry.dagster_event.message
            assert f"{TIMEOUT_MESSAGE} of {MAX_RUNTIME_SECONDS} seconds" in message
            signal = run_failure_signal(first_failure, timed_out, instance, SlaLookup(), "http://127.0.0.1:3000")
            assert signal.firing and signal.alert.kind == AlertKind.TRANSFORMATION_TIMEOUT
            [step_failure] = [e.dagster_event for e in events if e.dagster_event_type == DagsterEventType.STEP_FAILURE]
            assert (
                "dbt build interrupted because the run was terminated" in step_failure.step_failure_data.error.message
            )
            retried = {DagsterEventType.STEP_UP_FOR_RETRY, DagsterEventType.STEP_RESTARTED}
            assert not [e for e in events if e.dagster_event_type in retried], "the interrupted dbt step was retried"
            dbt_said = dbt_messages(stage, timed_out_id)
            assert "Began executing node model.shop.daily_revenue" in dbt_said, "the run timed out before the model"
            assert "DuckDB adapter: query cancelled on connection model.shop.daily_revenue" in dbt_said
            assert "On model.shop.daily_revenue: ROLLBACK" in dbt_said
            assert not instance.event_log_storage.get_concurrency_info(WAREHOUSE_POOL).claimed_slots
            assert leftover_relations(stage.warehouse) == []
            assert mart_fingerprints(stage.warehouse) == stage.baseline

            # The next run, on the same instance (pool) and warehouse (DuckDB's lock), with the model fixed.
            next_run = stage.build(instance, selection=["daily_revenue"])
            assert next_run.success
            assert materialized(next_run) == {"daily_revenue"}
            # The instance does not re-run the timed-out run: its failure is a step failure, final at once.
            assert wait_for_tag(instance, timed_out_id, WILL_RETRY_TAG) == "false"
        finally:
            location.stop()
    assert leftover_relations(stage.warehouse) == []
    assert mart_fingerprints(stage.warehouse) == stage.baseline
    assert daily_revenue_matches_ground_truth(stage.warehouse, stage.world)
