"""Alert delivery at its edges, against a real outbox and real loopback receivers: the fallback log is written
before a delivery counts as fallen back (a log that cannot be written loses nothing), claims are fenced (a
stale claim marks nothing, one sender at a time, a send never outlasts its claim), and a sender SIGKILLed
between the send and the mark makes the next sender send again with the same idempotency key: at least once,
never silently lost, deduplicable where the channel has a key."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest

from pipeline_project.alerting.alert import RUNBOOKS, Action, Alert, AlertKind, Severity
from pipeline_project.alerting.channels import SEND_DEADLINE_SECONDS, DeliveryError, configured_channels
from pipeline_project.alerting.channels.email import EmailChannel
from pipeline_project.alerting.channels.webhook import WebhookChannel
from pipeline_project.alerting.delivery import deliver_due
from pipeline_project.alerting.outbox import DeliveryPolicy, Outbox, Signal
from pipeline_project.fault_points import SETTING
from pipeline_project.ops.wait import wait_until

from receivers import SmtpReceiver, WebhookReceiver


def alert(number: int = 0) -> Alert:
    return Alert(
        dedup_key="",
        incident_key="",
        kind=AlertKind.FRESHNESS_BREACH,
        action=Action.TRIGGER,
        severity=Severity.ERROR,
        title=f"feed_{number} is stale",
        summary=f"feed_{number} was last materialized 26 hours ago",
        runbook=RUNBOOKS[AlertKind.FRESHNESS_BREACH],
        asset=f"feed_{number}",
        occurred_at=1773532800.0,
    )


def policy(send_deadline_seconds: float = SEND_DEADLINE_SECONDS, **tuning) -> DeliveryPolicy:
    return DeliveryPolicy(base_backoff_seconds=0.0, send_deadline_seconds=send_deadline_seconds, **tuning)


def queue(outbox: Outbox, channels: list[str], count: int = 1) -> list[str]:
    keys = []
    for number in range(count):
        queued = outbox.record(Signal(f"freshness:feed_{number}", True, number, alert(number)), channels)
        keys.append(queued.dedup_key)
    return keys


def row(outbox: Outbox, dedup_key: str, channel: str) -> dict:
    (found,) = [r for r in outbox.deliveries() if r["dedup_key"] == dedup_key and r["channel"] == channel]
    return found


def tolerant(outbox: Outbox, channels: dict) -> Exception | None:
    """One delivery pass; what it raised, if anything (asserted on after the data)."""
    try:
        deliver_due(outbox, channels)
    except Exception as error:  # the test asserts on it, after the data
        return error
    return None


# ------------------------------------------------------------------------ fallback written before marked


def test_a_fallback_log_that_cannot_be_written_loses_nothing(tmp_path):
    """Before: the delivery was marked fallen back (and, past its age limit, given up) before the log write,
    which then failed: the alert was neither delivered nor logged, and never tried again."""
    alert_dir = tmp_path / "alerts"
    log_path = alert_dir / "alerts.log"
    log_path.mkdir(parents=True)  # a directory where the log file should be: every append fails
    (log_path / "keep").write_text("")
    outbox = Outbox(alert_dir / "outbox.sqlite", policy(fallback_after_attempts=1, give_up_after_seconds=0.0))
    with WebhookReceiver() as webhook:
        webhook.set_status(503)
        channels = configured_channels({"ALERT_WEBHOOK_URL": f"{webhook.url}/hook", "ALERT_LOG_PATH": str(log_path)})
        (key,) = queue(outbox, ["webhook"])

        raised = tolerant(outbox, channels)

        pending = row(outbox, key, "webhook")
        assert pending["delivered_at"] is None and pending["fell_back_at"] is None and pending["expired_at"] is None
        assert outbox.pending_count() >= 1, "neither the channel nor the log has it: it must stay pending"
        assert raised is None, f"a failing fallback log must not break the delivery loop: {raised!r}"

        # The log can be written again; the channel still fails: the next attempt writes the log, and only
        # now is the delivery marked as fallen back (and, being past its age limit, given up on the channel).
        shutil.rmtree(log_path)
        deliver_due(outbox, channels)

    logged = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert [entry["dedup_key"] for entry in logged].count(key) == 1
    done = row(outbox, key, "webhook")
    assert done["fell_back_at"] is not None and done["expired_at"] is not None
    assert webhook.received == []


def test_while_the_log_cannot_be_written_the_alert_waits_for_its_channel(tmp_path):
    alert_dir = tmp_path / "alerts"
    (alert_dir / "alerts.log").mkdir(parents=True)
    outbox = Outbox(alert_dir / "outbox.sqlite", policy(fallback_after_attempts=1))
    with WebhookReceiver() as webhook:
        webhook.fail_next(3, status=503)
        settings = {"ALERT_WEBHOOK_URL": f"{webhook.url}/hook", "ALERT_LOG_PATH": str(alert_dir / "alerts.log")}
        channels = configured_channels(settings)
        (key,) = queue(outbox, ["webhook"])
        for _ in range(3):
            assert tolerant(outbox, channels) is None
            waiting = row(outbox, key, "webhook")
            assert waiting["delivered_at"] is None and waiting["fell_back_at"] is None
        assert tolerant(outbox, channels) is None
        (received,) = webhook.received

    assert received.headers["Idempotency-Key"] == key
    delivered = row(outbox, key, "webhook")
    assert delivered["delivered_at"] is not None and delivered["attempts"] == 4


# ------------------------------------------------------------------------------------------- fencing


def test_a_claim_that_expired_and_was_taken_over_marks_nothing(tmp_path):
    outbox = Outbox(tmp_path / "outbox.sqlite", policy(send_deadline_seconds=0.1))
    (key,) = queue(outbox, ["webhook"])
    (stale,) = outbox.claim_due()
    time.sleep(outbox.policy.claim_seconds + 0.05)
    (current,) = outbox.claim_due()
    assert current.claim_token != stale.claim_token

    assert outbox.mark_delivered(stale) is False
    assert outbox.mark_failed(stale, "HTTP 503 seen late") == "lost_claim"
    untouched = row(outbox, key, "webhook")
    assert untouched["delivered_at"] is None and untouched["attempts"] == 0 and untouched["last_error"] is None

    assert outbox.mark_delivered(current) is True
    assert outbox.mark_delivered(current) is False, "a claim is used up once it is marked"
    done = row(outbox, key, "webhook")
    assert done["delivered_at"] is not None and done["attempts"] == 1


def test_two_senders_at_once_send_each_alert_once(tmp_path):
    """Before: a sender claimed its whole batch at once, so claims at the end of a slow batch expired before
    their turn; the other sender took them over and both sent them."""
    path = tmp_path / "outbox.sqlite"
    alerts, deadline = 30, 1.0
    with WebhookReceiver() as webhook:
        webhook.set_delay(0.1)  # 30 sends take 3 s or more, longer than one claim (2 x 1 s), each far within 1 s
        channels = configured_channels({"ALERT_WEBHOOK_URL": f"{webhook.url}/hook"})
        keys = queue(Outbox(path, policy(send_deadline_seconds=deadline)), ["webhook"], count=alerts)
        errors: list[BaseException] = []

        def sender() -> None:
            outbox = Outbox(path, policy(send_deadline_seconds=deadline))  # a connection of its own
            give_up_at = time.monotonic() + 30
            try:
                while outbox.pending_count() and time.monotonic() < give_up_at:
                    deliver_due(outbox, channels)
                    time.sleep(0.01)
            except BaseException as error:
                errors.append(error)

        threads = [threading.Thread(target=sender) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        sent = Counter(request.headers["Idempotency-Key"] for request in webhook.received)

    assert not errors
    assert sent == Counter(dict.fromkeys(keys, 1)), f"sent more than once: {[k for k, n in sent.items() if n > 1]}"
    assert all(r["delivered_at"] for r in Outbox(path).deliveries())


def test_a_send_never_outlasts_its_deadline_so_its_claim_is_never_lost(tmp_path):
    with WebhookReceiver() as webhook:
        webhook.set_delay(3.0)
        outbox = Outbox(tmp_path / "outbox.sqlite", policy(send_deadline_seconds=0.5))
        channels = configured_channels({"ALERT_WEBHOOK_URL": f"{webhook.url}/hook"})
        (key,) = queue(outbox, ["webhook"])
        started = time.monotonic()
        report = deliver_due(outbox, channels)
        elapsed = time.monotonic() - started

    assert elapsed < 0.5 + 1.5, "the send was not cut off at its deadline (the receiver holds it 3 s)"
    assert report.failed == [f"{key} -> webhook"] and report.lost_claims == []
    failed = row(outbox, key, "webhook")
    assert "within the send deadline of 0.5 s" in failed["last_error"] and failed["attempts"] == 1
    assert DeliveryPolicy().claim_seconds == 2 * SEND_DEADLINE_SECONDS > SEND_DEADLINE_SECONDS


def test_each_channel_is_cut_off_at_the_send_deadline_whatever_its_own_timeouts():
    with WebhookReceiver() as webhook:
        webhook.set_delay(5.0)
        started = time.monotonic()
        with pytest.raises(DeliveryError, match="within the send deadline of 0.4 s") as http:
            WebhookChannel(f"{webhook.url}/hook", read_timeout=60).send(alert(), deadline_seconds=0.4)
        http_elapsed = time.monotonic() - started
    with SmtpReceiver() as smtp:
        smtp.set_delay(5.0)
        channel = EmailChannel(smtp.host, smtp.port, "alerts@example.com", ["oncall@example.com"], security="none")
        started = time.monotonic()
        with pytest.raises(DeliveryError, match="within the send deadline of 0.4 s") as mail:
            channel.send(alert(), deadline_seconds=0.4)
        mail_elapsed = time.monotonic() - started
    assert http.value.retryable and mail.value.retryable
    assert http_elapsed < 0.4 + 1.5 and mail_elapsed < 0.4 + 1.5, (http_elapsed, mail_elapsed)  # not 5 s or 60 s


# ------------------------------------------------------------------------ a crash between send and mark

SENDER_THAT_DIES = """
import json, sys
from pipeline_project.alerting.channels import configured_channels
from pipeline_project.alerting.delivery import deliver_due
from pipeline_project.alerting.outbox import DeliveryPolicy, Outbox
outbox = Outbox(sys.argv[1], DeliveryPolicy(base_backoff_seconds=0.0, send_deadline_seconds=float(sys.argv[3])))
deliver_due(outbox, configured_channels(json.loads(sys.argv[2])))
"""
CRASH_DEADLINE = 1.0


@pytest.mark.slow
@pytest.mark.parametrize("channel", ["webhook", "pagerduty", "slack"])
def test_a_sender_killed_between_send_and_mark_is_followed_by_a_resend_with_the_same_key(tmp_path, channel):
    path = tmp_path / "outbox.sqlite"
    outbox = Outbox(path, policy(send_deadline_seconds=CRASH_DEADLINE))
    with WebhookReceiver(status_code=202 if channel == "pagerduty" else 200) as receiver:
        settings = {
            "webhook": {"ALERT_WEBHOOK_URL": f"{receiver.url}/hook"},
            "pagerduty": {"ALERT_PAGERDUTY_ROUTING_KEY": "routing-key", "ALERT_PAGERDUTY_EVENTS_URL": receiver.url},
            "slack": {"ALERT_SLACK_WEBHOOK_URL": f"{receiver.url}/services/T0/B0/X"},
        }[channel]
        (key,) = queue(outbox, [channel])

        died = subprocess.run(
            [sys.executable, "-c", SENDER_THAT_DIES, str(path), json.dumps(settings), str(CRASH_DEADLINE)],
            env={**_env(), SETTING: "alert_sent_before_marked"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert died.returncode == -9, died.stderr
        (first,) = receiver.received
        claimed = row(outbox, key, channel)
        assert claimed["delivered_at"] is None and claimed["claim_token"], "sent, but not marked"

        # While the dead sender's claim and lease last, nobody sends it again.
        channels = configured_channels(settings)
        assert deliver_due(outbox, channels).delivered == []
        assert len(receiver.received) == 1
        wait_until(
            lambda: row(outbox, key, channel)["claimed_until"] < time.time(),
            30,
            "the dead sender's claim expired",
            interval=0.05,
        )

        report = deliver_due(outbox, channels)
        assert report.delivered == [f"{key} -> {channel}"]
        assert deliver_due(outbox, channels).delivered == []
        first_copy, second_copy = receiver.received

    assert first_copy is first and second_copy.body == first.body, "the same alert, sent again"
    if channel == "webhook":
        assert first.headers["Idempotency-Key"] == second_copy.headers["Idempotency-Key"] == key
    elif channel == "pagerduty":
        incident = row(outbox, key, channel)["incident_key"]
        assert first.json()["dedup_key"] == second_copy.json()["dedup_key"] == incident
    else:  # Slack has no idempotency key: the copy shows twice (docs/reliability.md says so)
        assert "Idempotency-Key" not in first.headers and "dedup_key" not in first.json()
    assert row(outbox, key, channel)["delivered_at"] is not None


def _env() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if name != SETTING}
