"""The log channel, always on and the fallback of every other: the Python log, and one JSON line per alert
in `$ALERT_DIR/alerts.log`."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

from pipeline_project.alerting.alert import Alert, Severity
from pipeline_project.alerting.channels import SEND_DEADLINE_SECONDS, ChannelSpec, DeliveryError, one_line

log = logging.getLogger(__name__)

# Not an environment variable: the alerting resource sets it to $ALERT_DIR/alerts.log, where the on-call
# tools read it. Without it, alerts go to the `logging` module only.
LOG_PATH = "ALERT_LOG_PATH"


class LogChannel:
    """The fallback: every alert goes to the `logging` module, and to a JSON-lines file when a path is set.

    Each line is written with one append-mode write and fsynced before `send` returns, so concurrent
    writers never interleave and an acknowledged alert survives a crash. The only failure is a file that
    cannot be written; the log record has been emitted by then.
    """

    name = "log"

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else None
        self._lock = threading.Lock()

    def send(self, alert: Alert, *, deadline_seconds: float = SEND_DEADLINE_SECONDS) -> None:
        """One local append (the deadline is for network channels: a local write is not cut short)."""
        if alert.is_recovery:
            level = logging.INFO
        else:
            level = logging.ERROR if alert.severity is Severity.ERROR else logging.WARNING
        log.log(level, "ALERT %s", one_line(alert, limit=4000))
        if self.path is None:
            return
        record = alert.to_json() | {"text": one_line(alert), "logged_at": time.time()}
        line = (json.dumps(record, ensure_ascii=False, default=str) + "\n").encode()
        error = self._append(line)
        if error is not None:
            raise error

    def _append(self, line: bytes) -> DeliveryError | None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._lock:
                descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    written = 0
                    while written < len(line):
                        written += os.write(descriptor, line[written:])
                    os.fsync(descriptor)
                finally:
                    os.close(descriptor)
        except OSError as err:
            return DeliveryError(self.name, f"cannot append to {self.path}: {err.strerror}", retryable=True)
        return None


CHANNEL = ChannelSpec(
    name=LogChannel.name,
    sends="one JSON line per alert in `$ALERT_DIR/alerts.log`, and the Python log",
    settings=(),
    build=lambda settings: LogChannel(settings.get(LOG_PATH) or None),
    always_on=True,
)
