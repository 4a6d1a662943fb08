"""Alert delivery channels: how one `Alert` becomes a webhook POST, a Slack message, a PagerDuty event, an
email or a log line, and which channels the settings turn on.

Each `send` is exactly one delivery attempt. It returns when the receiver accepted the alert and raises
`DeliveryError` otherwise; retrying with backoff is the outbox's job, across sensor ticks.

A send never outlasts its deadline (`deadline_seconds`, by default `SEND_DEADLINE_SECONDS`), connection and
TLS included: the HTTP channels run the request under `asyncio.wait_for`, whose cancellation closes the
connection; email arms a watchdog that shuts the SMTP socket down at the deadline (a TCP connect that is
still in progress then ends at its own timeout, which is never longer than the deadline). This is what
lets the outbox fence its claims: a delivery is claimed for twice the send deadline
(`outbox.DeliveryPolicy.claim_seconds`), so by the time a claim expires and another sender may take the
delivery over, the send that claimed it has ended one way or the other. Webhook URLs
(Slack's included), the PagerDuty routing key and the SMTP password are credentials: they appear in no
error message and no log record, and URLs are shown as scheme://host:port/… only.

Settings read by `configured_channels` (an empty or absent value turns that channel off; `log` is always on):

    ALERT_WEBHOOK_URL            generic JSON webhook (secret)
    ALERT_SLACK_WEBHOOK_URL      Slack incoming webhook (secret)
    ALERT_PAGERDUTY_ROUTING_KEY  PagerDuty Events API v2 integration key (secret)
    ALERT_PAGERDUTY_EVENTS_URL   default https://events.pagerduty.com/v2/enqueue
    ALERT_SMTP_HOST              turns email on; needs ALERT_EMAIL_FROM and ALERT_EMAIL_TO
    ALERT_SMTP_PORT              default 587 (starttls), 465 (ssl), 25 (none)
    ALERT_SMTP_SECURITY          starttls (default), ssl or none (none allows a login only to a loopback host)
    ALERT_SMTP_USER, ALERT_SMTP_PASSWORD (secret)   optional login
    ALERT_EMAIL_FROM             sender address
    ALERT_EMAIL_TO               comma-separated recipient addresses
    ALERT_LOG_PATH               JSON-lines file of every alert; empty: the `logging` module only
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import email.utils
import hashlib
import ipaddress
import json
import logging
import os
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Literal, Protocol, TypeVar

import httpx

from pipeline_project.alerting.alert import Alert, Severity

log = logging.getLogger(__name__)

# The one place the send deadline is stated: the longest one send may take, whatever the channel. The outbox
# derives its claim on a delivery from it (twice as long), so that a claim always outlives its send.
SEND_DEADLINE_SECONDS = 30.0
DEFAULT_PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
SLACK_TEXT_LIMIT = 3000
SLACK_HEADER_LIMIT = 150
SLACK_FIELD_LIMIT = 2000
PAGERDUTY_SUMMARY_LIMIT = 1024
SmtpSecurity = Literal["starttls", "ssl", "none"]
SMTP_DEFAULT_PORTS: dict[str, int] = {"starttls": 587, "ssl": 465, "none": 25}


class DeliveryError(Exception):
    """One failed delivery attempt. The message names the channel and the failure, never a credential."""

    def __init__(self, channel: str, reason: str, *, retryable: bool) -> None:
        super().__init__(f"{channel} delivery failed: {reason}")
        self.channel = channel
        self.reason = reason
        self.retryable = retryable


class Channel(Protocol):
    name: str

    def send(self, alert: Alert, *, deadline_seconds: float = SEND_DEADLINE_SECONDS) -> None:
        """Deliver the alert once, within `deadline_seconds`; raise DeliveryError if the receiver did not
        accept it by then."""


Result = TypeVar("Result")


def _within_deadline(start: Callable[[], Awaitable[Result]], seconds: float) -> tuple[bool, Result | None]:
    """Run the coroutine `start()` returns, cancelled (its connections closed) after `seconds`: (True, its
    result), or (False, None) when the deadline came first."""

    async def bounded() -> tuple[bool, Result | None]:
        try:
            return True, await asyncio.wait_for(start(), seconds)
        except TimeoutError:
            return False, None

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(bounded())
    # Called from inside an event loop (not how sensors call it): run the send on a thread of its own.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, bounded()).result()


def status_label(alert: Alert) -> str:
    return "RESOLVED" if alert.is_recovery else alert.severity.value


def _status_detail(alert: Alert) -> str:
    return f"RESOLVED (was {alert.severity.value})" if alert.is_recovery else alert.severity.value


def one_line(alert: Alert, limit: int = 1000) -> str:
    """The alert as one line a human can act on: status, title, what happened, where, and where to look."""
    parts = [
        f"[{status_label(alert)}] {alert.title}: {alert.summary}",
        f"asset {alert.asset or '-'} partition {alert.partition or '-'}",
        f"runbook {alert.runbook}",
    ]
    if alert.link:
        parts.append(f"run {alert.link}")
    return _truncate(_collapse(" | ".join(parts)), limit)


def redact_url(url: str) -> str:
    """A URL reduced to what identifies the receiver: for webhooks the path and query are the secret."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return "<invalid URL>"
    port = parsed.port or {"https": 443, "http": 80}.get(parsed.scheme, 0)
    return f"{parsed.scheme}://{parsed.host}:{port}/…"


def is_retryable_status(status: int) -> bool:
    return status >= 500 or status in (408, 429)


def _collapse(text: str) -> str:
    return " ".join(text.split())


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _is_web_url(value: str | None) -> bool:
    return bool(value) and value.startswith(("https://", "http://"))


def _scrub(text: str, secrets: Sequence[str]) -> str:
    """Remove secrets that a server or a library echoed into error text."""
    for secret in sorted(secrets, key=len, reverse=True):
        # One- to three-character "secrets" are bare paths like "/" and would shred the text.
        if len(secret) > 3:
            text = text.replace(secret, "…")
    return text


class _SecretUrlLogFilter(logging.Filter):
    """httpx logs every request's full URL at INFO, and for a webhook the URL is the credential: this filter
    rewrites the URLs the channels registered as secret, leaving other httpx users' log lines alone."""

    def __init__(self) -> None:
        super().__init__()
        self._secret_urls: set[str] = set()

    def protect(self, url: str) -> None:
        self._secret_urls.add(str(httpx.URL(url)))

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(str(arg) in self._secret_urls for arg in record.args):
            record.args = tuple(redact_url(str(arg)) if str(arg) in self._secret_urls else arg for arg in record.args)
        return True


_secret_url_filter = _SecretUrlLogFilter()
logging.getLogger("httpx").addFilter(_secret_url_filter)


def _socket_error(error: BaseException) -> str:
    """What the operating system said (`[Errno 111] Connection refused`), which the async transport wraps in
    "All connection attempts failed"; the error's own text if there is no such cause."""
    cause: BaseException | None = error
    for _ in range(10):
        if cause is None:
            break
        if isinstance(cause, OSError) and cause.errno:
            return f"[Errno {cause.errno}] {os.strerror(cause.errno)}"
        cause = cause.__cause__ or cause.__context__
    return str(error)


class _JsonPoster:
    """One POST of a JSON body to one endpoint, with every failure turned into a redacted DeliveryError."""

    def __init__(
        self,
        channel: str,
        url: str,
        *,
        secrets: Sequence[str],
        url_is_secret: bool,
        connect_timeout: float,
        read_timeout: float,
    ) -> None:
        self._channel = channel
        self._url = url
        self._shown_url = redact_url(url)
        self._secrets = [secret for secret in secrets if secret]
        if url_is_secret:
            parsed = httpx.URL(url)
            self._secrets += [url, str(parsed), parsed.raw_path.decode(), parsed.path, parsed.query.decode()]
            self._secrets.append(parsed.userinfo.decode())
            _secret_url_filter.protect(url)
        self._timeout = httpx.Timeout(read_timeout, connect=connect_timeout)

    def post(
        self,
        body: dict,
        *,
        headers: Mapping[str, str] | None = None,
        expected_status: int | None = None,
        deadline_seconds: float = SEND_DEADLINE_SECONDS,
    ) -> None:
        in_time, error = _within_deadline(
            lambda: self._attempt(body, dict(headers or {}), expected_status), deadline_seconds
        )
        if not in_time:
            error = self._error(
                f"no answer from {self._shown_url} within the send deadline of {deadline_seconds:g} s", retryable=True
            )
        # Raised here rather than inside the except block, so the httpx exception, whose request carries
        # the secret URL, is not chained onto the DeliveryError as its __context__.
        if error is not None:
            raise error

    async def _attempt(self, body: dict, headers: dict[str, str], expected_status: int | None) -> DeliveryError | None:
        try:
            async with httpx.AsyncClient(timeout=self._timeout, follow_redirects=False) as client:
                response = await client.post(self._url, json=body, headers=headers)
        except httpx.TimeoutException as err:
            return self._error(f"timed out ({type(err).__name__}) at {self._shown_url}", retryable=True)
        except httpx.ConnectError as err:
            detail = self._redacted(_socket_error(err))
            return self._error(f"connection to {self._shown_url} failed: {detail}", retryable=True)
        except httpx.TransportError as err:
            detail = self._redacted(str(err))
            return self._error(f"{type(err).__name__} at {self._shown_url}: {detail}", retryable=True)
        accepted = response.status_code == expected_status if expected_status else response.is_success
        if accepted:
            return None
        answer = self._redacted(_collapse(response.text[:200]))
        expectation = f" (expected {expected_status})" if expected_status else ""
        return self._error(
            f"HTTP {response.status_code}{expectation} from {self._shown_url}: {answer}",
            retryable=is_retryable_status(response.status_code),
        )

    def _redacted(self, text: str) -> str:
        return _scrub(text, self._secrets)

    def _error(self, reason: str, *, retryable: bool) -> DeliveryError:
        return DeliveryError(self._channel, reason, retryable=retryable)


class WebhookChannel:
    """A generic JSON webhook: the alert's fields plus a one-line `text`, with the dedup key as the
    Idempotency-Key header so a receiver can drop a redelivery."""

    name = "webhook"

    def __init__(self, url: str, *, connect_timeout: float = 5.0, read_timeout: float = 10.0) -> None:
        self._poster = _JsonPoster(
            self.name,
            url,
            secrets=(),
            url_is_secret=True,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
        )

    def send(self, alert: Alert, *, deadline_seconds: float = SEND_DEADLINE_SECONDS) -> None:
        self._poster.post(
            alert.to_json() | {"text": one_line(alert)},
            headers={"Idempotency-Key": alert.dedup_key},
            deadline_seconds=deadline_seconds,
        )


def _mrkdwn_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _mrkdwn(text: str, limit: int = SLACK_TEXT_LIMIT) -> dict:
    return {"type": "mrkdwn", "text": _truncate(text, limit)}


def _field(label: str, value: str) -> dict:
    return _mrkdwn(f"*{label}*\n{_mrkdwn_escape(value)}", SLACK_FIELD_LIMIT)


def slack_message(alert: Alert) -> dict:
    """A Slack incoming-webhook message in Block Kit, with `text` as the notification fallback."""
    if alert.is_recovery:
        heading = f"✅ RESOLVED: {alert.title}"
    else:
        heading = f"{'🚨' if alert.severity is Severity.ERROR else '⚠️'} {alert.title}"
    blocks: list[dict] = [
        {"type": "header", "text": {"type": "plain_text", "text": _truncate(heading, SLACK_HEADER_LIMIT)}},
        {"type": "section", "text": _mrkdwn(_mrkdwn_escape(alert.summary))},
        {
            "type": "section",
            "fields": [
                _field("Asset", alert.asset or "-"),
                _field("Partition", alert.partition or "-"),
                _field("Severity", _status_detail(alert)),
                _field("Kind", alert.kind.value),
                _field("Owners", ", ".join(alert.owners) or "-"),
            ],
        },
    ]
    if alert.details:
        details = " · ".join(f"{key}: {value}" for key, value in alert.details.items())
        blocks.append({"type": "context", "elements": [_mrkdwn(_mrkdwn_escape(details))]})
    where = [f"*Runbook:* `{_mrkdwn_escape(alert.runbook)}`"]
    if alert.link:
        where.append(f"*Run:* {_mrkdwn_escape(alert.link)}")
    blocks.append({"type": "section", "text": _mrkdwn("\n".join(where))})
    buttons = [
        {"type": "button", "text": {"type": "plain_text", "text": text}, "url": url, "action_id": action_id}
        for text, url, action_id in (("Open run", alert.link, "open_run"), ("Runbook", alert.runbook, "runbook"))
        if _is_web_url(url)
    ]
    if buttons:
        blocks.append({"type": "actions", "elements": buttons})
    return {"text": one_line(alert, SLACK_TEXT_LIMIT), "blocks": blocks}


class SlackChannel:
    """A Slack incoming webhook. The webhook URL is the credential: whoever has it can post."""

    name = "slack"

    def __init__(self, webhook_url: str, *, connect_timeout: float = 5.0, read_timeout: float = 10.0) -> None:
        self._poster = _JsonPoster(
            self.name,
            webhook_url,
            secrets=(),
            url_is_secret=True,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
        )

    def send(self, alert: Alert, *, deadline_seconds: float = SEND_DEADLINE_SECONDS) -> None:
        self._poster.post(slack_message(alert), deadline_seconds=deadline_seconds)


def pagerduty_event(alert: Alert, routing_key: str, source: str = "dagster") -> dict:
    """An Events API v2 event. The incident key is PagerDuty's dedup_key, so a resolve closes the incident
    its trigger opened and a repeated trigger joins it."""
    if alert.is_recovery:
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": alert.incident_key}
    payload: dict = {
        "summary": one_line(alert, PAGERDUTY_SUMMARY_LIMIT),
        "source": source,
        "severity": "critical" if alert.severity is Severity.ERROR else "warning",
        "class": alert.kind.value,
        # The alert's own fields come last so a detail cannot shadow, say, the runbook.
        "custom_details": {
            **alert.details,
            "summary": alert.summary,
            "asset": alert.asset,
            "partition": alert.partition,
            "owners": list(alert.owners),
            "runbook": alert.runbook,
            "link": alert.link,
            "alert_key": alert.dedup_key,
        },
    }
    if alert.asset:
        payload["component"] = alert.asset
    if alert.route:
        payload["group"] = alert.route
    if alert.occurred_at:
        payload["timestamp"] = datetime.fromtimestamp(alert.occurred_at, UTC).isoformat()
    event = {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": alert.incident_key,
        "payload": payload,
        "client": "Dagster",
    }
    links = [
        {"href": href, "text": text}
        for href, text in ((alert.link, "Run in Dagster"), (alert.runbook, "Runbook"))
        if _is_web_url(href)
    ]
    if links:
        event["links"] = links
        event["client_url"] = links[0]["href"]
    return event


class PagerDutyChannel:
    """PagerDuty Events API v2: a trigger opens (or joins) the incident, a recovery resolves it."""

    name = "pagerduty"

    def __init__(
        self,
        routing_key: str,
        events_url: str = DEFAULT_PAGERDUTY_EVENTS_URL,
        *,
        source: str = "dagster",
        connect_timeout: float = 5.0,
        read_timeout: float = 10.0,
    ) -> None:
        self._routing_key = routing_key
        self._source = source
        self._poster = _JsonPoster(
            self.name,
            events_url,
            secrets=(routing_key,),
            url_is_secret=False,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
        )

    def send(self, alert: Alert, *, deadline_seconds: float = SEND_DEADLINE_SECONDS) -> None:
        event = pagerduty_event(alert, self._routing_key, self._source)
        self._poster.post(event, expected_status=202, deadline_seconds=deadline_seconds)


def email_message(alert: Alert, sender: str, recipients: Sequence[str]) -> EmailMessage:
    """A plain-text email. Its Message-ID comes from the dedup key; References and In-Reply-To point at an
    id derived from the incident key, so a trigger and its recovery thread together in mail clients."""
    domain = email.utils.parseaddr(sender)[1].rpartition("@")[2]
    message = EmailMessage()
    message["Subject"] = _truncate(_collapse(f"[{status_label(alert)}] {alert.title}"), 200)
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
        ("Status", _status_detail(alert)),
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
                f"SMTP {err.smtp_code} from {where}: {self._redacted(_collapse(str(reply)))}",
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
        return _scrub(text, [self._password or ""])

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


def _setting(settings: Mapping[str, str | None], key: str) -> str:
    return (settings.get(key) or "").strip()


def _web_url(settings: Mapping[str, str | None], key: str, *, secret: bool) -> str:
    url = _setting(settings, key)
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        shown = "" if secret else f" (got {url!r})"
        raise ValueError(f"{key} must be an http:// or https:// URL with a host{shown}")
    return url


def configured_channels(settings: Mapping[str, str | None]) -> dict[str, Channel]:
    """The channels the settings turn on, by name; `log` always. A half-configured channel is an error
    rather than silently off, and an error names the setting but never the value of a secret one."""
    channels: dict[str, Channel] = {}
    if _setting(settings, "ALERT_WEBHOOK_URL"):
        channels["webhook"] = WebhookChannel(_web_url(settings, "ALERT_WEBHOOK_URL", secret=True))
    if _setting(settings, "ALERT_SLACK_WEBHOOK_URL"):
        channels["slack"] = SlackChannel(_web_url(settings, "ALERT_SLACK_WEBHOOK_URL", secret=True))
    if _setting(settings, "ALERT_PAGERDUTY_ROUTING_KEY"):
        events_url = DEFAULT_PAGERDUTY_EVENTS_URL
        if _setting(settings, "ALERT_PAGERDUTY_EVENTS_URL"):
            events_url = _web_url(settings, "ALERT_PAGERDUTY_EVENTS_URL", secret=False)
        channels["pagerduty"] = PagerDutyChannel(_setting(settings, "ALERT_PAGERDUTY_ROUTING_KEY"), events_url)
    elif _setting(settings, "ALERT_PAGERDUTY_EVENTS_URL"):
        raise ValueError("ALERT_PAGERDUTY_EVENTS_URL is set but ALERT_PAGERDUTY_ROUTING_KEY is empty")
    email_channel = _email_channel(settings)
    if email_channel is not None:
        channels["email"] = email_channel
    channels["log"] = LogChannel(_setting(settings, "ALERT_LOG_PATH") or None)
    return channels


def _email_channel(settings: Mapping[str, str | None]) -> EmailChannel | None:
    host = _setting(settings, "ALERT_SMTP_HOST")
    if not host:
        email_settings = ("ALERT_SMTP_PORT", "ALERT_SMTP_USER", "ALERT_SMTP_PASSWORD", "ALERT_SMTP_SECURITY")
        stray = [key for key in (*email_settings, "ALERT_EMAIL_FROM", "ALERT_EMAIL_TO") if _setting(settings, key)]
        if stray:
            raise ValueError(f"{', '.join(stray)} set but ALERT_SMTP_HOST is empty")
        return None
    security = (_setting(settings, "ALERT_SMTP_SECURITY") or "starttls").lower()
    raw_port = _setting(settings, "ALERT_SMTP_PORT")
    if not raw_port:
        # An unknown security value gets port 0 here and is rejected, by name, by EmailChannel.
        port = SMTP_DEFAULT_PORTS.get(security, 0)
    elif raw_port.isdigit() and 0 < int(raw_port) < 65536:
        port = int(raw_port)
    else:
        raise ValueError(f"ALERT_SMTP_PORT must be a port number from 1 to 65535, got {raw_port!r}")
    recipients = [address.strip() for address in _setting(settings, "ALERT_EMAIL_TO").split(",") if address.strip()]
    return EmailChannel(
        host,
        port,
        _setting(settings, "ALERT_EMAIL_FROM"),
        recipients,
        username=_setting(settings, "ALERT_SMTP_USER") or None,
        password=_setting(settings, "ALERT_SMTP_PASSWORD") or None,
        security=security,
    )
