"""Draining the outbox: one sender at a time sends each due delivery once per pass, records the outcome, and
falls back to the log channel when a channel keeps failing.

A channel that keeps failing gets its alerts written to the log channel and opens an
`alert_delivery_failing` incident of its own, sent to every other channel; the first successful send to that
channel resolves it. The primary channel is still retried with backoff until it accepts. The log is written
*before* the delivery is marked as fallen back: if that write fails too, the delivery is not marked, stays
pending, and the fallback is tried again at its next failed attempt (see `outbox` for the guarantee).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeline_project import fault_points
from pipeline_project.alerting.channels import Channel, DeliveryError
from pipeline_project.alerting.outbox import Outbox, PendingDelivery
from pipeline_project.alerting.signals import delivery_failing_signal
from pipeline_project.secrets import redact

LOG_CHANNEL = "log"
logger = logging.getLogger(__name__)


@dataclass
class DeliveryReport:
    delivered: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    fell_back: list[str] = field(default_factory=list)
    lost_claims: list[str] = field(default_factory=list)
    busy: bool = False  # another sender holds the lease; this pass sent nothing

    def __str__(self) -> str:
        if self.busy:
            return "another sender is delivering"
        text = f"{len(self.delivered)} delivered, {len(self.failed)} failed, {len(self.fell_back)} fell back to the log"
        return text + (f", {len(self.lost_claims)} claim(s) lost" if self.lost_claims else "")


def deliver_due(outbox: Outbox, channels: dict[str, Channel], limit: int = 50) -> DeliveryReport:
    """Send up to `limit` deliveries that are due, each at most once in this pass, if no other sender is."""
    report = DeliveryReport()
    due_before = time.time()  # a delivery that fails now is due again later, never twice in one pass
    with outbox.sender() as sender:
        if sender is None:
            report.busy = True
            return report
        for _ in range(limit):
            delivery = outbox.claim_next(sender, due_before)
            if delivery is None:
                break
            _deliver(outbox, channels, delivery, report)
    return report


def _deliver(outbox: Outbox, channels: dict[str, Channel], delivery: PendingDelivery, report: DeliveryReport) -> None:
    label = f"{delivery.alert.dedup_key} -> {delivery.channel}"
    channel = channels.get(delivery.channel)
    try:
        if channel is None:
            raise DeliveryError(delivery.channel, "the channel is no longer configured", retryable=True)
        channel.send(delivery.alert, deadline_seconds=outbox.policy.send_deadline_seconds)
    except DeliveryError as error:
        _failed(outbox, channels, delivery, redact(str(error)), not error.retryable, report, label)
        return
    fault_points.reached("alert_sent_before_marked")
    if not outbox.mark_delivered(delivery):
        report.lost_claims.append(label)
        logger.warning("alert delivery %s was sent, but its claim had been lost: another sender owns it now", label)
        return
    report.delivered.append(label)
    if delivery.channel != LOG_CHANNEL:
        recovery = delivery_failing_signal(
            delivery.channel, delivery.alert.dedup_key, "", firing=False, event_id=int(time.time() * 1000)
        )
        outbox.record(recovery, [])


def _failed(
    outbox: Outbox,
    channels: dict[str, Channel],
    delivery: PendingDelivery,
    message: str,
    rejected: bool,
    report: DeliveryReport,
    label: str,
) -> None:
    fallback = outbox.fallback_due(delivery, fall_back_now=rejected)
    fell_back = False
    if fallback:
        try:
            channels[LOG_CHANNEL].send(delivery.alert)
            fell_back = True
        except DeliveryError as log_error:
            logger.error(
                "alert %s could not be written to the fallback log either (%s); it stays pending and the "
                "fallback is tried again at its next attempt",
                delivery.alert.dedup_key,
                redact(str(log_error)),
            )
    outcome = outbox.mark_failed(delivery, message, fell_back=fell_back)
    if outcome == "lost_claim":
        report.lost_claims.append(label)
        logger.warning("alert delivery %s failed, and its claim had been lost meanwhile: %s", label, message)
        return
    report.failed.append(label)
    if fell_back:
        report.fell_back.append(label)
    logger.warning(
        "alert delivery %s failed (%s%s): %s", label, outcome, ", written to the log" if fell_back else "", message
    )
    if fallback and delivery.channel != LOG_CHANNEL:
        signal = delivery_failing_signal(
            delivery.channel, delivery.alert.dedup_key, message, firing=True, event_id=int(time.time() * 1000)
        )
        outbox.record(signal, [name for name in channels if name != delivery.channel])


def write_heartbeat(path: Path, outbox: Outbox, report: DeliveryReport) -> None:
    """Atomically record that the delivery loop is alive, for a check from outside Dagster."""
    path.parent.mkdir(parents=True, exist_ok=True)
    beat = {
        "ticked_at": time.time(),
        "pending_deliveries": outbox.pending_count(),
        "delivered_last_tick": len(report.delivered),
        "failed_last_tick": len(report.failed),
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(beat))
    os.replace(tmp, path)
