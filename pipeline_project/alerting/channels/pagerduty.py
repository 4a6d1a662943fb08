"""The PagerDuty channel: Events API v2, a trigger opening (or joining) an incident and a recovery resolving it."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from pipeline_project.alerting.alert import Alert, Severity
from pipeline_project.alerting.channels import SEND_DEADLINE_SECONDS, ChannelSpec, Setting, is_web_url, one_line
from pipeline_project.alerting.channels._http import JsonPoster, web_url

ROUTING_KEY = "ALERT_PAGERDUTY_ROUTING_KEY"
EVENTS_URL = "ALERT_PAGERDUTY_EVENTS_URL"
DEFAULT_PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
PAGERDUTY_SUMMARY_LIMIT = 1024


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
        if is_web_url(href)
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
        self._poster = JsonPoster(
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


def _build(settings: Mapping[str, str]) -> PagerDutyChannel:
    events_url = web_url(settings, EVENTS_URL, secret=False) if settings[EVENTS_URL] else DEFAULT_PAGERDUTY_EVENTS_URL
    return PagerDutyChannel(settings[ROUTING_KEY], events_url)


CHANNEL = ChannelSpec(
    name=PagerDutyChannel.name,
    sends="Events API v2 `trigger` / `resolve` with the incident's dedup key",
    settings=(
        Setting(ROUTING_KEY, "PagerDuty Events API v2 integration key", secret=True, required=True),
        Setting(EVENTS_URL, "Events API endpoint", default=DEFAULT_PAGERDUTY_EVENTS_URL),
    ),
    build=_build,
)
