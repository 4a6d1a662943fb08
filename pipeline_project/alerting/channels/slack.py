"""The Slack channel: a Block Kit message posted to an incoming webhook."""

from __future__ import annotations

from pipeline_project.alerting.alert import Alert, Severity
from pipeline_project.alerting.channels import (
    SEND_DEADLINE_SECONDS,
    ChannelSpec,
    Setting,
    is_web_url,
    one_line,
    status_detail,
    truncate,
)
from pipeline_project.alerting.channels._http import JsonPoster, web_url

URL = "ALERT_SLACK_WEBHOOK_URL"
SLACK_TEXT_LIMIT = 3000
SLACK_HEADER_LIMIT = 150
SLACK_FIELD_LIMIT = 2000


def _mrkdwn_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _mrkdwn(text: str, limit: int = SLACK_TEXT_LIMIT) -> dict:
    return {"type": "mrkdwn", "text": truncate(text, limit)}


def _field(label: str, value: str) -> dict:
    return _mrkdwn(f"*{label}*\n{_mrkdwn_escape(value)}", SLACK_FIELD_LIMIT)


def slack_message(alert: Alert) -> dict:
    """A Slack incoming-webhook message in Block Kit, with `text` as the notification fallback."""
    if alert.is_recovery:
        heading = f"✅ RESOLVED: {alert.title}"
    else:
        heading = f"{'🚨' if alert.severity is Severity.ERROR else '⚠️'} {alert.title}"
    blocks: list[dict] = [
        {"type": "header", "text": {"type": "plain_text", "text": truncate(heading, SLACK_HEADER_LIMIT)}},
        {"type": "section", "text": _mrkdwn(_mrkdwn_escape(alert.summary))},
        {
            "type": "section",
            "fields": [
                _field("Asset", alert.asset or "-"),
                _field("Partition", alert.partition or "-"),
                _field("Severity", status_detail(alert)),
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
        if is_web_url(url)
    ]
    if buttons:
        blocks.append({"type": "actions", "elements": buttons})
    return {"text": one_line(alert, SLACK_TEXT_LIMIT), "blocks": blocks}


class SlackChannel:
    """A Slack incoming webhook. The webhook URL is the credential: whoever has it can post."""

    name = "slack"

    def __init__(self, webhook_url: str, *, connect_timeout: float = 5.0, read_timeout: float = 10.0) -> None:
        self._poster = JsonPoster(
            self.name,
            webhook_url,
            secrets=(),
            url_is_secret=True,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
        )

    def send(self, alert: Alert, *, deadline_seconds: float = SEND_DEADLINE_SECONDS) -> None:
        self._poster.post(slack_message(alert), deadline_seconds=deadline_seconds)


CHANNEL = ChannelSpec(
    name=SlackChannel.name,
    sends="a Block Kit message to an incoming webhook (no idempotency key)",
    settings=(Setting(URL, "Slack incoming webhook URL", secret=True, required=True),),
    build=lambda settings: SlackChannel(web_url(settings, URL, secret=True)),
)
