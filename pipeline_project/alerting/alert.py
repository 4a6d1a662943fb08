"""What an alert is: the message every channel renders, and the alert kinds with their runbooks.

An incident (a stale asset, a failing check, a failing job partition) has one `incident_key` for its whole
life; each notification about it (the trigger, an escalation, the recovery) has its own `dedup_key`, which
the outbox stores once and delivers once per channel.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum


class AlertKind(StrEnum):
    FRESHNESS_BREACH = "freshness_breach"
    CHECK_FAILED = "check_failed"
    SCHEMA_DRIFT = "schema_drift"
    SOURCE_UNAVAILABLE = "source_unavailable"
    TRANSFORMATION_FAILED = "transformation_failed"
    TRANSFORMATION_TIMEOUT = "transformation_timeout"
    ALERT_DELIVERY_FAILING = "alert_delivery_failing"


# Every alert links the page an on-call stranger follows; tests/test_alert_runbooks.py keeps this honest.
RUNBOOKS: dict[AlertKind, str] = {
    AlertKind.FRESHNESS_BREACH: "runbooks/freshness-breach.md",
    AlertKind.CHECK_FAILED: "runbooks/contract-check-failure.md",
    AlertKind.SCHEMA_DRIFT: "runbooks/schema-drift.md",
    AlertKind.SOURCE_UNAVAILABLE: "runbooks/source-unavailable.md",
    AlertKind.TRANSFORMATION_FAILED: "runbooks/transformation-failure.md",
    AlertKind.TRANSFORMATION_TIMEOUT: "runbooks/transformation-timeout.md",
    AlertKind.ALERT_DELIVERY_FAILING: "runbooks/alert-delivery-failing.md",
}


class Severity(StrEnum):
    ERROR = "ERROR"  # pages the on-call
    WARN = "WARN"  # notifies the owning team


class Action(StrEnum):
    TRIGGER = "trigger"
    RESOLVE = "resolve"


@dataclass(frozen=True)
class Alert:
    """One notification, channel-independent. Text fields never contain secrets: they are built from
    Dagster events whose error text is redacted before it gets here."""

    dedup_key: str
    incident_key: str
    kind: AlertKind
    action: Action
    severity: Severity
    title: str
    summary: str
    runbook: str
    asset: str | None = None
    partition: str | None = None
    link: str | None = None
    owners: tuple[str, ...] = ()
    route: str | None = None
    details: dict[str, str | int | float] = field(default_factory=dict)
    occurred_at: float = 0.0

    @property
    def is_recovery(self) -> bool:
        return self.action is Action.RESOLVE

    def to_json(self) -> dict:
        payload = asdict(self)
        payload["kind"] = self.kind.value
        payload["action"] = self.action.value
        payload["severity"] = self.severity.value
        payload["owners"] = list(self.owners)
        return payload

    @classmethod
    def from_json(cls, payload: dict) -> Alert:
        return cls(
            **{
                **payload,
                "kind": AlertKind(payload["kind"]),
                "action": Action(payload["action"]),
                "severity": Severity(payload["severity"]),
                "owners": tuple(payload.get("owners", ())),
            }
        )
