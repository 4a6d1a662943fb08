"""What an alert is: the message every channel renders, and the alert kinds with their runbooks.

An incident (a stale asset, a failing check, a failing job partition) has one `incident_key` for its whole
life; each notification about it (the trigger, an escalation, the recovery) has its own `dedup_key`, which
the outbox stores once and delivers once per channel.

Every alert says what to do next: the failed selection (`job`, `assets`, `partitions`) and, in its `details`,
the exact `oncall` commands to look at it (`diagnose`), to rerun exactly that selection (`rerun`) and to check
that it recovered (`verify`). The commands are built here, from the selection, so that what an alert says and
what `oncall rerun`/`oncall verify` parse cannot drift apart.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
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
    # The failed selection: the job to rerun, its assets and partitions (days), as `oncall rerun` takes them.
    job: str | None = None
    assets: tuple[str, ...] = ()
    partitions: tuple[str, ...] = ()

    @property
    def is_recovery(self) -> bool:
        return self.action is Action.RESOLVE

    def to_json(self) -> dict:
        payload = asdict(self)
        payload["kind"] = self.kind.value
        payload["action"] = self.action.value
        payload["severity"] = self.severity.value
        payload["owners"] = list(self.owners)
        payload["assets"] = list(self.assets)
        payload["partitions"] = list(self.partitions)
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
                "assets": tuple(payload.get("assets", ())),
                "partitions": tuple(payload.get("partitions", ())),
            }
        )


# Dagster's names for the jobs of materializations launched from the UI, the CLI or `dg.materialize`.
AD_HOC_JOB = "__ASSET_JOB"
_AD_HOC_JOBS = (AD_HOC_JOB, "__ephemeral_asset_job__", "__anonymous_asset_job")
AD_HOC_LABEL = "ad-hoc materialization"
# The keys of an alert's `details` that hold its next steps.
DIAGNOSE, VERIFY, RERUN = "diagnose", "verify", "rerun"
NOTHING_TO_RERUN = "nothing to rerun"


def job_label(job: str | None) -> str:
    """What people call a job: Dagster's internal names of ad-hoc materializations read as such."""
    if job is None:
        return "-"
    return AD_HOC_LABEL if job.startswith(_AD_HOC_JOBS) else job


def partitions_argument(partitions: Iterable[str]) -> str:
    """Days as one argument: `DAY`, `FIRST...LAST` when they are consecutive, else `DAY,DAY,...`."""
    days = sorted(set(partitions))
    if len(days) > 1:
        try:
            parsed = [date.fromisoformat(day) for day in days]
        except ValueError:
            return ",".join(days)
        if all(later - earlier == timedelta(days=1) for earlier, later in zip(parsed, parsed[1:], strict=False)):
            return f"{days[0]}...{days[-1]}"
    return ",".join(days)


def parse_partitions(text: str) -> tuple[str, ...]:
    """The inverse of `partitions_argument` (also accepts Dagster's `FIRST..LAST` range labels)."""
    text = text.strip()
    for separator in ("...", ".."):
        if separator in text:
            first, last = (date.fromisoformat(part) for part in text.split(separator, 1))
            if last < first:
                raise ValueError(f"the range {text!r} ends before it starts")
            return tuple((first + timedelta(days=n)).isoformat() for n in range((last - first).days + 1))
    days = tuple(day for day in (part.strip() for part in text.split(",")) if day)
    for day in days:
        date.fromisoformat(day)
    return days


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def _selection_options(assets: Iterable[str], partitions: Iterable[str]) -> list[str]:
    options = ["--assets", ",".join(sorted(assets))]
    if partitions := tuple(partitions):
        options += ["--partitions", partitions_argument(partitions)]
    return options


def rerun_command(job: str, assets: Iterable[str], partitions: Iterable[str] = ()) -> str:
    """`oncall rerun` of exactly this selection, in this job (a run incident resolves by the same job)."""
    return shlex.join(["oncall", "rerun", "--job", job, *_selection_options(assets, partitions)])


def verify_command(
    assets: Iterable[str],
    partitions: Iterable[str] = (),
    after: float | None = None,
    check: str | None = None,
    fresh: bool = False,
) -> str:
    """`oncall verify` of a selection: materialized after `after`, its checks passing, its raw partitions
    reconciled; with `check`, that check passing; with `fresh`, its freshness back to PASS."""
    words = ["oncall", "verify", *_selection_options(assets, partitions)]
    if after:
        words += ["--after", _iso(after)]
    if check:
        words += ["--check", check]
    if fresh:
        words.append("--fresh")
    return shlex.join(words)
