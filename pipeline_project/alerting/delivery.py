"""Draining the outbox: send each due delivery once, record the outcome, fall back when a channel fails.

A channel that keeps failing gets its alerts written to the log channel (so no alert is lost) and opens
an `alert_delivery_failing` incident of its own, sent to every other channel; the first successful send
to that channel resolves it. The primary channel is still retried with backoff until it accepts.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

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

    def __str__(self) -> str:
        return f"{len(self.delivered)} delivered, {len(self.failed)} failed, {len(self.fell_back)} fell back to the log"


def _fall_back(outbox: Outbox, channels: dict[str, Channel], delivery: PendingDelivery, error: str) -> None:
    channels[LOG_CHANNEL].send(delivery.alert)
    if delivery.channel == LOG_CHANNEL:
        return
    signal = delivery_failing_signal(
        delivery.channel, delivery.alert.dedup_key, error, firing=True, event_id=int(time.time() * 1000)
    )
    others = [name for name in channels if name != delivery.channel]
    outbox.record(signal, others)


def deliver_due(outbox: Outbox, channels: dict[str, Channel], limit: int = 50) -> DeliveryReport:
    report = DeliveryReport()
    for delivery in outbox.claim_due(limit=limit):
        label = f"{delivery.alert.dedup_key} -> {delivery.channel}"
        channel = channels.get(delivery.channel)
        try:
            if channel is None:
                raise DeliveryError(delivery.channel, "the channel is no longer configured", retryable=True)
            channel.send(delivery.alert)
        except DeliveryError as error:
            message = redact(str(error))
            outcome = outbox.mark_failed(delivery, message, fall_back_now=not error.retryable)
            report.failed.append(label)
            logger.warning("alert delivery %s failed (%s): %s", label, outcome, message)
            if outcome == "fallback":
                _fall_back(outbox, channels, delivery, message)
                report.fell_back.append(label)
            continue
        outbox.mark_delivered(delivery)
        report.delivered.append(label)
        if delivery.channel != LOG_CHANNEL:
            recovery = delivery_failing_signal(
                delivery.channel, delivery.alert.dedup_key, "", firing=False, event_id=int(time.time() * 1000)
            )
            outbox.record(recovery, [])
    return report


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
