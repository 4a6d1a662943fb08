"""The email channel: a plain-text mail over SMTP with STARTTLS (default), implicit TLS or, for a loopback
relay, no TLS; a recovery threads under its alert."""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import ipaddress
import logging
import smtplib
import socket
import ssl
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Literal

from pipeline_project.alerting.alert import Alert
from pipeline_project.alerting.channels import (
    SEND_DEADLINE_SECONDS,
    ChannelSpec,
    DeliveryError,
    Setting,
    collapse,
    scrub_secrets,
    status_detail,
    status_label,
    truncate,
)

log = logging.getLogger(__name__)

HOST, PORT, SECURITY = "ALERT_SMTP_HOST", "ALERT_SMTP_PORT", "ALERT_SMTP_SECURITY"
USER, PASSWORD = "ALERT_SMTP_USER", "ALERT_SMTP_PASSWORD"
SENDER, RECIPIENTS = "ALERT_EMAIL_FROM", "ALERT_EMAIL_TO"
SmtpSecurity = Literal["starttls", "ssl", "none"]
SMTP_DEFAULT_PORTS: dict[str, int] = {"starttls": 587, "ssl": 465, "none": 25}


def email_message(alert: Alert, sender: str, recipients: Sequence[str]) -> EmailMessage:
    """A plain-text email. Its Message-ID comes from the dedup key; References and In-Reply-To point at an
    id derived from the incident key, so a trigger and its recovery thread together in mail clients."""
    domain = email.utils.parseaddr(sender)[1].rpartition("@")[2]
    message = EmailMessage()
    message["Subject"] = truncate(collapse(f"[{status_label(alert)}] {alert.title}"), 200)
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = email.utils.formatdate(alert.occurred_at or None)
    message["Message-ID"] = f"<{_digest(alert.dedup_key)}.alert@{domain}>"
    incident_id = f"<{_digest(alert.incident_key)}.incident@{domain}>"
    message["In-Reply-To"] = incident_id
    message["References"] = incident_id
    # Tells mail servers and vacation responders not to answer an automated message.
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(email_body(alert))
    return message


def email_body(alert: Alert) -> str:
    occurred = datetime.fromtimestamp(alert.occurred_at, UTC).isoformat() if alert.occurred_at else "-"
    rows = [
        ("Status", status_detail(alert)),
        ("Kind", alert.kind.value),
        ("Asset", alert.asset or "-"),
        ("Partition", alert.partition or "-"),
        ("Owners", ", ".join(alert.owners) or "-"),
        ("Route", alert.route or "-"),
        ("Occurred", occurred),
        ("Run", alert.link or "-"),
        ("Runbook", alert.runbook),
        ("Incident", alert.incident_key),
        ("Alert", alert.dedup_key),
    ]
    lines = [alert.title, "", alert.summary, ""] + [f"{label + ':':<11}{value}" for label, value in rows]
    if alert.details:
        lines += ["", "Details:"] + [f"  {key}: {value}" for key, value in alert.details.items()]
    return "\n".join(lines) + "\n"


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class EmailChannel:
    """Email over SMTP with STARTTLS (default), implicit TLS or, for a loopback relay, no TLS."""

    name = "email"

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        recipients: Sequence[str],
        username: str | None = None,
        password: str | None = None,
        security: SmtpSecurity = "starttls",
        timeout: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        # Each check names the parameter and the setting that feeds it, for configured_channels' sake.
        if security not in SMTP_DEFAULT_PORTS:
            raise ValueError(f"ALERT_SMTP_SECURITY must be one of {sorted(SMTP_DEFAULT_PORTS)}, got {security!r}")
        if "@" not in email.utils.parseaddr(sender)[1]:
            raise ValueError(f"ALERT_EMAIL_FROM (sender) must be an email address, got {sender!r}")
        if not recipients:
            raise ValueError("ALERT_EMAIL_TO (recipients) must list at least one address when email is on")
        invalid = [recipient for recipient in recipients if "@" not in recipient]
        if invalid:
            raise ValueError(f"ALERT_EMAIL_TO (recipients) has entries that are not email addresses: {invalid}")
        if bool(username) != bool(password):
            raise ValueError("ALERT_SMTP_USER and ALERT_SMTP_PASSWORD (username, password) must be set together")
        if username and security == "none" and not _is_loopback(host):
            raise ValueError(
                "ALERT_SMTP_SECURITY=none with a login would send the password in clear text; use starttls or ssl"
            )
        self._host = host
        self._port = port
        self._sender = sender
        self._recipients = list(recipients)
        self._username = username
        self._password = password
        self._security = security
        self._timeout = timeout
        self._ssl_context = ssl_context

    def send(self, alert: Alert, *, deadline_seconds: float = SEND_DEADLINE_SECONDS) -> None:
        watchdog = _SmtpWatchdog(deadline_seconds)
        try:
            error = self._attempt(email_message(alert, self._sender, self._recipients), watchdog)
        finally:
            watchdog.cancel()
        if error is not None and watchdog.fired:
            error = self._error(
                f"no answer from {self._host}:{self._port} within the send deadline of {deadline_seconds:g} s",
                retryable=True,
            )
        # Raised outside the except block so no library exception is chained onto it.
        if error is not None:
            raise error

    def _attempt(self, message: EmailMessage, watchdog: _SmtpWatchdog) -> DeliveryError | None:
        where = f"{self._host}:{self._port}"
        context = self._ssl_context or ssl.create_default_context()
        try:
            with self._connect(context, watchdog) as smtp:
                if self._security == "starttls":
                    smtp.starttls(context=context)
                if self._username:
                    smtp.login(self._username, self._password)
                refused = smtp.send_message(message, to_addrs=self._recipients)
        except smtplib.SMTPRecipientsRefused as err:
            codes = sorted({code for code, _ in err.recipients.values()})
            return self._error(f"all recipients refused at {where} (SMTP {codes})", retryable=max(codes) < 500)
        except smtplib.SMTPResponseException as err:
            reply = err.smtp_error.decode(errors="replace") if isinstance(err.smtp_error, bytes) else err.smtp_error
            return self._error(
                f"SMTP {err.smtp_code} from {where}: {self._redacted(collapse(str(reply)))}",
                retryable=400 <= err.smtp_code < 500,
            )
        except smtplib.SMTPServerDisconnected as err:
            return self._error(f"{where} disconnected: {self._redacted(str(err))}", retryable=True)
        except smtplib.SMTPException as err:
            # What is left (no AUTH or STARTTLS offered, no usable AUTH mechanism) is configuration.
            return self._error(f"{where}: {self._redacted(str(err))}", retryable=False)
        except ssl.SSLError as err:
            return self._error(f"TLS with {where} failed: {err.reason or type(err).__name__}", retryable=False)
        except TimeoutError:
            return self._error(f"timed out talking to {where} after {self._timeout} s", retryable=True)
        except ConnectionRefusedError:
            return self._error(f"connection to {where} refused", retryable=True)
        except OSError as err:
            return self._error(f"{where}: {type(err).__name__}: {self._redacted(str(err))}", retryable=True)
        if refused:
            log.warning(
                "email %s: %d of %d recipients refused", message["Message-ID"], len(refused), len(self._recipients)
            )
        return None

    def _connect(self, context: ssl.SSLContext, watchdog: _SmtpWatchdog) -> smtplib.SMTP:
        timeout = min(self._timeout, watchdog.seconds)
        if self._security == "ssl":
            return _WatchedSmtpSsl(watchdog, self._host, self._port, timeout=timeout, context=context)
        return _WatchedSmtp(watchdog, self._host, self._port, timeout=timeout)

    def _redacted(self, text: str) -> str:
        return scrub_secrets(text, [self._password or ""])

    def _error(self, reason: str, *, retryable: bool) -> DeliveryError:
        return DeliveryError(self.name, reason, retryable=retryable)


class _SmtpWatchdog:
    """Shuts the SMTP connection down when the send deadline passes, so a server that answers slowly, one
    line at a time, cannot hold a send past it (smtplib's timeout is per socket operation, not per send)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.fired = False
        self._smtp: smtplib.SMTP | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def watch(self, smtp: smtplib.SMTP) -> None:
        with self._lock:
            self._smtp = smtp

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            sock = self._smtp.sock if self._smtp is not None else None
            if sock is not None:
                with contextlib.suppress(OSError):  # already closed
                    sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked read or write with an error

    def cancel(self) -> None:
        self._timer.cancel()


class _WatchedSmtp(smtplib.SMTP):
    def __init__(self, watchdog: _SmtpWatchdog, *args, **kwargs) -> None:
        watchdog.watch(self)
        super().__init__(*args, **kwargs)


class _WatchedSmtpSsl(smtplib.SMTP_SSL):
    def __init__(self, watchdog: _SmtpWatchdog, *args, **kwargs) -> None:
        watchdog.watch(self)
        super().__init__(*args, **kwargs)


def _build(settings: Mapping[str, str]) -> EmailChannel:
    security = (settings[SECURITY] or "starttls").lower()
    raw_port = settings[PORT]
    if not raw_port:
        # An unknown security value gets port 0 here and is rejected, by name, by EmailChannel.
        port = SMTP_DEFAULT_PORTS.get(security, 0)
    elif raw_port.isdigit() and 0 < int(raw_port) < 65536:
        port = int(raw_port)
    else:
        raise ValueError(f"{PORT} must be a port number from 1 to 65535, got {raw_port!r}")
    recipients = [address.strip() for address in settings[RECIPIENTS].split(",") if address.strip()]
    return EmailChannel(
        settings[HOST],
        port,
        settings[SENDER],
        recipients,
        username=settings[USER] or None,
        password=settings[PASSWORD] or None,
        security=security,
    )


CHANNEL = ChannelSpec(
    name=EmailChannel.name,
    sends="a plain-text mail; a recovery threads under its alert",
    settings=(
        Setting(HOST, "SMTP server", required=True),
        Setting(PORT, "SMTP port", default="587 (starttls), 465 (ssl), 25 (none)"),
        Setting(USER, "Login user, set together with ALERT_SMTP_PASSWORD", default="no login"),
        Setting(PASSWORD, "Login password", secret=True),
        Setting(SECURITY, "starttls, ssl or none (none allows a login only to a loopback host)", default="starttls"),
        Setting(SENDER, "Sender address", required=True),
        Setting(RECIPIENTS, "Recipient addresses, comma-separated", required=True),
    ),
    build=_build,
)
