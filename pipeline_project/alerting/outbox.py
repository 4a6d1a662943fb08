"""The durable alert outbox: incidents, the alerts raised for them, and their delivery to each channel.

It is a SQLite file outside the Dagster instance, so alerts survive restarts of the daemon and of the
instance's own storage. Three rules make delivery exactly-once per incident and channel:

- An incident opens once per subject (`freshness:raw_orders`, `check:daily_revenue:contract_errors`, ...)
  and is keyed by the event that opened it, so re-reading the same events after a crash changes nothing.
  Signals about a subject whose incident is already open are absorbed unless they raise its severity.
- Every alert is written, with its dedup key and one delivery row per channel, in the same transaction
  that opens, escalates or resolves the incident, before anything is sent.
- A delivery is claimed (one sender at a time), and only a successful send marks it delivered. Failures
  back off exponentially up to `max_backoff_seconds` and are retried until `give_up_after_seconds`; after
  `fallback_after_attempts` failures the alert is also written to the fallback log so it is never lost.

A send that succeeds while the process dies before it is marked may be repeated once: every channel gets
the dedup key (the webhook's Idempotency-Key, PagerDuty's dedup_key, the e-mail's Message-ID) to drop it.
"""

from __future__ import annotations

import json
import random
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from pipeline_project.alerting.alert import Action, Alert, AlertKind, Severity

_SCHEMA = """
create table if not exists incidents (
    subject text not null,
    incident_key text primary key,
    kind text not null,
    severity text not null,
    channels text not null,
    opened_at real not null,
    resolved_at real
);
create unique index if not exists one_open_incident_per_subject on incidents(subject) where resolved_at is null;
create table if not exists alerts (
    dedup_key text primary key,
    incident_key text not null,
    payload text not null,
    created_at real not null
);
create table if not exists deliveries (
    dedup_key text not null,
    channel text not null,
    attempts integer not null default 0,
    next_attempt_at real not null,
    claimed_until real,
    last_error text,
    delivered_at real,
    fell_back_at real,
    expired_at real,
    primary key (dedup_key, channel)
);
"""

SEVERITY_RANK = {Severity.WARN: 1, Severity.ERROR: 2}


@dataclass(frozen=True)
class Signal:
    """Something the monitoring sensors observed about a subject: it is failing (`firing`) or healthy."""

    subject: str
    firing: bool
    event_id: int
    alert: Alert  # the message to send if this signal opens, escalates or resolves an incident


@dataclass(frozen=True)
class PendingDelivery:
    alert: Alert
    channel: str
    attempts: int


@dataclass(frozen=True)
class DeliveryPolicy:
    base_backoff_seconds: float = 15.0
    max_backoff_seconds: float = 300.0
    fallback_after_attempts: int = 3
    give_up_after_seconds: float = 24 * 3600.0
    claim_seconds: float = 120.0


class Outbox:
    def __init__(self, path: Path | str, policy: DeliveryPolicy | None = None, runbook_base_url: str = ""):
        self.path = Path(path)
        self.policy = policy or DeliveryPolicy()
        self.runbook_base_url = runbook_base_url.rstrip("/")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=30)
        try:
            db.executescript(_SCHEMA)  # its own transaction: executescript commits first
        finally:
            db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            db.execute("pragma journal_mode=wal")
            db.execute("pragma synchronous=full")
            db.execute("begin immediate")
            try:
                yield db
            except BaseException:
                db.execute("rollback")
                raise
            db.execute("commit")
        finally:
            db.close()

    def record(self, signal: Signal, channels: list[str]) -> Alert | None:
        """Open, escalate or resolve the signal's incident and queue the alert that says so (or nothing)."""
        with self._transaction() as db:
            row = db.execute(
                "select incident_key, severity, channels from incidents where subject = ? and resolved_at is null",
                (signal.subject,),
            ).fetchone()
            if signal.firing:
                if row is None:
                    incident_key = f"{signal.subject}@{signal.event_id}"
                    if db.execute("select 1 from incidents where incident_key = ?", (incident_key,)).fetchone():
                        return None  # this very event already opened (and someone resolved) the incident
                    db.execute(
                        "insert into incidents(subject, incident_key, kind, severity, channels, opened_at) "
                        "values (?, ?, ?, ?, ?, ?)",
                        (
                            signal.subject,
                            incident_key,
                            signal.alert.kind.value,
                            signal.alert.severity.value,
                            json.dumps(channels),
                            time.time(),
                        ),
                    )
                    alert = replace(signal.alert, incident_key=incident_key, dedup_key=f"{incident_key}:trigger")
                    return self._queue(db, alert, channels)
                incident_key, severity, incident_channels = row
                if SEVERITY_RANK[signal.alert.severity] <= SEVERITY_RANK[Severity(severity)]:
                    return None
                merged = sorted(set(json.loads(incident_channels)) | set(channels))
                db.execute(
                    "update incidents set severity = ?, channels = ? where incident_key = ?",
                    (signal.alert.severity.value, json.dumps(merged), incident_key),
                )
                alert = replace(
                    signal.alert,
                    incident_key=incident_key,
                    dedup_key=f"{incident_key}:escalate:{signal.alert.severity.value}",
                )
                return self._queue(db, alert, merged)
            if row is None:
                return None
            incident_key, severity, incident_channels = row
            db.execute("update incidents set resolved_at = ? where incident_key = ?", (time.time(), incident_key))
            (trigger,) = db.execute(
                "select payload from alerts where dedup_key = ?", (f"{incident_key}:trigger",)
            ).fetchone()
            # The recovery is about the incident as it was raised (kind, asset, runbook), told by the signal.
            alert = replace(
                Alert.from_json(json.loads(trigger)),
                dedup_key=f"{incident_key}:resolve",
                action=Action.RESOLVE,
                severity=Severity(severity),
                title=signal.alert.title,
                summary=signal.alert.summary,
                link=signal.alert.link or None,
                occurred_at=signal.alert.occurred_at,
            )
            return self._queue(db, alert, json.loads(incident_channels))

    def _queue(self, db: sqlite3.Connection, alert: Alert, channels: list[str]) -> Alert:
        now = time.time()
        if self.runbook_base_url and not alert.runbook.startswith(("http://", "https://")):
            alert = replace(alert, runbook=f"{self.runbook_base_url}/{alert.runbook}")
        db.execute(
            "insert into alerts(dedup_key, incident_key, payload, created_at) values (?, ?, ?, ?)",
            (alert.dedup_key, alert.incident_key, json.dumps(alert.to_json()), now),
        )
        db.executemany(
            "insert into deliveries(dedup_key, channel, next_attempt_at) values (?, ?, ?)",
            [(alert.dedup_key, channel, now) for channel in channels],
        )
        return alert

    def claim_due(self, limit: int = 50, now: float | None = None) -> list[PendingDelivery]:
        """Deliveries whose next attempt is due, claimed so that no other sender takes them meanwhile."""
        now = time.time() if now is None else now
        with self._transaction() as db:
            rows = db.execute(
                "select d.dedup_key, d.channel, d.attempts, a.payload from deliveries d "
                "join alerts a using (dedup_key) "
                "where d.delivered_at is null and d.expired_at is null and d.next_attempt_at <= ? "
                "and (d.claimed_until is null or d.claimed_until < ?) "
                "order by a.created_at, d.dedup_key, d.channel limit ?",
                (now, now, limit),
            ).fetchall()
            db.executemany(
                "update deliveries set claimed_until = ? where dedup_key = ? and channel = ?",
                [(now + self.policy.claim_seconds, key, channel) for key, channel, _, _ in rows],
            )
        return [
            PendingDelivery(Alert.from_json(json.loads(payload)), channel, attempts)
            for _, channel, attempts, payload in rows
        ]

    def mark_delivered(self, delivery: PendingDelivery) -> None:
        with self._transaction() as db:
            db.execute(
                "update deliveries set delivered_at = ?, attempts = attempts + 1, claimed_until = null, "
                "last_error = null where dedup_key = ? and channel = ?",
                (time.time(), delivery.alert.dedup_key, delivery.channel),
            )

    def mark_failed(self, delivery: PendingDelivery, error: str, fall_back_now: bool = False) -> str:
        """Record a failed attempt and schedule the next. Returns what the caller must do: "fallback" (write
        the alert to the fallback log: this was the first failure at the threshold, or `fall_back_now` for a
        rejected request that retrying will not fix, or it expired first), "retry" (nothing: it is retried
        later) or "expired" (nothing: retried for too long, given up, already in the fallback log)."""
        now = time.time()
        attempts = delivery.attempts + 1
        backoff = min(self.policy.max_backoff_seconds, self.policy.base_backoff_seconds * 2 ** (attempts - 1))
        next_attempt = now + backoff * random.uniform(0.8, 1.2)
        with self._transaction() as db:
            created_at, fell_back_at = db.execute(
                "select a.created_at, d.fell_back_at from alerts a join deliveries d using (dedup_key) "
                "where dedup_key = ? and channel = ?",
                (delivery.alert.dedup_key, delivery.channel),
            ).fetchone()
            expired = now - created_at >= self.policy.give_up_after_seconds
            fallback = fell_back_at is None and (fall_back_now or attempts >= self.policy.fallback_after_attempts)
            db.execute(
                "update deliveries set attempts = ?, next_attempt_at = ?, claimed_until = null, last_error = ?, "
                "fell_back_at = coalesce(fell_back_at, ?), expired_at = ? where dedup_key = ? and channel = ?",
                (
                    attempts,
                    next_attempt,
                    error,
                    now if fallback or expired else None,
                    now if expired else None,
                    delivery.alert.dedup_key,
                    delivery.channel,
                ),
            )
        if fallback or (expired and fell_back_at is None):
            return "fallback"
        return "expired" if expired else "retry"

    def pending_count(self) -> int:
        with self._transaction() as db:
            (count,) = db.execute(
                "select count(*) from deliveries where delivered_at is null and expired_at is null"
            ).fetchone()
        return count

    def deliveries(self) -> list[dict]:
        """Every delivery row with its alert's kind and action, oldest first (for reports and tests)."""
        with self._transaction() as db:
            db.row_factory = sqlite3.Row
            rows = db.execute(
                "select d.*, a.incident_key, a.created_at, a.payload from deliveries d "
                "join alerts a using (dedup_key) order by a.created_at, d.dedup_key, d.channel"
            ).fetchall()
        return [dict(row) for row in rows]

    def open_subjects(self, prefix: str) -> list[str]:
        with self._transaction() as db:
            rows = db.execute(
                "select subject from incidents where resolved_at is null and substr(subject, 1, ?) = ?",
                (len(prefix), prefix),
            ).fetchall()
        return [subject for (subject,) in rows]

    def open_incidents(self, kind: AlertKind | None = None) -> list[str]:
        with self._transaction() as db:
            rows = db.execute(
                "select incident_key from incidents where resolved_at is null and (? is null or kind = ?) "
                "order by opened_at",
                (kind and kind.value, kind and kind.value),
            ).fetchall()
        return [key for (key,) in rows]
