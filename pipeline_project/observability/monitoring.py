"""Is the alerting itself healthy? The alert outbox's backlog and delivery failures, and the heartbeat's age.

The outbox (`$ALERT_DIR/outbox.sqlite`, `alerting/outbox.py` owns its schema) is opened read-only, so a
scrape can never take the write lock the delivery sensor needs; every query aggregates in SQLite and
returns a handful of rows however many alerts the history holds. The heartbeat
(`$ALERT_DIR/heartbeat.json`, written by every tick of the `alert_delivery` sensor) is read as a file; a
missing or unreadable heartbeat has an infinite age, so "older than 5 minutes" is true for it too.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

OUTBOX_FILE = "outbox.sqlite"
HEARTBEAT_FILE = "heartbeat.json"
_PENDING = "d.delivered_at is null and d.expired_at is null"


def heartbeat_age_seconds(path: Path, now: float | None = None) -> float:
    """Seconds since the alert delivery loop last ticked; +Inf when it never did or the file is unreadable."""
    now = time.time() if now is None else now
    try:
        ticked_at = float(json.loads(path.read_text())["ticked_at"])
    except (OSError, ValueError, KeyError, TypeError):
        return math.inf
    return max(now - ticked_at, 0.0)


class MonitoringReader:
    def __init__(self, alert_dir: Path | str) -> None:
        self.alert_dir = Path(alert_dir)

    def _outbox_rows(self) -> dict[str, list[tuple]] | None:
        path = self.alert_dir / OUTBOX_FILE
        if not path.exists():
            return None
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
        try:
            return {
                "by_channel": db.execute(
                    "select channel, "
                    f"sum({_PENDING}), "
                    "sum(d.delivered_at is not null), "
                    "sum(d.expired_at is not null), "
                    "sum(d.attempts - (d.delivered_at is not null)), "
                    "sum(d.fell_back_at is not null) "
                    "from deliveries d group by channel order by channel"
                ).fetchall(),
                "oldest": db.execute(
                    f"select min(a.created_at) from deliveries d join alerts a using (dedup_key) where {_PENDING}"
                ).fetchall(),
                "incidents": db.execute(
                    "select kind, count(*) from incidents where resolved_at is null group by kind order by kind"
                ).fetchall(),
            }
        finally:
            db.close()

    def families(self, now: float | None = None) -> list:
        now = time.time() if now is None else now
        pending = GaugeMetricFamily(
            "pipeline_alert_outbox_pending", "Alert deliveries not yet accepted by their channel (and not given up)"
        )
        oldest = GaugeMetricFamily(
            "pipeline_alert_outbox_oldest_pending_age_seconds",
            "Age of the oldest alert with an undelivered delivery (0 when none is pending)",
        )
        deliveries = GaugeMetricFamily(
            "pipeline_alert_deliveries",
            "Alert deliveries in the outbox by channel and state (pending, delivered, expired)",
            labels=["channel", "state"],
        )
        failures = CounterMetricFamily(
            "pipeline_alert_delivery_failures", "Failed delivery attempts per channel", labels=["channel"]
        )
        fallbacks = CounterMetricFamily(
            "pipeline_alert_delivery_fallbacks",
            "Alerts written to the fallback log because their channel kept failing",
            labels=["channel"],
        )
        incidents = GaugeMetricFamily("pipeline_alert_incidents_open", "Open incidents by alert kind", labels=["kind"])
        heartbeat = GaugeMetricFamily(
            "pipeline_monitoring_heartbeat_age_seconds",
            "Seconds since the alert_delivery sensor last ticked (+Inf: never, or unreadable)",
        )
        heartbeat.add_metric([], heartbeat_age_seconds(self.alert_dir / HEARTBEAT_FILE, now))
        rows = self._outbox_rows()
        total_pending = 0
        oldest_created = None
        if rows is not None:
            for channel, waiting, delivered, expired, failed, fell_back in rows["by_channel"]:
                total_pending += waiting or 0
                for state, value in (("pending", waiting), ("delivered", delivered), ("expired", expired)):
                    deliveries.add_metric([channel, state], value or 0)
                failures.add_metric([channel], failed or 0)
                fallbacks.add_metric([channel], fell_back or 0)
            oldest_created = rows["oldest"][0][0]
            for kind, count in rows["incidents"]:
                incidents.add_metric([kind], count)
        pending.add_metric([], total_pending)
        oldest.add_metric([], max(now - oldest_created, 0.0) if oldest_created is not None else 0.0)
        return [pending, oldest, deliveries, failures, fallbacks, incidents, heartbeat]
