"""Alerting end to end with the real daemon: a source goes down, the scheduled run fails and five feeds go
stale; one alert per incident reaches the loopback webhook, with its runbook. The source comes back, the
feeds are rematerialized, and one recovery notice per incident arrives, although the webhook fails the
first attempts. Detection-to-delivery latencies go to test-artifacts/alert-latency.json."""

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dagster as dg
import pytest

from pipeline_project.local.environment import OPTIONAL_ALERT_SETTINGS, REPO_ROOT

from alerting_e2e.location import FEEDS, feeds
from receivers import WebhookReceiver

SENSOR_INTERVAL_SECONDS = 5
ARTIFACTS = REPO_ROOT / "test-artifacts"


class _FeedHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"rows": 42}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:
        pass


class FeedSource:
    """A loopback source that can be stopped (connections refused) and started again on the same port."""

    def __init__(self) -> None:
        self.port = 0
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/feed"

    def start(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), _FeedHandler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def daemon_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(
        "load_from:\n"
        f"  - python_file:\n      relative_path: {Path(__file__).parent / 'location.py'}\n"
        f"      working_directory: {Path(__file__).parent}\n"
        "      location_name: alerting_e2e\n"
    )
    settings = {
        "DAGSTER_HOME": str(home),
        "ALERT_DIR": str(tmp_path / "alerts"),
        "DAGSTER_WEBSERVER_URL": "http://127.0.0.1:3000",
        "FRESHNESS_DAEMON_INTERVAL_SECONDS": "5",
        "ALERT_SENSOR_INTERVAL_SECONDS": str(SENSOR_INTERVAL_SECONDS),
        "WORKSPACE": str(workspace),
        **{name: "" for name in OPTIONAL_ALERT_SETTINGS},
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    return settings


def _start_daemon(env: dict[str, str], log_path: Path) -> subprocess.Popen:
    daemon = Path(sys.executable).parent / "dagster-daemon"
    with log_path.open("w") as log:
        return subprocess.Popen(
            [str(daemon), "run", "-w", env["WORKSPACE"]],
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _settle(receiver: WebhookReceiver, expected: int) -> None:
    """Give the sensors a few more ticks to send anything they (wrongly) still would."""
    time.sleep(3 * SENSOR_INTERVAL_SECONDS)
    assert len(receiver.received) == expected, [r.json()["title"] for r in receiver.received]


def test_a_stale_source_alerts_once_per_incident_and_recovers_once_through_a_flapping_channel(
    daemon_env, tmp_path, monkeypatch
):
    source = FeedSource()
    source.start()
    monkeypatch.setenv("FEED_SOURCE_URL", source.url)
    with WebhookReceiver() as webhook:
        monkeypatch.setenv("ALERT_WEBHOOK_URL", f"{webhook.url}/hook")
        # Create the instance's storage before the daemon opens it: two processes stamping a new SQLite
        # storage at once can leave it with two schema heads.
        instance = dg.DagsterInstance.get()
        daemon = _start_daemon({**daemon_env, "ALERT_WEBHOOK_URL": f"{webhook.url}/hook"}, tmp_path / "daemon.log")
        try:
            assert dg.materialize(feeds, instance=instance).success

            source.stop()
            down = dg.materialize(feeds, instance=instance, raise_on_error=False)
            assert not down.success

            alerts = [request.json() for request in webhook.wait_for(len(FEEDS) + 1, timeout=240)]
            _settle(webhook, len(FEEDS) + 1)
            by_kind = {}
            for alert in alerts:
                by_kind.setdefault(alert["kind"], []).append(alert)
            [outage] = by_kind["source_unavailable"]
            assert outage["runbook"] == "runbooks/source-unavailable.md"
            assert outage["link"].endswith(down.run_id) and "Connection refused" in outage["summary"]
            stale = by_kind["freshness_breach"]
            assert sorted(alert["asset"] for alert in stale) == FEEDS
            for alert in stale:
                assert alert["action"] == "trigger" and alert["severity"] == "ERROR"
                assert alert["runbook"] == "runbooks/freshness-breach.md"
                assert alert["owners"] == ["team:data-platform"] and alert["route"] == "data-platform-oncall"
            latencies = [
                request.received_at - request.json()["occurred_at"]
                for request in webhook.received
                if request.json()["kind"] == "freshness_breach"
            ]

            source.start()
            webhook.fail_next(2 * len(alerts), status=503)
            assert dg.materialize(feeds, instance=instance).success
            everything = webhook.wait_for(2 * len(alerts), timeout=180)
            _settle(webhook, 2 * len(alerts))
            recoveries = [request.json() for request in everything[len(alerts) :]]
            assert webhook.attempts > len(everything), "the webhook never failed"
            assert all(recovery["action"] == "resolve" for recovery in recoveries)
            assert sorted(r["incident_key"] for r in recoveries) == sorted(a["incident_key"] for a in alerts)
            assert len({request.json()["dedup_key"] for request in everything}) == len(everything)
        finally:
            _stop(daemon)
            source.stop()

    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "alert-latency.json").write_text(
        json.dumps(
            {
                "scenario": "freshness FAIL -> webhook, daemon and sensors at 5 s intervals",
                "latencies_seconds": sorted(round(value, 2) for value in latencies),
                "median_seconds": round(statistics.median(latencies), 2),
                "duplicates": 0,
                "lost": 0,
            },
            indent=2,
        )
    )
