"""The alert outbox and the log channel, read-only: open incidents, one incident's alert, pending deliveries,
the last alerts logged."""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path

from pipeline_project.alerting.alert import DIAGNOSE, RERUN, VERIFY, Alert
from pipeline_project.ops.oncall.common import (
    ALERT_LOG_FILE,
    OncallError,
    clip,
    outbox,
    print_table,
    say,
    utc,
)


@dataclass(frozen=True)
class Incident:
    key: str
    subject: str
    opened_at: float
    resolved_at: float | None
    alert: Alert  # the trigger: what was raised, with its failed selection and commands

    @property
    def resolved(self) -> bool:
        return self.resolved_at is not None


def load_incident(reference: str) -> Incident:
    """An incident by its key (`<subject>@<event>`, in every alert), or the latest one of a subject."""
    with outbox() as connection:
        row = connection.execute(
            "select i.incident_key, i.subject, i.opened_at, i.resolved_at, a.payload from incidents i "
            "join alerts a on a.dedup_key = i.incident_key || ':trigger' where ? in (i.incident_key, i.subject) "
            "order by i.incident_key = ? desc, i.opened_at desc limit 1",
            (reference, reference),
        ).fetchone()
    if row is None:
        raise OncallError(
            f"no incident {reference!r} in {Path(os.environ['ALERT_DIR'])}: pass the incident key an alert "
            "carries (`incident_key`; `oncall incidents` lists the open ones)"
        )
    key, subject, opened_at, resolved_at, payload = row
    return Incident(key, subject, opened_at, resolved_at, Alert.from_json(json.loads(payload)))


def incidents(args: argparse.Namespace) -> int:
    with outbox() as connection:
        rows = connection.execute(
            "select incident_key, kind, severity, opened_at from incidents where resolved_at is null order by opened_at"
        ).fetchall()
    if not rows:
        say("no open incident")
        return 0
    print_table(
        ("incident", "kind", "severity", "opened (UTC)"),
        [(key, kind, severity, utc(opened)) for key, kind, severity, opened in rows],
    )
    return 0


def incident(args: argparse.Namespace) -> int:
    """One incident: its state, the alert that opened it, and the commands it carries."""
    found = load_incident(args.incident)
    alert = found.alert
    state = f"resolved {utc(found.resolved_at)}" if found.resolved else "OPEN"
    say(f"incident {found.key}  {alert.kind.value}  {alert.severity.value}  opened {utc(found.opened_at)}  {state}")
    say(f"  {alert.title}")
    say(f"  {clip(alert.summary)}")
    if alert.job:
        partitions = " ".join(alert.partitions) or "-"
        say(f"  job {alert.job}  assets {', '.join(alert.assets) or '-'}  partitions {partitions}")
    for name in (DIAGNOSE, RERUN, VERIFY):
        if name in alert.details:
            say(f"  {name}: {alert.details[name]}")
    say(f"  runbook {alert.runbook}" + (f"  link {alert.link}" if alert.link else ""))
    return 0


def pending_deliveries(channel: str | None = None) -> list[tuple]:
    with outbox() as connection:
        return connection.execute(
            "select channel, dedup_key, attempts, next_attempt_at, fell_back_at is not null, last_error "
            "from deliveries where delivered_at is null and expired_at is null and (? is null or channel = ?) "
            "order by channel, next_attempt_at",
            (channel, channel),
        ).fetchall()


def deliveries(args: argparse.Namespace) -> int:
    if args.expired:
        with outbox() as connection:
            rows = connection.execute(
                "select channel, dedup_key, attempts, expired_at, last_error from deliveries "
                "where expired_at is not null and delivered_at is null and (? is null or channel = ?) "
                "order by expired_at",
                (args.channel, args.channel),
            ).fetchall()
        if not rows:
            say("no expired delivery")
            return 0
        header = ("channel", "dedup key", "attempts", "given up (UTC)", "last error")
        print_table(header, [(ch, key, n, utc(at), clip(error, 200)) for ch, key, n, at, error in rows])
        return 0
    rows = pending_deliveries(args.channel)
    if not rows:
        on = f" to {args.channel}" if args.channel else ""
        say(f"no pending delivery{on}: every alert reached its channels")
        return 0
    per_channel = Counter(channel for channel, *_ in rows)
    say(f"{len(rows)} pending: " + ", ".join(f"{channel} {count}" for channel, count in per_channel.items()))
    print_table(
        ("channel", "dedup key", "attempts", "next try (UTC)", "in log", "last error"),
        [
            (ch, key, n, utc(next_at), "yes" if logged else "no", clip(error, 200))
            for ch, key, n, next_at, logged, error in rows
        ],
    )
    return 0


def alerts_log(args: argparse.Namespace) -> int:
    path = Path(os.environ["ALERT_DIR"]) / ALERT_LOG_FILE
    if not path.exists():
        raise OncallError(f"no alert log at {path}: the log channel has not written an alert there yet")
    last: deque[dict] = deque(maxlen=args.count)
    with path.open(encoding="utf-8", errors="replace") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = {"text": f"(line {number} is not JSON) {line.strip()}"}
            if args.key is None or args.key in (record.get("dedup_key"), record.get("incident_key")):
                last.append(record)
    if args.key is not None and not last:
        raise OncallError(f"no alert with dedup or incident key {args.key!r} in {path}")
    for record in last:
        say(f"{utc(record.get('logged_at')) or '-'}  {record.get('text', '')}")
        if args.commands:
            for name in (DIAGNOSE, RERUN, VERIFY):
                if name in record.get("details", {}):
                    say(f"    {name}: {record['details'][name]}")
    return 0
