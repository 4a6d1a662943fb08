"""The on-call CLI against real state: a Dagster instance with a good and a failed run, the raw layer they
wrote, the demo source, a DuckDB warehouse, the alert outbox and the log channel's file. Every command prints
the data the runbooks say it prints, names what is missing when it cannot, never prints the source token,
and changes nothing it reads: a read of a partition whose commit a killed writer left pending leaves the lake
byte-identical, and only `lake-repair` completes that commit."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from demo_source import Faults
from pipeline_project.alerting.alert import (
    DIAGNOSE,
    RERUN,
    RUNBOOKS,
    VERIFY,
    Action,
    Alert,
    AlertKind,
    Severity,
    rerun_command,
    verify_command,
)
from pipeline_project.alerting.channels.log import LogChannel
from pipeline_project.alerting.outbox import Outbox, Signal
from pipeline_project.alerting.signals import delivery_failing_signal
from pipeline_project.ingest.api_assets import build_api_ingestion_asset
from pipeline_project.lake.raw_store import Lake
from pipeline_project.ops.oncall.cli import main
from pipeline_project.ops.oncall.common import export_source_settings
from pipeline_project.resources import LakeResource, ShopApiResource
from pipeline_project.settings import DEMO_SOURCE_PORT, DEMO_TOKEN, REPO_ROOT

from harness import DAYS, TOKEN
from receivers import free_port

GOOD_DAY, DRIFTED_DAY = DAYS
# A second process holding the warehouse's write lock, as a dbt build does.
HOLD_WAREHOUSE = """
import sys, time, duckdb
connection = duckdb.connect(sys.argv[1])
print("holding", flush=True)
time.sleep(60)
"""
RAW_ORDERS = build_api_ingestion_asset("orders")
RENAMED_CUSTOMER_ID = Faults(schema_drift={"orders": {"rename": {"customer_id": "customer_ref"}}})
# What dbt compiles `unique` on stg_orders.order_id to (dbt_project/target/*/run_results.json, compiled_code).
UNIQUE_ORDER_ID_SQL = """
select order_id as unique_field, count(*) as n_records
from "warehouse"."staging"."stg_orders"
where order_id is not null
group by order_id
having count(*) > 1
"""


@pytest.fixture
def restored_environ():
    """`prepare_environment` writes the settings it resolves into os.environ: put everything back afterwards."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def state(restored_environ, state_dir, monkeypatch) -> Path:
    """The CLI's state directory; the lake, landing and warehouse paths are the `state_dir` fixture's."""
    monkeypatch.setenv("PIPELINE_STATE_DIR", str(state_dir))
    for name in ("DAGSTER_HOME", "ALERT_DIR", "PIPELINE_LOG_DIR", "DBT_TARGET_PATH", "SHOP_DEMO_PORT"):
        monkeypatch.delenv(name, raising=False)
    return state_dir


def oncall(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert TOKEN not in out + err, "the source token was printed"
    return code, out, err


def box_rows(out: str) -> list[list[str]]:
    """The data rows of a table as DuckDB draws it (below the line that ends its header)."""
    lines = out.splitlines()
    body = lines[next(number for number, line in enumerate(lines) if line.startswith("├")) + 1 :]
    return [[cell.strip() for cell in line.strip("│").split("│")] for line in body if line.startswith("│")]


def materialize_orders(instance, state: Path, url: str, day) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [RAW_ORDERS],
        instance=instance,
        partition_key=day.isoformat(),
        resources={
            "shop_api": ShopApiResource(base_url=url, token=TOKEN, page_size=100),
            "lake": LakeResource(root=str(state / "lake")),
        },
        raise_on_error=False,
    )


def file_digests(*roots: Path) -> dict[str, str]:
    """Every file under the roots, with a digest of its content, and every directory (so a created lock
    directory shows too)."""
    return {
        str(path): hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "directory"
        for root in roots
        for path in sorted(root.rglob("*"))
    }


def test_run_commands_show_real_runs_and_change_nothing(state, demo_source, instance, capsys):
    good = materialize_orders(instance, state, demo_source.url, GOOD_DAY)
    assert good.success
    demo_source.set_faults(RENAMED_CUSTOMER_ID)
    failed = materialize_orders(instance, state, demo_source.url, DRIFTED_DAY)
    assert not failed.success
    before = file_digests(state, Path(instance.root_directory))

    code, out, _ = oncall(capsys, "runs")
    assert code == 0
    header, latest, earlier = (line.split() for line in out.splitlines())
    assert header == ["run", "id", "job", "status", "started", "(UTC)", "partition"]
    assert [*latest[:3], latest[-1]] == [failed.run_id, "__ephemeral_asset_job__", "FAILURE", str(DRIFTED_DAY)]
    assert [*earlier[:3], earlier[-1]] == [good.run_id, "__ephemeral_asset_job__", "SUCCESS", str(GOOD_DAY)]
    assert oncall(capsys, "runs", "1")[1].count("__ephemeral_asset_job__") == 1

    code, out, _ = oncall(capsys, "run-errors", failed.run_id)
    assert code == 0
    first, second, *rest = out.splitlines()
    assert first == (
        f"run {failed.run_id}  job __ephemeral_asset_job__ (ad-hoc materialization)  status FAILURE  "
        f"partition {DRIFTED_DAY}"
    )
    assert second.startswith(f"STEP_FAILURE raw_orders: raw_orders partition {DRIFTED_DAY}: breaking schema drift")
    assert "    > customer_id -> customer_ref (Int64)  renamed?" in rest
    drift = next(line for line in rest if line.startswith("    schema_drift: "))
    assert json.loads(drift.removeprefix("    schema_drift: "))["renamed"] == [
        {"old": "customer_id", "new": "customer_ref", "dtype": "Int64"}
    ]
    assert "\nPIPELINE_FAILURE (run): " in out
    assert oncall(capsys, "run-errors", good.run_id)[1].endswith("no step failure, retry or run failure recorded\n")

    code, out, _ = oncall(capsys, "run-checks", good.run_id)
    assert (code, out) == (0, f"no failed check in run {good.run_id} (2 evaluated; --all lists them)\n")
    rows = [line.split() for line in oncall(capsys, "run-checks", good.run_id, "--all")[1].splitlines()[1:]]
    assert sorted(rows) == [
        ["pass", "ERROR", "raw_orders", "source_reconciled", "-"],
        ["pass", "WARN", "raw_orders", "schema_drift", "-"],
    ]

    code, out, _ = oncall(capsys, "freshness", "raw_orders", "daily_revenue")
    assert code == 0
    assert out.splitlines()[1:] == [
        "raw_orders     no state yet  0.0 h ago",
        "daily_revenue  no state yet  never materialized",
    ]
    assert oncall(capsys, "freshness")[1].splitlines()[1:] == ["raw_orders  no state yet  0.0 h ago"]

    assert oncall(capsys, "pool") == (0, "duckdb_warehouse (no limit set): 0 taken\n", "")
    assert oncall(capsys, "run-stopped", failed.run_id) == (
        0,
        f"no process of run {failed.run_id} (FAILURE) or of its retries is left on this host\n",
        "",
    )
    code, out, _ = oncall(capsys, "daemons")
    assert code == 1 and out.startswith("no daemon has ever run against this instance")

    code, out, _ = oncall(capsys, "lake-verify", str(GOOD_DAY), "orders")
    reported = Lake(state / "lake").read_manifest("orders", GOOD_DAY).source_reported_count
    assert code == 0
    assert out.splitlines()[2].split()[:7] == ["orders", "ok", str(reported), str(reported), "0", "0", good.run_id[:8]]
    code, out, _ = oncall(capsys, "lake-verify", str(DRIFTED_DAY))
    assert code == 1, "a day whose partitions are missing does not verify"
    assert "orders       NO MANIFEST" in out and "customers    NO MANIFEST" in out

    raw_orders = state / "lake" / "raw" / "orders" / "*" / "*.parquet"
    code, out, _ = oncall(capsys, "lake-sql", f"select count(*) as orders from read_parquet('{raw_orders}')")
    assert code == 0 and box_rows(out) == [[str(reported)]]

    code, out, _ = oncall(capsys, "source-columns", "orders", str(DRIFTED_DAY))
    assert code == 1, "breaking drift is a problem the command reports with its status"
    assert out.splitlines()[0].startswith(f"127.0.0.1:{demo_source.url.rsplit(':', 1)[1]} GET /v1/orders?date=")
    assert "    > customer_id -> customer_ref (Int64)  renamed?\n    breaking drift: fails the load\n" in out

    code, out, _ = oncall(capsys, "verify", "--assets", "raw_orders", "--partitions", str(GOOD_DAY))
    assert code == 0, out
    assert f"  ok       raw_orders {GOOD_DAY}: materialized " in out and f" by run {good.run_id[:8]}" in out
    assert "  ok       raw_orders: 2 check(s) passed\n" in out
    assert f"  ok       raw orders {GOOD_DAY}: reconciles with its manifest\n" in out
    assert out.endswith("verdict: RECOVERED\n")
    code, out, _ = oncall(capsys, "verify", "--assets", "raw_orders", "--partitions", f"{GOOD_DAY}...{DRIFTED_DAY}")
    assert code == 1 and f"  NOT YET  raw orders {DRIFTED_DAY}: no manifest" in out
    future = ("--after", "2999-01-01")
    code, out, _ = oncall(capsys, "verify", "--assets", "raw_orders", "--partitions", str(GOOD_DAY), *future)
    assert code == 1 and out.endswith("verdict: NOT RECOVERED\n")

    assert file_digests(state, Path(instance.root_directory)) == before, "a read-only command changed a file"

    missing_run = "0" * 36
    code, _, err = oncall(capsys, "run-errors", missing_run)
    assert code == 1
    assert err.startswith(f"oncall run-errors: no run {missing_run} under DAGSTER_HOME={instance.root_directory} ")

    data_file = Lake(state / "lake").data_path("orders", GOOD_DAY)
    content = bytearray(data_file.read_bytes())
    content[len(content) // 2] ^= 0xFF
    data_file.write_bytes(content)
    code, out, _ = oncall(capsys, "lake-verify", str(GOOD_DAY), "orders")
    assert code == 1 and "\norders  PROBLEM" in out
    assert f"    orders: data file raw/orders/date={GOOD_DAY}/data.parquet does not match the checksum" in out
    data_file.write_bytes(content[:100])
    code, out, _ = oncall(capsys, "lake-verify", str(GOOD_DAY), "orders")
    assert (
        code == 1
        and f"    orders: data file raw/orders/date={GOOD_DAY}/data.parquet is not a readable Parquet file: " in out
    )


def test_source_columns_reads_the_landing_files_and_names_a_missing_day(state, demo_source, capsys):
    code, out, _ = oncall(capsys, "source-columns", "web_events", str(GOOD_DAY))
    files = sorted((state / "landing" / "web_events" / "incoming" / str(GOOD_DAY)).glob("*.jsonl"))
    assert code == 0 and len(files) == 4
    for path in files:
        assert f"{path}: " in out
    assert out.count("    no schema drift\n") == sum(1 for path in files if path.stat().st_size)

    code, _, err = oncall(capsys, "source-columns", "web_events", "2026-01-01")
    assert code == 1
    assert "no landing files of web_events for 2026-01-01 (incoming or archived) under " in err


@pytest.mark.slow
def test_sql_reads_the_warehouse_read_only_and_names_a_missing_one(state, capsys):
    code, _, err = oncall(capsys, "sql", "select 1")
    assert code == 1
    assert err == f"oncall sql: no warehouse at {state / 'warehouse.duckdb'}: run `make run` first\n"

    with duckdb.connect(str(state / "warehouse.duckdb")) as connection:
        connection.execute("create schema marts")
        connection.execute("create table marts.daily_revenue as select date '2026-03-14' as order_date, 1234.5 as net")
    code, out, _ = oncall(capsys, "sql", "select order_date, net from marts.daily_revenue")
    assert code == 0 and box_rows(out) == [["2026-03-14", "1234.5"]]

    code, _, err = oncall(capsys, "sql", "delete from marts.daily_revenue")
    assert code == 1 and "read-only" in err
    with duckdb.connect(str(state / "warehouse.duckdb"), read_only=True) as connection:
        assert connection.execute("select count(*) from marts.daily_revenue").fetchone() == (1,)

    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_WAREHOUSE, str(state / "warehouse.duckdb")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline() == "holding\n"
        code, _, err = oncall(capsys, "sql", "select 1")
    finally:
        holder.kill()
        holder.wait()
    assert code == 1 and f"PID {holder.pid}" in err and "query the raw layer with lake-sql" in err


def test_dbt_failing_rows_reruns_the_tests_compiled_sql_of_that_run(state, tmp_path, monkeypatch, capsys):
    run_id = "3f2a9c1e-0000-4000-8000-000000000000"
    with duckdb.connect(str(state / "warehouse.duckdb")) as connection:
        connection.execute("create schema staging")
        connection.execute("create table staging.stg_orders as select * from (values (1), (2), (2), (3)) t(order_id)")
    invocation = tmp_path / "target" / f"shop_dbt_assets-{run_id[:7]}-a1b2c3d"
    invocation.mkdir(parents=True)
    result = {"unique_id": "test.shop.unique_stg_orders_order_id.4f2b8c", "compiled_code": UNIQUE_ORDER_ID_SQL}
    (invocation / "run_results.json").write_text(json.dumps({"results": [result]}))
    monkeypatch.setenv("DBT_TARGET_PATH", str(tmp_path / "target"))

    code, out, _ = oncall(capsys, "dbt-failing-rows", run_id, "unique_stg_orders_order_id")
    assert code == 0
    assert out.startswith("unique_stg_orders_order_id: 1 failing row(s) now; the first 20:\n")
    assert box_rows(out) == [["2", "2"]]

    code, _, err = oncall(capsys, "dbt-failing-rows", run_id, "not_null_stg_orders_order_id")
    assert code == 1
    assert (
        f"no compiled SQL for dbt test 'not_null_stg_orders_order_id' of run {run_id} in {tmp_path / 'target'}" in err
    )

    code, _, err = oncall(capsys, "dbt-failing-rows", "*", "unique_stg_orders_order_id")
    assert code == 1 and "'*' is not a run id" in err


def test_incidents_and_deliveries_read_the_outbox_without_changing_it(state, capsys):
    outbox_path = state / "alerts" / "outbox.sqlite"
    code, _, err = oncall(capsys, "incidents")
    assert code == 1 and err.startswith(f"oncall incidents: no alert outbox at {outbox_path}: ")

    outbox = Outbox(outbox_path)
    outbox.record(delivery_failing_signal("slack", "run:x@1:trigger", "HTTP 500", True, event_id=7), ["log", "slack"])
    slack = next(delivery for delivery in outbox.claim_due() if delivery.channel == "slack")
    outbox.mark_failed(slack, "slack delivery failed: HTTP 503 from https://hooks.slack.com:443/…")
    before = outbox_path.read_bytes()

    code, out, _ = oncall(capsys, "incidents")
    assert code == 0
    assert out.splitlines()[1].split()[:3] == ["delivery:slack@7", "alert_delivery_failing", "ERROR"]

    code, out, _ = oncall(capsys, "deliveries")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "2 pending: log 1, slack 1"
    slack_row = next(line for line in lines if line.startswith("slack "))
    assert slack_row.split()[1:3] == ["delivery:slack@7:trigger", "1"]
    assert " no " in slack_row and slack_row.endswith(
        "slack delivery failed: HTTP 503 from https://hooks.slack.com:443/…"
    )
    assert oncall(capsys, "deliveries", "--expired") == (0, "no expired delivery\n", "")
    assert outbox_path.read_bytes() == before

    outbox.record(delivery_failing_signal("slack", "run:x@1:trigger", "", False, event_id=8), ["log", "slack"])
    assert oncall(capsys, "incidents") == (0, "no open incident\n", "")


def test_alerts_log_prints_the_last_alerts_or_one_dedup_key(state, capsys):
    log_path = state / "alerts" / "alerts.log"
    code, _, err = oncall(capsys, "alerts-log")
    assert code == 1 and err.startswith(f"oncall alerts-log: no alert log at {log_path}: ")

    outbox = Outbox(state / "alerts" / "outbox.sqlite")
    channel = LogChannel(log_path)
    trigger = outbox.record(delivery_failing_signal("webhook", "a:trigger", "HTTP 500", True, event_id=1), ["log"])
    recovery = outbox.record(delivery_failing_signal("webhook", "a:trigger", "", False, event_id=2), ["log"])
    channel.send(trigger)
    channel.send(recovery)

    code, out, _ = oncall(capsys, "alerts-log")
    assert code == 0
    assert [line.split("  ", 1)[1].split(" | ")[0] for line in out.splitlines()] == [
        "[ERROR] alerts are not reaching the webhook channel: Delivery of a:trigger to webhook keeps failing "
        "(HTTP 500); it was written to the log.",
        "[RESOLVED] alerts reach the webhook channel again: webhook accepted a:trigger.",
    ]
    assert oncall(capsys, "alerts-log", "1")[1].count("\n") == 1
    code, out, _ = oncall(capsys, "alerts-log", "--key", trigger.dedup_key)
    assert code == 0 and out.count("\n") == 1 and "[ERROR] alerts are not reaching the webhook channel" in out
    assert oncall(capsys, "alerts-log", "--key", "nope")[0] == 1


def test_env_exports_what_the_runbooks_use_and_no_secret(state, demo_source, capsys):
    code, out, _ = oncall(capsys, "env")
    assert code == 0
    assert f"export PIPELINE_STATE_DIR={state}\n" in out
    assert f"export PIPELINE_LAKE_DIR={state / 'lake'}\n" in out
    assert f"export ALERT_DIR={state / 'alerts'}\n" in out
    assert f"export SHOP_API_URL={demo_source.url}\n" in out
    assert "export SHOP_API_TOKEN_VARIABLE=SHOP_API_TOKEN\n" in out
    assert f"export PIPELINE_DBT_PROJECT_DIR={REPO_ROOT / 'dbt_project'}\n" in out
    assert "export SHOP_API_TOKEN=" not in out  # and the helper checked that the token's value is not printed


def test_env_of_an_incident_exports_what_its_alert_carries(state, capsys):
    assets, days = ("raw_orders", "raw_payments"), ("2026-11-20", "2026-11-21")
    alert = Alert(
        dedup_key="",
        incident_key="",
        kind=AlertKind.SOURCE_UNAVAILABLE,
        action=Action.TRIGGER,
        severity=Severity.ERROR,
        title="ad-hoc materialization [2026-11-20...2026-11-21] failed: raw_orders, raw_payments",
        summary="Root cause: GET /v1/orders failed: ConnectError",
        runbook=RUNBOOKS[AlertKind.SOURCE_UNAVAILABLE],
        link="http://127.0.0.1:3300/runs/3f2a9c1e-0000-4000-8000-000000000000",
        details={
            "run_id": "3f2a9c1e-0000-4000-8000-000000000000",
            DIAGNOSE: "oncall run-errors 3f2a9c1e-0000-4000-8000-000000000000",
            RERUN: rerun_command("__ASSET_JOB", assets, days),
            VERIFY: verify_command(assets, days, after=1_800_000_000),
        },
        job="__ASSET_JOB",
        assets=assets,
        partitions=days,
    )
    subject = "run:__ASSET_JOB:2026-11-20..2026-11-21:raw_orders,raw_payments"
    queued = Outbox(state / "alerts" / "outbox.sqlite").record(Signal(subject, True, 41, alert), ["log"])
    assert queued.incident_key == f"{subject}@41"

    code, out, _ = oncall(capsys, "env", "--incident", queued.incident_key)
    assert code == 0
    names = ("INCIDENT", "JOB", "ASSETS", "TABLES", "PARTITIONS", "DAY", "RUN_ID")
    printed = " ".join(f'"${name}"' for name in names)
    shell = subprocess.run(
        ["bash", "-c", f'eval "$1"; printf "%s\\n" {printed}', "-", out],
        capture_output=True,
        text=True,
        check=True,
    )
    assert shell.stdout.splitlines() == [
        queued.incident_key,
        "__ASSET_JOB",
        "raw_orders,raw_payments",
        "orders payments",
        "2026-11-20 2026-11-21",
        "2026-11-21",
        "3f2a9c1e-0000-4000-8000-000000000000",
    ]

    code, out, _ = oncall(capsys, "incident", subject)  # the subject finds its latest incident too
    assert code == 0 and "OPEN" in out.splitlines()[0]
    assert (
        "  rerun: oncall rerun --job __ASSET_JOB --assets raw_orders,raw_payments --partitions 2026-11-20...2026-11-21"
        in out
    )
    verify = "  verify: oncall verify --assets raw_orders,raw_payments --partitions 2026-11-20...2026-11-21 --after "
    assert verify in out
    assert oncall(capsys, "env", "--incident", "run:nope@1")[0] == 1


# A writer of a partition that dies between moving the data file into place and its manifest (a SIGKILL at the
# `after_data_before_manifest` fault point), in a child process, as a killed run would.
KILLED_WRITER = """
import sys
import dagster as dg
from pipeline_project.ingest.api_assets import build_api_ingestion_asset
from pipeline_project.resources import LakeResource, ShopApiResource
url, token, lake, day = sys.argv[1:]
dg.materialize(
    [build_api_ingestion_asset("orders")],
    partition_key=day,
    resources={"shop_api": ShopApiResource(base_url=url, token=token), "lake": LakeResource(root=lake)},
)
"""


@pytest.mark.slow
def test_lake_verify_reads_a_pending_commit_without_completing_it_and_lake_repair_completes_it(
    state, demo_source, instance, capsys
):
    assert materialize_orders(instance, state, demo_source.url, GOOD_DAY).success
    lake = Lake(state / "lake")
    committed = lake.peek_manifest("orders", GOOD_DAY)
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_WRITER, demo_source.url, TOKEN, str(state / "lake"), str(GOOD_DAY)],
        env={**os.environ, "PIPELINE_FAULT_POINT": "after_data_before_manifest"},
        capture_output=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    pending = lake.pending_commit("orders", GOOD_DAY)
    assert pending is not None and pending.run_id != committed.run_id
    before = file_digests(state / "lake")

    code, out, _ = oncall(capsys, "lake-verify", str(GOOD_DAY), "orders")
    assert code == 1
    assert out.splitlines()[2].split()[:3] == ["orders", "PENDING", "COMMIT"]
    assert f"a commit of run {pending.run_id} was left pending" in out
    assert f"`oncall lake-repair {GOOD_DAY} orders` completes it" in out
    code, out, _ = oncall(capsys, "verify", "--assets", "raw_orders", "--partitions", str(GOOD_DAY))
    assert code == 1 and f"  NOT YET  raw orders {GOOD_DAY}: a commit of run {pending.run_id} was left pending" in out
    assert file_digests(state / "lake") == before, "a read-only command wrote to the lake"

    code, out, _ = oncall(capsys, "lake-repair", str(GOOD_DAY), "orders")
    assert code == 0, out
    assert out.splitlines()[0].startswith(f"orders {GOOD_DAY}: completed the commit of run {pending.run_id}")
    assert out.splitlines()[3].split()[:2] == ["orders", "ok"]
    assert lake.pending_commit("orders", GOOD_DAY) is None
    assert lake.peek_manifest("orders", GOOD_DAY).run_id == pending.run_id
    assert lake.verify(lake.peek_manifest("orders", GOOD_DAY)) == []
    code, out, _ = oncall(capsys, "lake-repair", str(GOOD_DAY), "orders")
    assert code == 0 and "completed" not in out, "a second repair found something to do"


def test_source_health_asks_the_source_with_the_pipelines_token(state, demo_source, monkeypatch, capsys):
    code, out, _ = oncall(capsys, "source-health")
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0] == f"shop API {demo_source.url} (credentials: $SHOP_API_TOKEN)"
    assert lines[1].split()[:3] == ["GET", "/health", "200"] and lines[1].endswith(" ok")
    method, page, status = lines[2].split()[:3]
    assert (method, status) == ("GET", "200") and page.startswith("/v1/orders?date=") and page.endswith("&limit=1")
    assert lines[-1] == "verdict: UP"

    demo_source.set_faults(Faults(outage=True))
    code, out, _ = oncall(capsys, "source-health")
    assert code == 1 and out.count("DOWN (HTTP 503)") == 1 and out.endswith("verdict: NOT HEALTHY\n")
    timer = threading.Timer(2.0, demo_source.set_faults, [Faults()])
    timer.start()
    started = time.monotonic()
    code, out, _ = oncall(capsys, "source-health", "--wait", "60")
    timer.join()
    assert code == 0 and out.endswith("verdict: UP\n") and time.monotonic() - started < 30

    monkeypatch.setenv("SHOP_API_TOKEN", "not-the-token")
    code, out, _ = oncall(capsys, "source-health")
    assert code == 1 and "CREDENTIALS REJECTED (HTTP 401" in out and "not-the-token" not in out

    monkeypatch.setenv("SHOP_API_URL", f"http://127.0.0.1:{free_port()}")
    code, out, _ = oncall(capsys, "source-health")
    assert code == 1 and out.count("DOWN (connection refused: nothing listens there)") == 2


@pytest.mark.slow
def test_the_dagster_command_gets_the_pipelines_settings(state, monkeypatch):
    monkeypatch.setenv("SHOP_API_URL", "")
    monkeypatch.delenv("SHOP_API_TOKEN", raising=False)
    export_source_settings()
    assert os.environ["SHOP_API_URL"] == f"http://127.0.0.1:{DEMO_SOURCE_PORT}"
    assert os.environ["SHOP_API_TOKEN"] == DEMO_TOKEN
    monkeypatch.setenv("SHOP_API_URL", "https://shop.example.com")
    monkeypatch.setenv("SHOP_API_TOKEN", TOKEN)
    export_source_settings()
    assert (os.environ["SHOP_API_URL"], os.environ["SHOP_API_TOKEN"]) == ("https://shop.example.com", TOKEN)

    environment = {name: value for name, value in os.environ.items() if name != "DAGSTER_HOME"}
    shown = subprocess.run(
        [sys.executable, "-m", "pipeline_project.ops.oncall", "dagster", "--", "instance", "info"],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert f"$DAGSTER_HOME: {state / 'dagster_home'}" in shown.stdout
    assert "max_runtime_seconds: 3600" in shown.stdout, "not the repository's instance settings"


def test_dbt_results_shows_what_failed_and_what_never_finished(state, tmp_path, monkeypatch, capsys):
    run_id = "4b3c2d1e-0000-4000-8000-000000000000"
    invocation = tmp_path / "target" / f"shop_dbt_assets-{run_id[:7]}-b2c3d4e"
    invocation.mkdir(parents=True)
    results = [
        {"unique_id": "model.shop.stg_orders", "status": "success", "execution_time": 0.4, "message": "OK"},
        {"unique_id": "model.shop.daily_revenue", "status": "error", "execution_time": 1.5, "message": "Binder Error"},
        {"unique_id": "model.shop.web_funnel", "status": "skipped", "execution_time": 0, "message": None},
    ]
    (invocation / "run_results.json").write_text(json.dumps({"results": results}))
    log = [
        {
            "info": {"msg": "Began"},
            "data": {"node_info": {"unique_id": "model.shop.stg_orders", "node_status": "executing"}},
        },
        {
            "info": {"msg": "OK"},
            "data": {"node_info": {"unique_id": "model.shop.stg_orders", "node_status": "success"}},
        },
        {
            "info": {"msg": "Began executing node model.shop.product_performance"},
            "data": {
                "node_info": {
                    "unique_id": "model.shop.product_performance",
                    "node_status": "executing",
                    "node_started_at": "2026-11-21T02:16:00",
                }
            },
        },
    ]
    (invocation / "dbt.log").write_text("plain text line\n" + "\n".join(json.dumps(line) for line in log) + "\n")
    monkeypatch.setenv("DBT_TARGET_PATH", str(tmp_path / "target"))

    code, out, _ = oncall(capsys, "dbt-results", run_id, "--slowest", "1")
    assert code == 0
    lines = out.splitlines()
    assert lines[1] == "status: success 1, error 1, skipped 1"
    assert "  error    model.shop.daily_revenue: Binder Error (after 1.5 s)" in lines
    assert "  skipped  model.shop.web_funnel: " in lines
    assert "  started 2026-11-21T02:16:00 and never finished: model.shop.product_performance" in lines
    assert lines[-1].split() == ["1.5", "model.shop.daily_revenue"]
    assert oncall(capsys, "dbt-results", "5" * 8 + run_id[8:])[0] == 1

    # An interrupted dbt writes no results: what its log says instead.
    (invocation / "run_results.json").unlink()
    interrupted = {
        "unique_id": "model.shop.product_performance",
        "node_status": "error",
        "node_started_at": "2026-11-21T02:16:00",
        "node_finished_at": "2026-11-21T02:16:09.500000",
    }
    with (invocation / "dbt.log").open("a") as dbt_log:
        for message in ("Runtime Error in model product_performance", "Finished running node"):
            dbt_log.write(json.dumps({"info": {"msg": message}, "data": {"node_info": interrupted}}) + "\n")
    code, out, _ = oncall(capsys, "dbt-results", run_id, "--slowest", "1")
    assert code == 0 and "no results written (dbt was interrupted or killed): from dbt's log" in out
    assert "  error    model.shop.product_performance: Runtime Error in model product_performance (after 9.5 s)" in out
    assert "never finished" not in out and out.splitlines()[-1].split() == ["9.5", "model.shop.product_performance"]
