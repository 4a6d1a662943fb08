"""Alert channels against real receivers on 127.0.0.1: what each channel sends, how each failure is
reported (retryable or not, one attempt per send), and that no credential reaches an error or a log."""

import dataclasses
import json
import logging
import shutil
import threading
import traceback

import pytest

from pipeline_project.alerting.alert import RUNBOOKS, Action, Alert, AlertKind, Severity
from pipeline_project.alerting.channels import DeliveryError, configured_channels
from pipeline_project.alerting.channels.email import EmailChannel, email_message
from pipeline_project.alerting.channels.log import LogChannel
from pipeline_project.alerting.channels.pagerduty import PagerDutyChannel
from pipeline_project.alerting.channels.slack import SlackChannel, slack_message
from pipeline_project.alerting.channels.webhook import WebhookChannel

from receivers import SmtpReceiver, WebhookReceiver, free_port, loopback_tls

CANARY = "CANARY-s3cr3t-7f1c"
SENDER = "Pipeline alerts <alerts@example.com>"
RECIPIENTS = ["oncall@example.com", "data-team@example.com"]

TRIGGER = Alert(
    dedup_key="freshness:raw_orders:2026-03-14:trigger:1",
    incident_key="freshness:raw_orders:2026-03-14",
    kind=AlertKind.FRESHNESS_BREACH,
    action=Action.TRIGGER,
    severity=Severity.ERROR,
    title="raw_orders is stale",
    summary="raw_orders 2026-03-14 was last materialized 26 hours ago; its freshness policy allows 24 hours.",
    runbook=RUNBOOKS[AlertKind.FRESHNESS_BREACH],
    asset="raw/orders",
    partition="2026-03-14",
    link="http://127.0.0.1:3000/runs/6f1d2c3a-1b2c-4d5e-8f90-123456789abc",
    owners=("data-platform", "alice@example.com"),
    route="data-oncall",
    details={"last_materialized_hours_ago": 26, "policy": "fail after 24h"},
    occurred_at=1773532800.0,
)
RECOVERY = dataclasses.replace(
    TRIGGER,
    dedup_key="freshness:raw_orders:2026-03-14:resolve:1",
    action=Action.RESOLVE,
    summary="raw_orders 2026-03-14 is fresh again (materialized 2 minutes ago).",
)


def assert_essentials(text: str, alert: Alert) -> None:
    """Every rendering tells the on-call what, where and how bad, and where to look next."""
    for value in (alert.asset, alert.partition, alert.severity.value, alert.summary, alert.link, alert.runbook):
        assert value in text, f"{value!r} missing from {text!r}"


def http_channel(kind: str, url: str, **timeouts):
    if kind == "webhook":
        return WebhookChannel(url + "/hooks/pipeline", **timeouts)
    if kind == "slack":
        return SlackChannel(url + "/services/T000/B000/XXXX", **timeouts)
    return PagerDutyChannel("routing-key-0000", events_url=url + "/v2/enqueue", **timeouts)


HTTP_CHANNELS = ["webhook", "slack", "pagerduty"]


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command line tool makes the test certificate")
    return loopback_tls(tmp_path_factory.mktemp("tls"))


def test_webhook_posts_the_alert_with_a_text_line_and_an_idempotency_key():
    with WebhookReceiver() as receiver:
        WebhookChannel(receiver.url + "/hooks/pipeline").send(TRIGGER)
        [request] = receiver.received

    assert request.path == "/hooks/pipeline"
    assert request.headers["Idempotency-Key"] == TRIGGER.dedup_key
    assert request.headers["Content-Type"] == "application/json"
    body = request.json()
    text = body.pop("text")
    assert Alert.from_json(body) == TRIGGER
    assert "\n" not in text and text.startswith("[ERROR] raw_orders is stale")
    assert_essentials(text, TRIGGER)


def test_slack_trigger_is_block_kit_with_fields_details_and_a_run_button():
    with WebhookReceiver() as receiver:
        SlackChannel(receiver.url + "/services/T000/B000/XXXX").send(TRIGGER)
        [request] = receiver.received
    message = request.json()

    blocks = message["blocks"]
    assert [block["type"] for block in blocks] == ["header", "section", "section", "context", "section", "actions"]
    header = blocks[0]["text"]
    assert header["type"] == "plain_text" and header["text"] == "🚨 raw_orders is stale"
    assert blocks[1]["text"] == {"type": "mrkdwn", "text": TRIGGER.summary}
    fields = {field["text"].split("\n")[0]: field["text"].split("\n")[1] for field in blocks[2]["fields"]}
    assert fields == {
        "*Asset*": "raw/orders",
        "*Partition*": "2026-03-14",
        "*Severity*": "ERROR",
        "*Kind*": "freshness_breach",
        "*Owners*": "data-platform, alice@example.com",
    }
    assert all(field["type"] == "mrkdwn" for field in blocks[2]["fields"])
    assert blocks[3]["elements"] == [
        {"type": "mrkdwn", "text": "last_materialized_hours_ago: 26 · policy: fail after 24h"}
    ]
    assert f"`{TRIGGER.runbook}`" in blocks[4]["text"]["text"]
    [button] = blocks[5]["elements"]
    assert button["type"] == "button" and button["url"] == TRIGGER.link
    assert button["text"]["type"] == "plain_text"
    assert_essentials(json.dumps(blocks, ensure_ascii=False), TRIGGER)
    assert_essentials(message["text"], TRIGGER)


def test_slack_recovery_is_visibly_resolved():
    message = slack_message(RECOVERY)

    assert message["blocks"][0]["text"]["text"] == "✅ RESOLVED: raw_orders is stale"
    assert "*Severity*\nRESOLVED (was ERROR)" in [field["text"] for field in message["blocks"][2]["fields"]]
    assert message["text"].startswith("[RESOLVED] raw_orders is stale")
    assert_essentials(json.dumps(message, ensure_ascii=False), RECOVERY)


def test_slack_message_stays_within_block_kit_limits_and_escapes_markup():
    huge = dataclasses.replace(
        TRIGGER,
        title="t" * 400,
        summary="<!channel> & <http://evil.example|click> " + "x" * 10_000,
        asset="a" * 5000,
        details={f"key{i}": "v" * 500 for i in range(20)},
    )
    message = slack_message(huge)

    header, summary, fields, details = message["blocks"][:4]
    assert len(header["text"]["text"]) == 150
    assert len(summary["text"]["text"]) == 3000 and summary["text"]["text"].endswith("…")
    assert summary["text"]["text"].startswith("&lt;!channel&gt; &amp; &lt;http://evil.example|click&gt;")
    assert max(len(field["text"]) for field in fields["fields"]) == 2000
    assert len(details["elements"][0]["text"]) == 3000
    assert len(message["text"]) <= 3000


def test_pagerduty_trigger_and_resolve_share_the_incident_dedup_key():
    with WebhookReceiver(status_code=202) as receiver:
        channel = PagerDutyChannel("routing-key-0000", events_url=receiver.url + "/v2/enqueue")
        channel.send(TRIGGER)
        channel.send(RECOVERY)
        trigger, resolve = (request.json() for request in receiver.received)

    assert trigger["routing_key"] == "routing-key-0000"
    assert trigger["event_action"] == "trigger"
    assert trigger["dedup_key"] == TRIGGER.incident_key
    payload = trigger["payload"]
    assert payload["severity"] == "critical"
    assert payload["component"] == "raw/orders"
    assert payload["group"] == "data-oncall"
    assert payload["class"] == "freshness_breach"
    assert payload["source"] == "dagster"
    assert payload["timestamp"] == "2026-03-15T00:00:00+00:00"
    assert payload["custom_details"]["runbook"] == TRIGGER.runbook
    assert payload["custom_details"]["last_materialized_hours_ago"] == 26
    assert trigger["links"] == [{"href": TRIGGER.link, "text": "Run in Dagster"}]
    assert_essentials(json.dumps(trigger), TRIGGER)
    assert resolve == {"routing_key": "routing-key-0000", "event_action": "resolve", "dedup_key": TRIGGER.incident_key}


def test_pagerduty_warning_severity_and_summary_cap():
    warning = dataclasses.replace(TRIGGER, severity=Severity.WARN, summary="s" * 5000)
    with WebhookReceiver(status_code=202) as receiver:
        PagerDutyChannel("routing-key-0000", events_url=receiver.url).send(warning)
        payload = receiver.received[0].json()["payload"]

    assert payload["severity"] == "warning"
    assert len(payload["summary"]) == 1024 and payload["summary"].startswith("[WARN] raw_orders is stale")


def test_pagerduty_answer_other_than_202_is_a_failure():
    with (
        WebhookReceiver(status_code=200) as receiver,
        pytest.raises(DeliveryError, match=r"HTTP 200 \(expected 202\)") as caught,
    ):
        PagerDutyChannel("routing-key-0000", events_url=receiver.url).send(TRIGGER)

    assert caught.value.channel == "pagerduty" and not caught.value.retryable


@pytest.mark.parametrize("kind", HTTP_CHANNELS)
@pytest.mark.parametrize(
    ("status", "retryable"), [(500, True), (503, True), (429, True), (408, True), (400, False), (404, False)]
)
def test_http_status_failure_is_one_attempt_and_says_whether_to_retry(kind, status, retryable):
    with WebhookReceiver() as receiver:
        receiver.set_status(status)
        channel = http_channel(kind, receiver.url)
        with pytest.raises(DeliveryError) as caught:
            channel.send(TRIGGER)
        attempts, received = receiver.attempts, receiver.received

    assert caught.value.channel == kind
    assert f"HTTP {status}" in str(caught.value)
    assert caught.value.retryable is retryable
    assert attempts == 1, "a channel makes one attempt per send; the outbox retries"
    assert received == []


@pytest.mark.parametrize("kind", HTTP_CHANNELS)
def test_refused_connection_is_retryable(kind):
    channel = http_channel(kind, f"http://127.0.0.1:{free_port()}")

    with pytest.raises(DeliveryError, match="Connection refused") as caught:
        channel.send(TRIGGER)
    assert caught.value.retryable


@pytest.mark.parametrize("kind", HTTP_CHANNELS)
def test_read_timeout_is_retryable(kind):
    with WebhookReceiver() as receiver:
        receiver.set_delay(5.0)
        channel = http_channel(kind, receiver.url, read_timeout=0.2)
        with pytest.raises(DeliveryError, match=r"timed out \(ReadTimeout\)") as caught:
            channel.send(TRIGGER)
        assert receiver.attempts == 1
    assert caught.value.retryable


def test_email_over_starttls_logs_in_and_threads_the_recovery_under_its_trigger(tls):
    with SmtpReceiver(username="alerts", password="smtp-password", tls_context=tls.server) as smtp:
        channel = EmailChannel(
            smtp.host, smtp.port, SENDER, RECIPIENTS, "alerts", "smtp-password", "starttls", ssl_context=tls.client
        )
        channel.send(TRIGGER)
        channel.send(RECOVERY)
        trigger, recovery = smtp.wait_for(2)

    for received in (trigger, recovery):
        assert received.authenticated_as == "alerts"
        assert received.mail_from == "alerts@example.com"
        assert received.rcpt_tos == tuple(RECIPIENTS)
        assert received.message["Auto-Submitted"] == "auto-generated"
    assert trigger.message["Subject"] == "[ERROR] raw_orders is stale"
    assert recovery.message["Subject"] == "[RESOLVED] raw_orders is stale"
    assert trigger.message["Message-ID"] == email_message(TRIGGER, SENDER, RECIPIENTS)["Message-ID"]
    assert trigger.message["Message-ID"] != recovery.message["Message-ID"]
    assert trigger.message["Message-ID"].endswith("@example.com>")
    incident = trigger.message["References"]
    assert (
        incident == trigger.message["In-Reply-To"] == recovery.message["References"] == recovery.message["In-Reply-To"]
    )
    assert incident not in (trigger.message["Message-ID"], recovery.message["Message-ID"])

    body = trigger.message.get_content()
    assert_essentials(body, TRIGGER)
    for line in (
        "Kind:      freshness_breach",
        "Owners:    data-platform, alice@example.com",
        "Route:     data-oncall",
    ):
        assert line in body
    assert "last_materialized_hours_ago: 26" in body
    assert "Status:    RESOLVED (was ERROR)" in recovery.message.get_content()


def test_email_over_implicit_tls(tls):
    with SmtpReceiver(username="alerts", password="smtp-password", tls_context=tls.server, implicit_tls=True) as smtp:
        EmailChannel(
            smtp.host, smtp.port, SENDER, RECIPIENTS, "alerts", "smtp-password", "ssl", ssl_context=tls.client
        ).send(TRIGGER)
        [received] = smtp.wait_for(1)

    assert received.authenticated_as == "alerts"
    assert received.message["Subject"] == "[ERROR] raw_orders is stale"


def test_email_without_tls_logs_in_only_to_a_loopback_relay():
    with SmtpReceiver(username="alerts", password="smtp-password") as smtp:
        EmailChannel(smtp.host, smtp.port, SENDER, RECIPIENTS, "alerts", "smtp-password", "none").send(TRIGGER)
        [received] = smtp.wait_for(1)
    assert received.authenticated_as == "alerts"

    with pytest.raises(ValueError, match="clear text"):
        EmailChannel("smtp.example.com", 25, SENDER, RECIPIENTS, "alerts", "smtp-password", "none")


def test_email_rejected_login_is_not_retryable(tls):
    with SmtpReceiver(username="alerts", password="smtp-password", tls_context=tls.server) as smtp:
        channel = EmailChannel(smtp.host, smtp.port, SENDER, RECIPIENTS, "alerts", "wrong", ssl_context=tls.client)
        with pytest.raises(DeliveryError, match="SMTP 535") as caught:
            channel.send(TRIGGER)
        assert smtp.messages == []
    assert not caught.value.retryable


def test_email_transient_reply_is_retryable_and_permanent_reply_is_not():
    with SmtpReceiver() as smtp:
        channel = EmailChannel(smtp.host, smtp.port, SENDER, RECIPIENTS, security="none")
        smtp.fail_next(1, "451 4.3.0 Mailbox busy, try again later")
        with pytest.raises(DeliveryError, match="SMTP 451 .*try again later") as transient:
            channel.send(TRIGGER)
        smtp.fail_next(1, "554 5.7.1 Message rejected")
        with pytest.raises(DeliveryError, match="SMTP 554") as permanent:
            channel.send(TRIGGER)
        channel.send(TRIGGER)
        assert len(smtp.wait_for(1)) == 1

    assert transient.value.retryable and not permanent.value.retryable


def test_email_refused_connection_and_timeout_are_retryable():
    refused = EmailChannel("127.0.0.1", free_port(), SENDER, RECIPIENTS, security="none")
    with pytest.raises(DeliveryError, match="refused") as caught:
        refused.send(TRIGGER)
    assert caught.value.retryable

    with SmtpReceiver() as smtp:
        smtp.set_delay(5.0)
        slow = EmailChannel(smtp.host, smtp.port, SENDER, RECIPIENTS, security="none", timeout=0.3)
        with pytest.raises(DeliveryError, match="timed out") as caught:
            slow.send(TRIGGER)
    assert caught.value.retryable


def test_log_channel_appends_json_lines_and_logs_at_the_alert_level(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="pipeline_project.alerting.channels")
    path = tmp_path / "state" / "alerts" / "alerts.jsonl"
    warning = dataclasses.replace(TRIGGER, dedup_key="warn-1", severity=Severity.WARN)
    channel = LogChannel(path)
    for alert in (TRIGGER, warning, RECOVERY):
        channel.send(alert)

    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [Alert.from_json({k: v for k, v in line.items() if k not in ("text", "logged_at")}) for line in lines] == [
        TRIGGER,
        warning,
        RECOVERY,
    ]
    assert_essentials(lines[0]["text"], TRIGGER)
    assert [record.levelno for record in caplog.records] == [logging.ERROR, logging.WARNING, logging.INFO]
    assert_essentials(caplog.records[0].getMessage(), TRIGGER)
    assert caplog.records[2].getMessage().startswith("ALERT [RESOLVED]")


def test_log_channel_lines_never_interleave(tmp_path):
    path = tmp_path / "alerts.jsonl"
    writers = [LogChannel(path), LogChannel(path)]

    def write(worker: int) -> None:
        for i in range(25):
            alert = dataclasses.replace(TRIGGER, dedup_key=f"w{worker}-{i}", summary=f"{worker}" * 8000)
            writers[worker % 2].send(alert)

    threads = [threading.Thread(target=write, args=(worker,)) for worker in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted(line["dedup_key"] for line in lines) == sorted(f"w{w}-{i}" for w in range(8) for i in range(25))
    assert all(line["summary"] == line["dedup_key"][1] * 8000 for line in lines)


def test_log_channel_without_a_path_only_logs_and_an_unwritable_path_still_logs(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="pipeline_project.alerting.channels")
    LogChannel(None).send(TRIGGER)
    with pytest.raises(DeliveryError, match="cannot append to") as caught:
        LogChannel(tmp_path).send(TRIGGER)

    assert caught.value.channel == "log" and caught.value.retryable
    assert [record.levelno for record in caplog.records] == [logging.ERROR, logging.ERROR]


def test_no_credential_reaches_an_error_or_a_log_record(tls, caplog):
    caplog.set_level(logging.DEBUG)
    errors: list[DeliveryError] = []

    def deliver(channel) -> None:
        try:
            channel.send(TRIGGER)
        except DeliveryError as err:
            errors.append(err)

    def secret_http_channels(base_url: str, pagerduty_url: str) -> list:
        return [
            WebhookChannel(f"{base_url}/hooks/{CANARY}?token={CANARY}", read_timeout=0.3),
            SlackChannel(f"{base_url}/services/T000/B000/{CANARY}", read_timeout=0.3),
            PagerDutyChannel(CANARY, events_url=f"{pagerduty_url}/v2/enqueue", read_timeout=0.3),
        ]

    with WebhookReceiver() as hooks, WebhookReceiver(status_code=202) as pagerduty:
        channels = secret_http_channels(hooks.url, pagerduty.url)
        for channel in channels:
            deliver(channel)
        sent = [request.path for request in hooks.received] + [
            request.json()["routing_key"] for request in pagerduty.received
        ]
        assert all(CANARY in item for item in sent) and len(sent) == 3, "the canary must be in what was sent"
        for status, delay in ((500, 0.0), (400, 0.0), (None, 2.0)):
            for receiver in (hooks, pagerduty):
                receiver.set_status(status)
                receiver.set_delay(delay)
            for channel in channels:
                deliver(channel)
    for channel in secret_http_channels(f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"):
        deliver(channel)

    with SmtpReceiver(username="alerts", password=CANARY, tls_context=tls.server) as smtp:
        deliver(EmailChannel(smtp.host, smtp.port, SENDER, RECIPIENTS, "alerts", CANARY, ssl_context=tls.client))
        deliver(EmailChannel(smtp.host, smtp.port, SENDER, RECIPIENTS, "alerts", f"x{CANARY}", ssl_context=tls.client))
        assert smtp.wait_for(1)[0].authenticated_as == "alerts"
    deliver(EmailChannel("127.0.0.1", free_port(), SENDER, RECIPIENTS, "alerts", CANARY, ssl_context=tls.client))

    failures = [str(err) for err in errors]
    for failure, count in (("HTTP 500", 3), ("HTTP 400", 3), ("timed out", 3), ("refused", 4), ("SMTP 535", 1)):
        assert sum(failure in text for text in failures) == count, (failure, failures)
    assert len(failures) == 14
    for err in errors:
        assert err.__cause__ is None and err.__context__ is None
        for text in (str(err), repr(err), "".join(traceback.format_exception(err))):
            assert CANARY not in text
    assert caplog.records, "the HTTP client and the SMTP server did log"
    assert not [record for record in caplog.records if CANARY in record.getMessage()]
    assert CANARY not in caplog.text


def test_configured_channels_with_empty_settings_is_only_the_log():
    channels = configured_channels({"ALERT_WEBHOOK_URL": "", "ALERT_SMTP_HOST": "  "})

    assert list(channels) == ["log"]
    assert isinstance(channels["log"], LogChannel) and channels["log"].path is None


def test_configured_channels_deliver_to_every_configured_receiver(tmp_path):
    with WebhookReceiver() as hooks, WebhookReceiver(status_code=202) as pagerduty, SmtpReceiver() as smtp:
        channels = configured_channels(
            {
                "ALERT_WEBHOOK_URL": hooks.url + "/hooks/pipeline",
                "ALERT_SLACK_WEBHOOK_URL": hooks.url + "/services/T000/B000/XXXX",
                "ALERT_PAGERDUTY_ROUTING_KEY": "routing-key-0000",
                "ALERT_PAGERDUTY_EVENTS_URL": pagerduty.url + "/v2/enqueue",
                "ALERT_SMTP_HOST": smtp.host,
                "ALERT_SMTP_PORT": str(smtp.port),
                "ALERT_SMTP_SECURITY": "none",
                "ALERT_EMAIL_FROM": SENDER,
                "ALERT_EMAIL_TO": " oncall@example.com, ,data-team@example.com ",
                "ALERT_LOG_PATH": str(tmp_path / "alerts.jsonl"),
            }
        )
        for channel in channels.values():
            channel.send(TRIGGER)

        assert sorted(channels) == ["email", "log", "pagerduty", "slack", "webhook"]
        assert sorted(request.path for request in hooks.received) == ["/hooks/pipeline", "/services/T000/B000/XXXX"]
        assert pagerduty.received[0].json()["dedup_key"] == TRIGGER.incident_key
        assert smtp.wait_for(1)[0].rcpt_tos == ("oncall@example.com", "data-team@example.com")
    assert json.loads((tmp_path / "alerts.jsonl").read_text())["dedup_key"] == TRIGGER.dedup_key


EMAIL_ON = {"ALERT_SMTP_HOST": "smtp.example.com", "ALERT_EMAIL_FROM": SENDER, "ALERT_EMAIL_TO": "oncall@example.com"}


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({**EMAIL_ON, "ALERT_SMTP_PORT": "smtp"}, "ALERT_SMTP_PORT"),
        ({**EMAIL_ON, "ALERT_SMTP_PORT": "70000"}, "ALERT_SMTP_PORT"),
        ({**EMAIL_ON, "ALERT_SMTP_SECURITY": "tls13"}, "ALERT_SMTP_SECURITY"),
        ({**EMAIL_ON, "ALERT_EMAIL_TO": " , "}, "ALERT_EMAIL_TO"),
        ({**EMAIL_ON, "ALERT_EMAIL_TO": "oncall"}, "ALERT_EMAIL_TO"),
        ({**EMAIL_ON, "ALERT_EMAIL_FROM": ""}, "ALERT_EMAIL_FROM"),
        ({**EMAIL_ON, "ALERT_SMTP_PASSWORD": CANARY}, "ALERT_SMTP_USER"),
        (
            {**EMAIL_ON, "ALERT_SMTP_SECURITY": "none", "ALERT_SMTP_USER": "u", "ALERT_SMTP_PASSWORD": CANARY},
            "clear text",
        ),
        ({"ALERT_EMAIL_TO": "oncall@example.com"}, "ALERT_SMTP_HOST"),
        ({"ALERT_WEBHOOK_URL": f"hooks.example.com/{CANARY}"}, "ALERT_WEBHOOK_URL"),
        ({"ALERT_SLACK_WEBHOOK_URL": f"ftp://hooks.slack.com/services/{CANARY}"}, "ALERT_SLACK_WEBHOOK_URL"),
        ({"ALERT_PAGERDUTY_ROUTING_KEY": CANARY, "ALERT_PAGERDUTY_EVENTS_URL": "events"}, "ALERT_PAGERDUTY_EVENTS_URL"),
        ({"ALERT_PAGERDUTY_EVENTS_URL": "https://events.eu.pagerduty.com/v2/enqueue"}, "ALERT_PAGERDUTY_ROUTING_KEY"),
    ],
)
def test_invalid_settings_name_the_setting_but_not_a_secret(settings, named):
    with pytest.raises(ValueError, match=named) as caught:
        configured_channels(settings)
    assert CANARY not in str(caught.value)
