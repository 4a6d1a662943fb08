"""The alert drill: a two-minute rehearsal of an outage with the real daemon, on a throwaway instance.

    make alert-drill            # or: python -m pipeline_project.dev.alert_drill [--interval 5] [--report F]

It serves a small code location (`alert_drill_location`: five feeds read from a loopback source, each with
a one-minute freshness window, the real monitoring sensors) to `dagster-daemon`, with a loopback webhook
as the alert channel, and then:

1. materializes the feeds while the source is up;
2. stops the source: the next run fails (one `source_unavailable` alert), and a minute after the last
   materialization every feed is stale (one `freshness_breach` alert each);
3. restores the source, makes the webhook fail its next attempts, and rematerializes: one recovery notice
   per incident, each delivered exactly once when the webhook accepts again.

Every alert is printed as it arrives with its detection-to-delivery latency (webhook receipt minus the
event that raised it). Nothing outside a temporary directory is touched. `make bench` runs it at the
production sensor interval and records the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dagster as dg

from pipeline_project.dev.alert_drill_location import FEEDS, feeds
from pipeline_project.settings import OPTIONAL_ALERT_SETTINGS, REPO_ROOT

HOST = "127.0.0.1"
ALERT_WAIT_SECONDS = 300
# The drill prints the alerts; the runs' log, with the stack traces of the outage it causes, would bury them.
QUIET_RUN = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


@dataclass(frozen=True)
class Delivery:
    received_at: float
    alert: dict

    @property
    def latency(self) -> float:
        return self.received_at - self.alert["occurred_at"]


class LoopbackWebhook:
    """The drill's alert channel: records every alert it accepts; `fail_next(n)` answers n requests 503."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self.attempts = 0
        self._failures_left = 0
        self._arrived = threading.Condition()
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with webhook._arrived:
                    webhook.attempts += 1
                    failing = webhook._failures_left > 0
                    webhook._failures_left -= failing
                    if not failing:
                        webhook.deliveries.append(Delivery(time.time(), json.loads(body)))
                        webhook._arrived.notify_all()
                self.send_response(503 if failing else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args) -> None:
                pass

        self._server = ThreadingHTTPServer((HOST, 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self._server.server_address[1]}/alerts"

    def fail_next(self, count: int) -> None:
        with self._arrived:
            self._failures_left = count

    def wait_for(self, count: int, timeout: float) -> list[Delivery]:
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self.deliveries) >= count, timeout):
                titles = [d.alert["title"] for d in self.deliveries]
                raise TimeoutError(f"expected {count} alerts within {timeout:.0f} s, got {len(titles)}: {titles}")
            return list(self.deliveries)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class FeedSource:
    """The loopback source the feeds read; stopped, it refuses connections; started again, same port."""

    def __init__(self) -> None:
        self.port = 0
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/feed"

    def start(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = b'{"rows": 42}'
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args) -> None:
                pass

        self._server = ThreadingHTTPServer((HOST, self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@dataclass
class DrillReport:
    interval_seconds: int
    alerts: list[Delivery] = field(default_factory=list)
    recoveries: list[Delivery] = field(default_factory=list)
    # Alerts of new incidents after the recoveries: at a long sensor interval the drill's last wait outlasts
    # the one-minute freshness window, and the feeds, not materialized again, rightly go stale again.
    later_alerts: list[Delivery] = field(default_factory=list)
    webhook_attempts: int = 0
    failed_attempts_injected: int = 0

    @property
    def freshness_latencies(self) -> list[float]:
        return sorted(d.latency for d in self.alerts if d.alert["kind"] == "freshness_breach")

    @property
    def duplicates(self) -> int:
        keys = [d.alert["dedup_key"] for d in [*self.alerts, *self.recoveries, *self.later_alerts]]
        return len(keys) - len(set(keys))

    @property
    def lost(self) -> int:
        """Incidents raised but never recovered in the drill (every one should recover)."""
        return len({d.alert["incident_key"] for d in self.alerts} - {d.alert["incident_key"] for d in self.recoveries})

    def to_json(self) -> dict:
        latencies = self.freshness_latencies
        return {
            "sensor_interval_seconds": self.interval_seconds,
            "alerts": len(self.alerts),
            "recoveries": len(self.recoveries),
            "later_alerts_of_new_incidents": len(self.later_alerts),
            "freshness_detection_to_delivery_seconds": [round(value, 2) for value in latencies],
            "median_seconds": round(statistics.median(latencies), 2) if latencies else None,
            "webhook_attempts": self.webhook_attempts,
            "failed_attempts_injected": self.failed_attempts_injected,
            "duplicates": self.duplicates,
            "lost": self.lost,
        }


def _drill_environment(root: Path, interval: int, webhook_url: str, source_url: str) -> dict[str, str]:
    home = root / "dagster_home"
    home.mkdir(parents=True)
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    workspace = root / "workspace.yaml"
    workspace.write_text(
        "load_from:\n  - python_module:\n      module_name: pipeline_project.dev.alert_drill_location\n"
        "      location_name: alert_drill\n"
    )
    return {
        **{name: "" for name in OPTIONAL_ALERT_SETTINGS},
        "DAGSTER_HOME": str(home),
        "ALERT_DIR": str(root / "alerts"),
        # The runs' JSON-lines log (dagster.yaml python_logs) goes to a file, not over the drill's output.
        "PIPELINE_LOG_DIR": str(root / "logs"),
        "DAGSTER_WEBSERVER_URL": "http://127.0.0.1:3000",
        "FRESHNESS_DAEMON_INTERVAL_SECONDS": str(interval),
        "ALERT_SENSOR_INTERVAL_SECONDS": str(interval),
        "ALERT_WEBHOOK_URL": webhook_url,
        "DRILL_SOURCE_URL": source_url,
        "DRILL_WORKSPACE": str(workspace),
        "DAGSTER_DISABLE_TELEMETRY": "1",
    }


def _start_daemon(env: dict[str, str], log_path: Path) -> subprocess.Popen:
    with log_path.open("w") as log:
        return subprocess.Popen(
            [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", env["DRILL_WORKSPACE"]],
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _stop_daemon(daemon: subprocess.Popen) -> None:
    if daemon.poll() is None:
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait()


def _show(delivery: Delivery) -> str:
    alert = delivery.alert
    status = "RESOLVED" if alert["action"] == "resolve" else alert["severity"]
    return f"  [{status}] {alert['title']}  ({alert['kind']}, {alert['runbook']}, +{delivery.latency:.1f} s)"


def run_drill(root: Path, interval: int = 5, flap_attempts: int = 6, say: Callable[[str], None] = print) -> DrillReport:
    """Run the drill under `root` (a fresh directory) and return what reached the webhook."""
    source, webhook = FeedSource(), LoopbackWebhook()
    source.start()
    env = _drill_environment(root, interval, webhook.url, source.url)
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    daemon = None
    try:
        # The instance's storage exists before the daemon opens it: two processes creating a SQLite
        # storage at once can leave it with two schema heads.
        instance = dg.DagsterInstance.get()
        daemon = _start_daemon(env, root / "daemon.log")
        report = DrillReport(interval_seconds=interval)
        say(f"1. materializing {len(FEEDS)} feeds from the source (freshness window: 1 minute)")
        if not dg.materialize(feeds, instance=instance, run_config=QUIET_RUN).success:
            raise RuntimeError("the feeds did not materialize with the source up")
        say("2. the source goes down; the next run fails and, a minute later, every feed is stale")
        source.stop()
        dg.materialize(feeds, instance=instance, run_config=QUIET_RUN, raise_on_error=False)
        expected = len(FEEDS) + 1
        seen = 0
        deadline = time.time() + ALERT_WAIT_SECONDS
        while seen < expected:
            arrived = webhook.wait_for(seen + 1, timeout=max(1.0, deadline - time.time()))
            for delivery in arrived[seen:]:
                say(_show(delivery))
            seen = len(arrived)
        time.sleep(2 * interval)
        report.alerts = webhook.deliveries[:expected]
        say(f"3. the source is back; the webhook fails its next {flap_attempts} attempts; rematerializing")
        source.start()
        webhook.fail_next(flap_attempts)
        report.failed_attempts_injected = flap_attempts
        if not dg.materialize(feeds, instance=instance, run_config=QUIET_RUN).success:
            raise RuntimeError("the feeds did not materialize after the source came back")
        while seen < 2 * expected:
            arrived = webhook.wait_for(seen + 1, timeout=ALERT_WAIT_SECONDS)
            for delivery in arrived[seen:]:
                say(_show(delivery))
            seen = len(arrived)
        time.sleep(3 * interval)  # anything sent twice would arrive by now
        raised = {d.alert["incident_key"] for d in report.alerts}
        for delivery in webhook.deliveries[expected:]:
            recovered = delivery.alert["action"] == "resolve" and delivery.alert["incident_key"] in raised
            (report.recoveries if recovered else report.later_alerts).append(delivery)
        if report.later_alerts:
            say(
                f"  ({len(report.later_alerts)} new alert(s) after that: nothing materialized the feeds again, so "
                "their one-minute window ran out again; expected at a sensor interval this long)"
            )
        report.webhook_attempts = webhook.attempts
        instance.dispose()
        return report
    finally:
        if daemon is not None:
            _stop_daemon(daemon)
        source.stop()
        webhook.close()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=int, default=5, help="freshness daemon and alert sensor interval (s)")
    parser.add_argument("--report", type=Path, help="write the figures as JSON to this file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="alert-drill-") as directory:
        report = run_drill(Path(directory), interval=args.interval)
    figures = report.to_json()
    accepted = len(report.alerts) + len(report.recoveries) + len(report.later_alerts)
    print(
        f"{figures['alerts']} alerts and {figures['recoveries']} recoveries, {figures['duplicates']} duplicated, "
        f"{figures['lost']} lost; {figures['webhook_attempts'] - accepted} "
        f"failed deliveries retried; freshness detection-to-delivery median {figures['median_seconds']} s"
    )
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if figures["duplicates"] == figures["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
