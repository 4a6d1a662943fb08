"""The durable alert outbox: incidents, the alerts raised for them, and their delivery to each channel.

It is a SQLite file outside the Dagster instance, so alerts survive restarts of the daemon and of the
instance's own storage. An incident alerts once; each alert reaches each of its channels at least once:

- An incident opens once per subject (`freshness:raw_orders`, `check:daily_revenue:contract_errors`, ...)
  and is keyed by the event that opened it, so re-reading the same events after a crash changes nothing.
  Signals about a subject whose incident is already open are absorbed unless they raise its severity.
- Every alert is written, with its dedup key and one delivery row per channel, in the same transaction
  that opens, escalates or resolves the incident, before anything is sent.
- Only a successful send marks a delivery delivered. Failures back off exponentially up to
  `max_backoff_seconds` and are retried; after `fallback_after_attempts` failures (or a rejection that
  retrying will not fix) the alert is also written to the fallback log, and only once that write has
  succeeded is the delivery marked as fallen back (`fallback_due`, then `mark_failed(fell_back=True)`). A
  delivery is given up after `give_up_after_seconds` only if the fallback log has it, so an alert that
  neither its channel nor the log will take stays pending and keeps being retried.

Fencing. One sender delivers at a time: a sender holds the lease row `sender_lease` (`sender()`), renewed at
every claim, and another sender that finds it held does nothing. Deliveries are claimed one at a time
(`claim_next`), each with a fresh random claim token and for `claim_seconds`, twice the per-send deadline
(`channels.SEND_DEADLINE_SECONDS`, the one place that number is stated), so a claim outlives its send.
`mark_delivered` and `mark_failed` change the row only while it still carries the claim's token; a sender
whose claim was lost (it expired and another sender took the delivery over) changes nothing and is told so.

What this guarantees is at-least-once, not exactly-once: a sender that dies after the channel accepted an
alert and before the outbox marked it (a crash, SIGKILL, power loss) leaves the delivery claimed; once the
claim expires the next sender sends it again, with the same keys. The webhook's `Idempotency-Key` and
PagerDuty's `dedup_key` let those receivers drop the copy; Slack, the log file and email (whose Message-ID
is stable, but few mail systems drop a repeat by it) may show it twice.
"""

from __future__ import annotations

import json
import random
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from pipeline_project.alerting.alert import Action, Alert, AlertKind, Severity
from pipeline_project.alerting.channels import SEND_DEADLINE_SECONDS

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
    claim_token text,
    primary key (dedup_key, channel)
);
create table if not exists sender_lease (
    id integer primary key check (id = 1),
    holder text,
    expires_at real not null
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
    """A claimed delivery: only the holder of `claim_token` may mark it."""

    alert: Alert
    channel: str
    attempts: int
    claim_token: str = ""
    created_at: float = 0.0
    fell_back: bool = False


@dataclass(frozen=True)
class DeliveryPolicy:
    base_backoff_seconds: float = 15.0
    max_backoff_seconds: float = 300.0
    fallback_after_attempts: int = 3
    give_up_after_seconds: float = 24 * 3600.0
    send_deadline_seconds: float = SEND_DEADLINE_SECONDS

    def __post_init__(self) -> None:
        if self.send_deadline_seconds <= 0:
            raise ValueError(f"send_deadline_seconds must be positive, got {self.send_deadline_seconds!r}")

    @property
    def claim_seconds(self) -> float:
        """How long a claim (and the sender lease) lasts: derived from the send deadline, never shorter."""
        return 2 * self.send_deadline_seconds


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
        with self._transaction() as db:  # an outbox written before claims carried a token
            columns = {row[1] for row in db.execute("pragma table_info(deliveries)")}
            if "claim_token" not in columns:
                db.execute("alter table deliveries add column claim_token text")

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

    @contextmanager
    def sender(self) -> Iterator[str | None]:
        """Be the one sender: yields this sender's id while it holds the lease (renewed by `claim_next`), or
        None when another sender holds an unexpired lease. The lease is released on the way out."""
        holder = secrets.token_hex(8)
        now = time.time()
        with self._transaction() as db:
            row = db.execute("select holder, expires_at from sender_lease where id = 1").fetchone()
            if row is not None and row[0] is not None and row[1] > now:
                holder = None
            else:
                db.execute(
                    "insert or replace into sender_lease(id, holder, expires_at) values (1, ?, ?)",
                    (holder, now + self.policy.claim_seconds),
                )
        if holder is None:
            yield None
            return
        try:
            yield holder
        finally:
            with self._transaction() as db:
                db.execute(
                    "update sender_lease set holder = null, expires_at = 0 where id = 1 and holder = ?", (holder,)
                )

    def claim_next(self, sender: str, due_before: float | None = None) -> PendingDelivery | None:
        """Claim the oldest delivery due by `due_before` (default: now) for `sender`, renewing its lease; None
        when nothing is due or the lease was lost (it expired and another sender took it: stop sending)."""
        now = time.time()
        due_before = now if due_before is None else due_before
        with self._transaction() as db:
            row = db.execute("select holder from sender_lease where id = 1").fetchone()
            if row is None or row[0] != sender:
                return None
            db.execute("update sender_lease set expires_at = ? where id = 1", (now + self.policy.claim_seconds,))
            found = db.execute(
                "select d.dedup_key, d.channel, d.attempts, a.payload, a.created_at, d.fell_back_at from deliveries d "
                "join alerts a using (dedup_key) "
                "where d.delivered_at is null and d.expired_at is null and d.next_attempt_at <= ? "
                "and (d.claimed_until is null or d.claimed_until < ?) "
                "order by a.created_at, d.dedup_key, d.channel limit 1",
                (due_before, now),
            ).fetchone()
            if found is None:
                return None
            return self._claim(db, found, now)

    def claim_due(self, limit: int = 50, now: float | None = None) -> list[PendingDelivery]:
        """Deliveries whose next attempt is due, each claimed with its own token (for tools and tests: the
        delivery loop claims one at a time, under the sender lease, with `claim_next`)."""
        now = time.time() if now is None else now
        with self._transaction() as db:
            rows = db.execute(
                "select d.dedup_key, d.channel, d.attempts, a.payload, a.created_at, d.fell_back_at from deliveries d "
                "join alerts a using (dedup_key) "
                "where d.delivered_at is null and d.expired_at is null and d.next_attempt_at <= ? "
                "and (d.claimed_until is null or d.claimed_until < ?) "
                "order by a.created_at, d.dedup_key, d.channel limit ?",
                (now, now, limit),
            ).fetchall()
            return [self._claim(db, row, now) for row in rows]

    def _claim(self, db: sqlite3.Connection, row: tuple, now: float) -> PendingDelivery:
        dedup_key, channel, attempts, payload, created_at, fell_back_at = row
        token = secrets.token_hex(16)
        db.execute(
            "update deliveries set claimed_until = ?, claim_token = ? where dedup_key = ? and channel = ?",
            (now + self.policy.claim_seconds, token, dedup_key, channel),
        )
        return PendingDelivery(
            Alert.from_json(json.loads(payload)), channel, attempts, token, created_at, fell_back_at is not None
        )

    def mark_delivered(self, delivery: PendingDelivery) -> bool:
        """Record the successful send; False (and nothing changed) if the claim was lost meanwhile."""
        with self._transaction() as db:
            updated = db.execute(
                "update deliveries set delivered_at = ?, attempts = attempts + 1, claimed_until = null, "
                "claim_token = null, last_error = null where dedup_key = ? and channel = ? and claim_token = ?",
                (time.time(), delivery.alert.dedup_key, delivery.channel, delivery.claim_token),
            ).rowcount
        return updated == 1

    def fallback_due(self, delivery: PendingDelivery, fall_back_now: bool = False, now: float | None = None) -> bool:
        """Whether this failed attempt must also write the alert to the fallback log: it is not there yet, and
        this is the attempt at the threshold or later, or `fall_back_now` (a rejected request that retrying
        will not fix), or the delivery is old enough to be given up (which needs the log to have it)."""
        if delivery.fell_back:
            return False
        now = time.time() if now is None else now
        return (
            fall_back_now
            or delivery.attempts + 1 >= self.policy.fallback_after_attempts
            or now - delivery.created_at >= self.policy.give_up_after_seconds
        )

    def mark_failed(self, delivery: PendingDelivery, error: str, *, fell_back: bool = False) -> str:
        """Record a failed attempt and schedule the next; `fell_back` says the alert has just been written to
        the fallback log (call it only after that write succeeded). Returns "retry" (it is retried later),
        "expired" (retried for too long and in the fallback log: given up) or "lost_claim" (nothing recorded:
        the claim expired and another sender took the delivery over)."""
        now = time.time()
        attempts = delivery.attempts + 1
        backoff = min(self.policy.max_backoff_seconds, self.policy.base_backoff_seconds * 2 ** (attempts - 1))
        next_attempt = now + backoff * random.uniform(0.8, 1.2)
        with self._transaction() as db:
            row = db.execute(
                "select a.created_at, d.fell_back_at, d.claim_token from alerts a join deliveries d using (dedup_key) "
                "where dedup_key = ? and channel = ?",
                (delivery.alert.dedup_key, delivery.channel),
            ).fetchone()
            if row is None or row[2] != delivery.claim_token:
                return "lost_claim"
            created_at, fell_back_at, _ = row
            in_fallback_log = fell_back_at is not None or fell_back
            expired = now - created_at >= self.policy.give_up_after_seconds and in_fallback_log
            db.execute(
                "update deliveries set attempts = ?, next_attempt_at = ?, claimed_until = null, claim_token = null, "
                "last_error = ?, fell_back_at = coalesce(fell_back_at, ?), expired_at = ? "
                "where dedup_key = ? and channel = ?",
                (
                    attempts,
                    next_attempt,
                    error,
                    now if fell_back else None,
                    now if expired else None,
                    delivery.alert.dedup_key,
                    delivery.channel,
                ),
            )
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
