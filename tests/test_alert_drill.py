"""Alerting end to end with the real daemon (the alert drill): a source goes down, the run fails and five
feeds go stale; exactly one alert per incident reaches the loopback webhook, with its runbook. The source
comes back and one recovery notice per incident arrives, each once, although the webhook fails the first
attempts. The figures go to test-artifacts/alert-drill.json."""

import json
from collections import Counter

import pytest

from pipeline_project.dev.alert_drill import run_drill
from pipeline_project.dev.alert_drill_location import FEEDS
from pipeline_project.settings import REPO_ROOT

pytestmark = pytest.mark.slow


def test_an_outage_alerts_once_per_incident_and_recovers_once_through_a_flapping_channel(tmp_path):
    report = run_drill(tmp_path, interval=5, say=lambda line: None)

    alerts = [delivery.alert for delivery in report.alerts]
    assert Counter(alert["kind"] for alert in alerts) == {"freshness_breach": len(FEEDS), "source_unavailable": 1}
    [outage] = [alert for alert in alerts if alert["kind"] == "source_unavailable"]
    assert outage["runbook"] == "runbooks/source-unavailable.md" and "Connection refused" in outage["summary"]
    assert outage["asset"] == ", ".join(FEEDS) and "/runs/" in outage["link"]
    stale = [alert for alert in alerts if alert["kind"] == "freshness_breach"]
    assert sorted(alert["asset"] for alert in stale) == FEEDS
    for alert in stale:
        assert alert["action"] == "trigger" and alert["severity"] == "ERROR"
        assert alert["runbook"] == "runbooks/freshness-breach.md"
        assert alert["owners"] == ["team:data-platform"] and alert["route"] == "data-platform-oncall"
        assert alert["link"] == f"http://127.0.0.1:3000/assets/{alert['asset']}"

    recoveries = [delivery.alert for delivery in report.recoveries]
    assert all(recovery["action"] == "resolve" for recovery in recoveries)
    assert sorted(r["incident_key"] for r in recoveries) == sorted(a["incident_key"] for a in alerts)
    # At this interval the last wait (3 intervals) ends before the feeds' one-minute window runs out again.
    assert not report.later_alerts
    assert report.webhook_attempts == len(alerts) + len(recoveries) + report.failed_attempts_injected
    assert report.duplicates == 0 and report.lost == 0

    artifacts = REPO_ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    (artifacts / "alert-drill.json").write_text(json.dumps(report.to_json(), indent=2) + "\n")
