"""Runbooks proven by drills: for every alert kind, a fault is injected into the shared real stack (`make dev`
of the real code location, its daemon, the demo source), the alert that reaches the loopback webhook is
taken as it is, and the runbook's executable steps run with bash, in order, with only what that alert
carries substituted, until its recovery checks pass and the resolve notice arrives. Each drill then asserts
on the data (the webhook's payloads, the lake, the warehouse) and on what its runbook forbids, and records
the time from the alert to the verified recovery (conftest.py prints them; test-artifacts/drills.json)."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest
from drill_results import record
from drill_stack import SLACK_SECRET as SLACK_SECRET_MARK
from runbook_procedure import Procedure, run_procedure

from pipeline_project.alerting.alert import DIAGNOSE, RERUN, RUNBOOKS, VERIFY, AlertKind
from pipeline_project.dev.runtime import DevRuntime
from pipeline_project.lake.raw_store import Lake
from pipeline_project.ops.wait import wait_until
from pipeline_project.settings import REPO_ROOT

pytestmark = pytest.mark.slow

# A model whose query never ends (a trillion-row cross join DuckDB cannot prune), on one thread; as in
# tests/faults/test_dbt_faults.py. dbt's cancel interrupts it.
ENDLESS_FILTER = "where (select count(*) from range(1000000) a, range(1000000) b where hash(a.range, b.range) = 42) = 0"
SINGLE_THREADED = "{{ config(pre_hook='set threads = 1') }}\n"
# Long enough for the run to reach the model on a 2-core machine (dbt starts 6-10 s after the run).
MAX_RUNTIME_SECONDS = 20


def digests(root: Path, exclude: tuple[str, ...] = ()) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file() and not any(part in str(path) for part in exclude)
    }


def common_alert_checks(stack, alert: dict, kind: AlertKind) -> None:
    assert alert["kind"] == kind.value and alert["action"] == "trigger"
    assert alert["runbook"] == RUNBOOKS[kind]
    for name in (DIAGNOSE, RERUN, VERIFY):
        assert alert["details"][name], f"the alert carries no {name} command"
    if alert["link"]:
        # The UI actually in use (make dev on a free port), not a default.
        assert alert["link"].startswith(stack.runtime.webserver_url + "/")
        assert stack.runtime.webserver_url.endswith(f":{stack.env['DAGSTER_PORT']}")
    assert "__ASSET_JOB" not in alert["title"], "an internal job name in the title"


def drill(stack, name: str, kind: AlertKind, alert_request, fault_at: float, fix=None, fix_delay=0.0) -> Procedure:
    """Follow the runbook of `kind` for the alert, then wait for its resolve notice; record the timings."""
    alert = alert_request.json()
    common_alert_checks(stack, alert, kind)
    procedure = run_procedure(REPO_ROOT / RUNBOOKS[kind], alert, stack.env, fix, fix_delay)
    verified_at = time.time()
    notice = stack.resolve_notice(alert["incident_key"])
    assert notice.json()["kind"] == kind.value
    for secret in stack.secrets:
        assert secret not in procedure.output, "a runbook command printed a secret"
    record(
        name,
        alert_to_recovery_seconds=round(max(verified_at, notice.received_at) - alert_request.received_at, 1),
        fault_to_alert_seconds=round(alert_request.received_at - fault_at, 1),
        steps=len(procedure.executed),
        runbook_seconds=round(sum(item.seconds for item in procedure.executed), 1),
        runbook_cpu_seconds=round(procedure.cpu_seconds, 1),
        incident=alert["incident_key"],
    )
    return procedure


def alert_iso(alert: dict) -> str:
    return datetime.fromtimestamp(alert["occurred_at"], UTC).isoformat(timespec="seconds")


def warehouse_rows(stack, query: str) -> list[tuple]:
    with duckdb.connect(str(stack.state / "warehouse.duckdb"), read_only=True) as connection:
        return connection.execute(query).fetchall()


def test_make_dev_restarts_a_dead_demo_source_and_reports_it(stack):
    before = DevRuntime.read(stack.state)
    os.kill(before.source_pid, signal.SIGKILL)
    after = wait_until(
        lambda: (runtime := DevRuntime.read(stack.state)).source_restarts == before.source_restarts + 1 and runtime,
        30,
        "make dev restarted the demo source",
    )
    assert after.source_url == before.source_url and after.source_pid != before.source_pid
    assert after.source_last_exit == "killed by SIGKILL"
    assert f"restarted the demo source at {before.source_url}" in stack.log()
    health = subprocess.run(["oncall", "source-health"], env=stack.env, capture_output=True, text=True, timeout=60)
    assert health.returncode == 0, health.stdout + health.stderr
    assert "make dev restarted the demo source 1 time(s)" in health.stdout and "verdict: UP" in health.stdout


def test_source_unavailable(stack):
    lake = Lake(stack.state / "lake")
    untouched = digests(stack.state / "lake", exclude=("orders/", "payments/"))
    stack.set_faults(outage=True)
    fault_at = time.time()
    failed_run = stack.launch("__ASSET_JOB", ["raw_orders", "raw_payments"])
    request = stack.alert_of_run("source_unavailable", failed_run)
    alert = request.json()
    assert alert["title"] == f"ad-hoc materialization [{stack.day}] failed: raw_orders, raw_payments"
    assert (alert["job"], alert["assets"], alert["partitions"]) == (
        "__ASSET_JOB",
        ["raw_orders", "raw_payments"],
        [stack.day],
    )
    root_cause = alert["summary"].split("Root cause: ", 1)[1]
    assert root_cause.startswith("GET /v1/") and "HTTP 503" in root_cause, root_cause
    assert "circuit open" not in root_cause
    assert alert["details"][RERUN] == (
        f"oncall rerun --job __ASSET_JOB --assets raw_orders,raw_payments --partitions {stack.day}"
    )

    drill(stack, "source_unavailable", AlertKind.SOURCE_UNAVAILABLE, request, fault_at, stack.set_faults, fix_delay=3)

    for table in ("orders", "payments"):
        manifest = lake.peek_manifest(table, stack.day_date)
        assert manifest.reconciled and manifest.run_id != failed_run and manifest.committed_at > alert_iso(alert)
    assert digests(stack.state / "lake", exclude=("orders/", "payments/")) == untouched


def test_schema_drift(stack):
    lake = Lake(stack.state / "lake")
    before = lake.peek_manifest("orders", stack.day_date)
    stack.set_faults(schema_drift={"orders": {"rename": {"customer_id": "customer_ref"}}})
    fault_at = time.time()
    # The daily job for one table and day, as a backfill from the UI launches it (the whole graph would build
    # every model twice here; a failure of the whole job is tested in tests/test_alert_runbooks.py).
    failed_run = stack.launch("shop_pipeline", ["raw_orders"])
    request = stack.alert_of_run("schema_drift", failed_run)
    alert = request.json()
    assert alert["title"] == f"shop_pipeline [{stack.day}] failed: raw_orders"
    assert (alert["job"], alert["assets"], alert["partitions"]) == ("shop_pipeline", ["raw_orders"], [stack.day])
    assert "breaking schema drift" in alert["summary"] and "customer_ref" in alert["summary"]
    assert lake.peek_manifest("orders", stack.day_date) == before, "breaking drift wrote the partition"

    drill(stack, "schema_drift", AlertKind.SCHEMA_DRIFT, request, fault_at, stack.set_faults)

    after = lake.peek_manifest("orders", stack.day_date)
    assert after.reconciled and after.run_id != before.run_id and after.schema_drift["renamed"] == []
    data = lake.data_path("orders", stack.day_date)
    columns = {name for (name, *_) in warehouse_rows(stack, f"describe select * from read_parquet('{data}')")}
    assert "customer_id" in columns and "customer_ref" not in columns


def test_transformation_failure(stack):
    with stack.model_changed("marts/daily_revenue.sql", "ref('int_order_totals')", "ref('nope')") as revert:
        before = warehouse_rows(stack, "select * from marts.daily_revenue order by order_date")
        fault_at = time.time()
        # The dbt assets are daily-partitioned: an ad-hoc materialization names its day, as in the UI.
        failed_run = stack.launch("__ASSET_JOB", ["daily_revenue"])
        request = stack.alert_of_run("transformation_failed", failed_run)
        alert = request.json()
        assert alert["title"] == f"ad-hoc materialization [{stack.day}] failed: daily_revenue"
        assert alert["severity"] == "ERROR"
        assert "Root cause: dbt build failed: " in alert["summary"] and "'nope'" in alert["summary"]
        assert (alert["assets"], alert["partitions"]) == (["daily_revenue"], [stack.day])
        assert warehouse_rows(stack, "select * from marts.daily_revenue order by order_date") == before

        drill(stack, "transformation_failure", AlertKind.TRANSFORMATION_FAILED, request, fault_at, revert)

    assert warehouse_rows(stack, "select * from marts.daily_revenue order by order_date") == before


def test_transformation_timeout(stack):
    heavy = (
        "    from orders\n    group by order_date",
        f"    from orders\n    {ENDLESS_FILTER}\n    group by order_date",
    )
    with stack.model_changed("marts/daily_revenue.sql", *heavy, prepend=SINGLE_THREADED) as revert:
        before = warehouse_rows(stack, "select * from marts.daily_revenue order by order_date")
        fault_at = time.time()
        failed_run = stack.launch(
            "__ASSET_JOB", ["daily_revenue"], tags={"dagster/max_runtime": str(MAX_RUNTIME_SECONDS)}
        )
        request = stack.alert_of_run("transformation_timeout", failed_run)
        alert = request.json()
        assert f"Exceeded maximum runtime of {MAX_RUNTIME_SECONDS} seconds" in alert["summary"]
        assert alert["assets"] == ["daily_revenue"]

        procedure = drill(stack, "transformation_timeout", AlertKind.TRANSFORMATION_TIMEOUT, request, fault_at, revert)

    # The runbook's checks named the model that was running when the run was stopped, or, when the run was
    # stopped before dbt reached it (a machine so busy that dbt took the whole runtime to start), said that.
    [dbt_log] = (stack.dbt_project / "target").glob(f"shop_dbt_assets-{failed_run[:7]}-*/dbt.log")
    if "Began executing node model.shop.daily_revenue" in dbt_log.read_text():
        named = r"(error +model\.shop\.daily_revenue: .*INTERRUPT|never finished: model\.shop\.daily_revenue)"
        assert re.search(named, procedure.output)
    else:
        assert "no results written (dbt was interrupted or killed)" in procedure.output
    assert warehouse_rows(stack, "select * from marts.daily_revenue order by order_date") == before
    assert not warehouse_rows(
        stack, "select table_name from information_schema.tables where contains(table_name, '__dbt_tmp')"
    )


def test_check_failure(stack):
    # A model change subtracts a fee the definition of net revenue does not have.
    fee = ("'gross_revenue_cents - refunded_revenue_cents'", "'gross_revenue_cents - refunded_revenue_cents - 100'")
    with stack.model_changed("marts/daily_revenue.sql", *fee) as revert:
        fault_at = time.time()
        failed_run = stack.launch("__ASSET_JOB", ["daily_revenue"])
        request = stack.wait_alert(
            lambda alert: (
                alert["action"] == "trigger"
                and alert["kind"] == "check_failed"
                and alert["asset"] == "daily_revenue"
                and alert["severity"] == "ERROR"
                and (alert["link"] or "").endswith(failed_run)
            ),
            f"an ERROR check_failed alert on daily_revenue from run {failed_run}",
        )
        alert = request.json()
        assert alert["assets"] == ["daily_revenue"] and alert["details"]["check"] in alert["details"][VERIFY]

        drill(stack, "check_failure", AlertKind.CHECK_FAILED, request, fault_at, revert)

    [(wrong,)] = warehouse_rows(
        stack, "select count(*) from marts.daily_revenue where net_revenue <> gross_revenue - refunded_revenue"
    )
    assert wrong == 0


def test_freshness_breach(stack):
    fault_at = time.time()
    stack.age_last_materialization("daily_revenue", hours=30)
    request = stack.wait_alert(
        lambda alert: (
            alert["action"] == "trigger" and alert["kind"] == "freshness_breach" and alert["asset"] == "daily_revenue"
        ),
        "a freshness_breach alert on daily_revenue",
    )
    alert = request.json()
    assert alert["severity"] == "ERROR" and alert["title"] == "daily_revenue is stale (FAIL)"
    # Fresh again only with new inputs: the mart and everything upstream of it, for the day that should be there.
    assert {"raw_orders", "raw_order_items", "int_order_totals", "daily_revenue"} <= set(alert["assets"])
    assert alert["partitions"] == [stack.day]

    drill(stack, "freshness_breach", AlertKind.FRESHNESS_BREACH, request, fault_at)

    assert Lake(stack.state / "lake").peek_manifest("orders", stack.day_date).committed_at > alert_iso(alert)


def test_alert_delivery_failing(stack):
    stack.slack.set_status(403)  # the Slack app was removed: every post is rejected
    fault_at = time.time()
    stack.set_faults(malformed_body="html")  # any alert will do: a maintenance page fails a run at once
    failed_run = stack.launch("__ASSET_JOB", ["raw_customers"])
    trigger = stack.alert_of_run("source_unavailable", failed_run)
    stack.set_faults()
    request = stack.wait_alert(
        lambda alert: (
            alert["action"] == "trigger"
            and alert["kind"] == "alert_delivery_failing"
            and alert["details"]["channel"] == "slack"
        ),
        "an alert_delivery_failing alert about slack",
    )
    alert = request.json()
    assert trigger.json()["dedup_key"] in alert["summary"] and "HTTP 403" in alert["summary"]
    assert SLACK_SECRET_MARK not in alert["summary"]

    drill(
        stack,
        "alert_delivery_failing",
        AlertKind.ALERT_DELIVERY_FAILING,
        request,
        fault_at,
        lambda: stack.slack.set_status(None),
    )

    delivered = [r.json().get("text", "") for r in stack.slack.received]
    assert sum(trigger.json()["title"] in text for text in delivered) == 1, "the backlog reached Slack once"
