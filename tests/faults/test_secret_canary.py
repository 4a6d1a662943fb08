"""A secret canary in every secret setting (docs/reliability.md, the fault catalogue's secret row).

Every setting `secrets.SECRET_SETTINGS` lists holds a recognisable fake value: the API token, both webhook
URLs (marked in path and query), the PagerDuty routing key and the SMTP password. Then everything that
can fail does: the source answers with retries (500s, 429s), then a careless source rejects the token and
quotes it back; every alert channel fails while echoing what it was sent (webhook and PagerDuty answer 500
with the request's path and body, Slack's port refuses, SMTP answers 451) until most recover, so alerts
about failing channels, quoting those failures, travel to the other channels.

No canary may appear in the event log (every record serialized), the run records, the Dagster instance's
files, captured logs, stdout and stderr, any file under the state directory (lake, alert outbox SQLite
and its WAL, fallback alert log, heartbeat), the outbox rows, or any alert payload received; the
PagerDuty routing key appears in exactly one place: the `routing_key` field of the events PagerDuty got.
"""

import json
import logging
import os
import sqlite3
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dagster as dg
import pytest
from dagster._serdes import serialize_value

from demo_source import DemoShopServer, Faults, ShopWorld
from pipeline_project.alerting.resource import CHANNEL_SETTINGS, alerting_resource_from_env
from pipeline_project.alerting.sensors import alert_delivery, run_alerts
from pipeline_project.definitions import defs
from pipeline_project.ingest.asset_checks import raw_asset_key
from pipeline_project.secrets import SECRET_SETTINGS

from harness import DAYS
from receivers import SmtpReceiver, WebhookReceiver, free_port

# Every canary carries this mark, so a truncated or partly quoted secret is found too.
MARK = "cnry7f3c"
API_TOKEN = f"{MARK}-api-token"
WEBHOOK_PATH, WEBHOOK_QUERY = f"{MARK}-webhook-path", f"{MARK}-webhook-query"
SLACK_PATH = f"{MARK}-slack-path"
PAGERDUTY_KEY = f"{MARK}-pagerduty-routing-key"
SMTP_USER, SMTP_PASSWORD = "alerts", f"{MARK}-smtp-password"
PRODUCTION_SECRETS = ("PIPELINE_DUCKLAKE_CATALOG_PASSWORD", "DAGSTER_PG_PASSWORD", "PIPELINE_S3_SECRET")
DELIVERY_TICKS = 8


class CarelessSource:
    """A source on 127.0.0.1 that rejects every token and quotes it back in its 401 body."""

    def __init__(self) -> None:
        self.requests = 0
        source = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                source.requests += 1
                body = json.dumps({"error": "invalid credentials", "got": self.headers.get("Authorization")}).encode()
                self.send_response(401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args) -> None:
                """Silent: the test asserts on what the pipeline wrote."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "CarelessSource":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


@pytest.fixture
def channels(state_dir, monkeypatch):
    """Every alert channel configured with a canary secret, each failing at first."""
    with (
        WebhookReceiver() as webhook,
        WebhookReceiver(status_code=202) as pagerduty,
        SmtpReceiver(username=SMTP_USER, password=SMTP_PASSWORD) as smtp,
    ):
        settings = {
            "ALERT_WEBHOOK_URL": f"{webhook.url}/hook/{WEBHOOK_PATH}?sig={WEBHOOK_QUERY}",
            "ALERT_SLACK_WEBHOOK_URL": f"http://127.0.0.1:{free_port()}/services/{SLACK_PATH}",
            "ALERT_PAGERDUTY_ROUTING_KEY": PAGERDUTY_KEY,
            "ALERT_PAGERDUTY_EVENTS_URL": f"{pagerduty.url}/v2/enqueue",
            "ALERT_SMTP_HOST": smtp.host,
            "ALERT_SMTP_PORT": str(smtp.port),
            "ALERT_SMTP_SECURITY": "none",
            "ALERT_SMTP_USER": SMTP_USER,
            "ALERT_SMTP_PASSWORD": SMTP_PASSWORD,
            "ALERT_EMAIL_FROM": "pipeline@example.com",
            "ALERT_EMAIL_TO": "oncall@example.com",
        }
        for name in (*CHANNEL_SETTINGS.values(), "ALERT_RUNBOOK_BASE_URL"):
            monkeypatch.setenv(name, settings.get(name, ""))
        monkeypatch.setenv("ALERT_DIR", str(state_dir / "alerts"))
        monkeypatch.setenv("DAGSTER_WEBSERVER_URL", "http://127.0.0.1:3000")
        # Each fails past the fallback threshold (3), so alerts quoting its failure go to the others.
        webhook.fail_next(3, status=500)
        pagerduty.fail_next(3, status=500)
        smtp.fail_next(1)
        yield {"webhook": webhook, "pagerduty": pagerduty, "smtp": smtp, "settings": settings}


def _materialize_orders(instance, day):
    return defs.resolve_job_def("shop_pipeline").execute_in_process(
        instance=instance,
        partition_key=day.isoformat(),
        asset_selection=[raw_asset_key("orders")],
        raise_on_error=False,
    )


def _tick(sensor, instance, cursor=None):
    alerting = alerting_resource_from_env(retry_base_seconds=0.0)
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, definitions=defs, resources={"alerting": alerting}
    )
    result = sensor(context)
    return context.cursor, str(result.skip_message if isinstance(result, dg.SkipReason) else result)


def _files_with(root: Path, mark: bytes) -> list[str]:
    return [str(path) for path in root.rglob("*") if path.is_file() and mark in path.read_bytes()]


@pytest.mark.slow
def test_no_secret_reaches_events_logs_files_outbox_or_alerts(
    state_dir, instance, channels, monkeypatch, caplog, capfd
):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("SHOP_API_TOKEN", API_TOKEN)
    for name in PRODUCTION_SECRETS:  # unused by the embedded profile, which must not read them anywhere either
        monkeypatch.setenv(name, f"{MARK}-{name.lower()}")
    assert [name for name in SECRET_SETTINGS if MARK not in os.environ[name]] == [], "a canary in every secret"
    with DemoShopServer(ShopWorld(scale=0.05), token=API_TOKEN) as server:
        monkeypatch.setenv("SHOP_API_URL", server.url)
        server.set_faults(Faults(error_rate=0.5, rate_limit_every=3, retry_after_seconds=0.01))
        retried = _materialize_orders(instance, DAYS[0])
    with CarelessSource() as source:
        monkeypatch.setenv("SHOP_API_URL", source.url)
        rejected = _materialize_orders(instance, DAYS[1])
        assert source.requests == 1, "a rejected token is neither retried by the client nor by the step"
    assert retried.success and not rejected.success

    _, queued = _tick(run_alerts, instance)
    ticks = [queued] + [_tick(alert_delivery, instance)[1] for _ in range(DELIVERY_TICKS)]

    # The failures happened and were recorded, with what the careless servers echoed, minus the secrets.
    events = [serialize_value(record) for run in (retried, rejected) for record in instance.all_logs(run.run_id)]
    assert any("answered HTTP 401" in text and "invalid credentials" in text for text in events), "the echo"
    outbox = state_dir / "alerts" / "outbox.sqlite"
    with sqlite3.connect(outbox) as db:
        outbox_rows = "\n".join(db.iterdump())
        payloads = [json.loads(payload) for (payload,) in db.execute("select payload from alerts")]
    # The alerts about failing channels quote each channel's last error, as the careless receivers worded it.
    quoted = {
        alert["details"]["channel"]: alert["summary"]
        for alert in payloads
        if alert["kind"] == "alert_delivery_failing" and alert["action"] == "trigger"
    }
    assert "HTTP 500" in quoted["webhook"] and "rejected POST" in quoted["webhook"], quoted
    assert "HTTP 500" in quoted["pagerduty"] and '"routing_key":' in quoted["pagerduty"], quoted
    assert "Connection refused" in quoted["slack"], quoted
    received = [request.body.decode() for request in channels["webhook"].received]
    kinds = [json.loads(body)["kind"] for body in received]
    assert "source_unavailable" in kinds and "alert_delivery_failing" in kinds, kinds
    assert any("HTTP 500" in body for body in received), "alerts quote the failing channels' errors"
    pagerduty_events = [request.json() for request in channels["pagerduty"].received]
    emails = [received_email.message.as_string() for received_email in channels["smtp"].messages]
    assert pagerduty_events and emails
    assert {email.authenticated_as for email in channels["smtp"].messages} == {SMTP_USER}, "logged in with it"

    assert [event.pop("routing_key") for event in pagerduty_events] == [PAGERDUTY_KEY] * len(pagerduty_events)
    runs = [serialize_value(instance.get_run_by_id(run.run_id)) for run in (retried, rejected)]
    captured = capfd.readouterr()
    texts = {
        "event log": "\n".join(events),
        "run records": "\n".join(runs),
        "sensor results": "\n".join(ticks),
        "logs": caplog.text,
        "stdout": captured.out,
        "stderr": captured.err,
        "outbox rows": outbox_rows,
        "webhook payloads": "\n".join(received),
        "webhook headers": "\n".join(str(dict(request.headers)) for request in channels["webhook"].received),
        "pagerduty events": json.dumps(pagerduty_events),
        "emails": "\n".join(emails),
    }
    assert {where: MARK in text for where, text in texts.items()} == dict.fromkeys(texts, False)
    assert _files_with(state_dir, MARK.encode()) == []
    assert _files_with(Path(instance.root_directory), MARK.encode()) == []
