"""The monitoring sensors on a real instance, a real outbox and real loopback receivers: each incident
alerts once, escalates once, recovers once; a failing channel gets every alert once it recovers; routing
follows the SLA catalogue; the heartbeat shows the delivery loop is alive."""

import json
import time

import dagster as dg
import pytest
from dagster._core.definitions.freshness import FreshnessState, FreshnessStateChange

from pipeline_project.alerting.alert import RUNBOOKS, AlertKind
from pipeline_project.alerting.delivery import deliver_due
from pipeline_project.alerting.resource import AlertingResource
from pipeline_project.alerting.run_subjects import RANGE_END_TAG, RANGE_START_TAG, run_subject, subjects_resolved_by
from pipeline_project.alerting.sensors import alert_delivery, check_alerts, freshness_alerts, run_alerts
from pipeline_project.definitions import defs
from pipeline_project.ops.heartbeat import main as heartbeat_main

from receivers import WebhookReceiver

WEBSERVER = "http://127.0.0.1:3000"
CANARY = "CANARY-alert-7f1c2d"


@pytest.fixture
def webhook():
    with WebhookReceiver() as receiver:
        yield receiver


@pytest.fixture
def pagerduty():
    with WebhookReceiver() as receiver:
        receiver.status_code = 202
        yield receiver


@pytest.fixture
def alerting(tmp_path, webhook, pagerduty) -> AlertingResource:
    return AlertingResource(
        directory=str(tmp_path / "alerts"),
        webserver_url=WEBSERVER,
        webhook_url=f"{webhook.url}/hook/{CANARY}",
        pagerduty_routing_key=f"routing-{CANARY}",
        pagerduty_events_url=f"{pagerduty.url}/v2/enqueue",
        retry_base_seconds=0.0,
    )


def _tick(sensor, instance, alerting, cursor=None):
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, definitions=defs, resources={"alerting": alerting}
    )
    result = sensor(context)
    return context.cursor, result.skip_message if isinstance(result, dg.SkipReason) else result


def _freshness(instance, key, previous, new):
    instance.report_runless_asset_event(
        FreshnessStateChange(
            key=dg.AssetKey(key), previous_state=previous, new_state=new, state_change_timestamp=time.time()
        )
    )


def _payloads(receiver):
    return [request.json() for request in receiver.received]


def test_a_stale_mart_alerts_once_escalates_once_and_recovers_once(instance, alerting, webhook, pagerduty):
    _freshness(instance, "daily_revenue", FreshnessState.PASS, FreshnessState.WARN)
    cursor, message = _tick(freshness_alerts, instance, alerting)
    assert "1 alert(s) queued" in message
    [warn] = _payloads(webhook)
    assert warn["kind"] == "freshness_breach" and warn["action"] == "trigger" and warn["severity"] == "WARN"
    assert warn["asset"] == "daily_revenue"
    assert warn["runbook"] == RUNBOOKS[AlertKind.FRESHNESS_BREACH]
    assert warn["link"] == f"{WEBSERVER}/assets/daily_revenue"
    assert warn["route"] == "analytics-engineering-oncall" and warn["owners"] == ["team:analytics-engineering"]
    assert pagerduty.received == [], "a WARN notifies; it does not page"

    # Re-reading the same event (a crash before the cursor moved) and a repeated WARN change nothing.
    _tick(freshness_alerts, instance, alerting, cursor=None)
    _freshness(instance, "daily_revenue", FreshnessState.PASS, FreshnessState.WARN)
    cursor, _ = _tick(freshness_alerts, instance, alerting, cursor)
    assert len(webhook.received) == 1

    _freshness(instance, "daily_revenue", FreshnessState.WARN, FreshnessState.FAIL)
    cursor, _ = _tick(freshness_alerts, instance, alerting, cursor)
    _freshness(instance, "daily_revenue", FreshnessState.FAIL, FreshnessState.PASS)
    _tick(freshness_alerts, instance, alerting, cursor)

    assert len(webhook.received) == 3
    _, fail, recovery = _payloads(webhook)
    assert fail["severity"] == "ERROR" and fail["action"] == "trigger"
    assert recovery["action"] == "resolve" and recovery["asset"] == "daily_revenue"
    assert recovery["runbook"] == RUNBOOKS[AlertKind.FRESHNESS_BREACH]
    assert warn["incident_key"] == fail["incident_key"] == recovery["incident_key"]
    assert len({warn["dedup_key"], fail["dedup_key"], recovery["dedup_key"]}) == 3

    # ERROR paged PagerDuty; the recovery resolved the same PagerDuty incident.
    events = _payloads(pagerduty)
    assert [event["event_action"] for event in events] == ["trigger", "resolve"]
    assert {event["dedup_key"] for event in events} == {warn["incident_key"]}
    for request in webhook.received:
        assert CANARY not in request.body.decode()
    for event in events:  # the routing key is PagerDuty's credential; it belongs in that field only
        assert event.pop("routing_key") == f"routing-{CANARY}" and CANARY not in json.dumps(event)


def test_failed_checks_alert_by_severity_with_rule_counts_and_sample(instance, alerting, webhook, pagerduty):
    def evaluate(check, passed, severity, metadata=None):
        instance.report_runless_asset_event(
            dg.AssetCheckEvaluation(
                asset_key=dg.AssetKey("daily_revenue"),
                check_name=check,
                passed=passed,
                severity=severity,
                metadata=metadata or {},
            )
        )

    sample = "| row | rule | value |\n|---|---|---|\n| 0 | table:net_is_gross_minus_refunds | False |"
    evaluate(
        "contract_errors",
        False,
        dg.AssetCheckSeverity.ERROR,
        {"rows_checked": 2, "fail/table:net_is_gross_minus_refunds": 1, "sample": dg.MetadataValue.md(sample)},
    )
    evaluate("contract_warnings", False, dg.AssetCheckSeverity.WARN, {"fail/average_order_value:lte": 1})
    evaluate("contract_errors", False, dg.AssetCheckSeverity.ERROR, {"fail/table:net_is_gross_minus_refunds": 1})
    cursor, _ = _tick(check_alerts, instance, alerting)

    error, warning = _payloads(webhook)
    assert error["kind"] == "check_failed" and error["severity"] == "ERROR"
    assert error["details"]["fail/table:net_is_gross_minus_refunds"] == 1 and error["details"]["rows_checked"] == 2
    assert "net_is_gross_minus_refunds" in error["summary"] and "Sample" in error["summary"]
    assert error["runbook"] == RUNBOOKS[AlertKind.CHECK_FAILED]
    assert warning["severity"] == "WARN" and warning["details"]["check"] == "contract_warnings"
    assert [event["payload"]["severity"] for event in _payloads(pagerduty)] == ["critical"]

    evaluate("contract_errors", True, dg.AssetCheckSeverity.ERROR)
    _tick(check_alerts, instance, alerting, cursor)
    recovery = _payloads(webhook)[-1]
    assert len(webhook.received) == 3
    assert recovery["action"] == "resolve" and recovery["incident_key"] == error["incident_key"]
    assert [event["event_action"] for event in _payloads(pagerduty)] == ["trigger", "resolve"]


@dg.asset(partitions_def=dg.StaticPartitionsDefinition(["2026-03-14"]))
def flaky_feed(context: dg.AssetExecutionContext) -> None:
    if context.run.tags.get("fail") == "yes":
        raise RuntimeError(f"upstream refused the request with token {CANARY}")


@dg.asset(check_specs=[dg.AssetCheckSpec("totals_add_up", asset="guarded_mart", blocking=True)])
def guarded_mart():
    yield dg.MaterializeResult(check_results=[dg.AssetCheckResult(check_name="totals_add_up", passed=False)])


def test_a_run_stopped_by_a_blocking_check_alerts_as_that_check_only(instance, alerting, webhook):
    result = dg.materialize([guarded_mart], instance=instance, raise_on_error=False)
    assert not result.success
    _tick(run_alerts, instance, alerting)
    assert webhook.received == []
    check_defs = dg.Definitions(assets=[guarded_mart])
    context = dg.build_sensor_context(instance=instance, definitions=check_defs, resources={"alerting": alerting})
    check_alerts(context)
    [alert] = _payloads(webhook)
    assert alert["kind"] == "check_failed" and alert["details"]["check"] == "totals_add_up"


def _run(instance, fail: bool, retry: bool = False):
    result = dg.materialize(
        [flaky_feed],
        instance=instance,
        partition_key="2026-03-14",
        # As in dagster.yaml: a run is re-executed after a crash, not after a failed step, unless asked to.
        tags={"fail": "yes" if fail else "no", "dagster/retry_on_asset_or_op_failure": str(retry).lower()},
        raise_on_error=False,
    )
    return result


def test_run_failures_alert_once_unless_the_run_will_be_retried(alerting, webhook, monkeypatch):
    monkeypatch.setenv("SHOP_API_TOKEN", CANARY)
    with dg.instance_for_test(overrides={"run_retries": {"enabled": True, "max_retries": 1}}) as instance:
        _run_failures_alert_once(instance, alerting, webhook)


def _run_failures_alert_once(instance, alerting, webhook):
    retried = _run(instance, fail=True, retry=True)
    cursor, message = _tick(run_alerts, instance, alerting)
    assert not retried.success and retried.dagster_run.tags["dagster/will_retry"] == "true"
    assert webhook.received == [], message

    failed = _run(instance, fail=True)
    _run(instance, fail=True)
    cursor, _ = _tick(run_alerts, instance, alerting, cursor)
    [alert] = _payloads(webhook)
    assert alert["kind"] == "transformation_failed" and alert["partition"] == "2026-03-14"
    assert alert["asset"] == "flaky_feed"
    assert "RuntimeError: upstream refused the request with token ***" in alert["summary"]
    assert CANARY not in webhook.received[0].body.decode()
    assert alert["link"] == f"{WEBSERVER}/runs/{failed.run_id}"

    _run(instance, fail=False)
    _tick(run_alerts, instance, alerting, cursor)
    recovery = _payloads(webhook)[-1]
    assert len(webhook.received) == 2
    assert recovery["action"] == "resolve" and recovery["incident_key"] == alert["incident_key"]


def test_a_flapping_channel_gets_each_alert_exactly_once_and_the_log_keeps_it_meanwhile(
    instance, alerting, webhook, pagerduty
):
    webhook.fail_next(4, status=503)
    _freshness(instance, "raw_orders", FreshnessState.PASS, FreshnessState.FAIL)
    _tick(freshness_alerts, instance, alerting)
    for _ in range(6):
        _tick(alert_delivery, instance, alerting)

    assert webhook.attempts == 5
    [alert] = _payloads(webhook)
    assert alert["asset"] == "raw_orders" and alert["severity"] == "ERROR"
    assert [event["event_action"] for event in _payloads(pagerduty)] == ["trigger", "trigger", "resolve"]
    trigger, failing, recovered = _payloads(pagerduty)
    assert failing["payload"]["class"] == "alert_delivery_failing"
    assert trigger["payload"]["component"] == "raw_orders"
    assert recovered["dedup_key"] == failing["dedup_key"]

    logged = [json.loads(line) for line in (alerting.path / "alerts.log").read_text().splitlines()]
    assert alert["dedup_key"] in [entry["dedup_key"] for entry in logged], "the fallback log has the alert"
    rows = alerting.outbox().deliveries()
    assert all(row["delivered_at"] for row in rows)
    assert {row["dedup_key"]: row["attempts"] for row in rows if row["channel"] == "webhook"}[alert["dedup_key"]] == 5


def test_an_unreachable_channel_keeps_its_alerts_pending_across_restarts(instance, alerting, webhook):
    webhook.set_status(500)
    _freshness(instance, "raw_orders", FreshnessState.PASS, FreshnessState.FAIL)
    _tick(freshness_alerts, instance, alerting)
    _tick(alert_delivery, instance, alerting)
    restarted = AlertingResource(**{**alerting.model_dump(), "retry_base_seconds": 0.0})
    assert restarted.outbox().pending_count() == 1
    webhook.set_status(None)
    report = deliver_due(restarted.outbox(), restarted.channels())
    assert len(report.delivered) == 1 and len(webhook.received) == 1
    assert deliver_due(restarted.outbox(), restarted.channels()).delivered == []


def test_the_heartbeat_shows_whether_the_delivery_loop_is_alive(instance, alerting, capsys):
    heartbeat = alerting.heartbeat_path
    assert heartbeat_main(["--path", str(heartbeat)]) == 1
    assert "never ticked" in capsys.readouterr().err
    _tick(alert_delivery, instance, alerting)
    assert heartbeat_main(["--path", str(heartbeat), "--max-age-seconds", "60"]) == 0
    beat = json.loads(heartbeat.read_text())
    beat["ticked_at"] -= 600
    heartbeat.write_text(json.dumps(beat))
    assert heartbeat_main(["--path", str(heartbeat), "--max-age-seconds", "300"]) == 1
    assert "monitoring is not running" in capsys.readouterr().err


def test_a_failed_range_is_resolved_only_by_a_success_that_covers_it():
    def run(**tags):
        return dg.DagsterRun(job_name="shop_pipeline", run_id="r", tags=tags)

    failed_range = run_subject("shop_pipeline", "2026-03-13..2026-03-15")
    failed_day = run_subject("shop_pipeline", "2026-03-14")
    other_job = run_subject("asset_checks", None)
    open_subjects = [failed_range, failed_day, other_job]

    one_day = run(**{"dagster/partition": "2026-03-14"})
    assert subjects_resolved_by(one_day, open_subjects) == [failed_day]
    next_lookback = run(**{RANGE_START_TAG: "2026-03-14", RANGE_END_TAG: "2026-03-16"})
    assert subjects_resolved_by(next_lookback, open_subjects) == [failed_day]
    rerun = run(**{RANGE_START_TAG: "2026-03-13", RANGE_END_TAG: "2026-03-15"})
    assert subjects_resolved_by(rerun, open_subjects) == [failed_range, failed_day]
    assert subjects_resolved_by(dg.DagsterRun(job_name="asset_checks", run_id="c"), open_subjects) == [other_job]


@dg.asset(check_specs=[dg.AssetCheckSpec("totals_add_up", asset="stopped_mart", blocking=True)])
def stopped_mart(context: dg.AssetExecutionContext):
    if context.run.tags.get("stop") == "yes":
        raise RuntimeError("the run was stopped before the check was evaluated")
    return dg.MaterializeResult(check_results=[dg.AssetCheckResult(check_name="totals_add_up", passed=False)])


def test_a_check_planned_by_a_run_that_ended_does_not_hold_back_the_next_failure(instance, alerting, webhook):
    """A run stopped mid-build (a timeout) leaves its checks planned forever; the next failing evaluation of
    the same check alerts at once, not an hour later."""
    stopped = dg.materialize([stopped_mart], instance=instance, tags={"stop": "yes"}, raise_on_error=False)
    assert not stopped.success
    failing = dg.materialize([stopped_mart], instance=instance, raise_on_error=False)
    assert not failing.success
    context = dg.build_sensor_context(
        instance=instance, definitions=dg.Definitions(assets=[stopped_mart]), resources={"alerting": alerting}
    )
    check_alerts(context)
    [alert] = _payloads(webhook)
    assert alert["kind"] == "check_failed" and alert["details"]["check"] == "totals_add_up"
    assert alert["link"].endswith(failing.run_id)
