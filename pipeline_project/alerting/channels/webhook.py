"""The generic JSON webhook channel: any HTTP endpoint that accepts a POST of the alert as JSON."""

from __future__ import annotations

from pipeline_project.alerting.alert import Alert
from pipeline_project.alerting.channels import SEND_DEADLINE_SECONDS, ChannelSpec, Setting, one_line
from pipeline_project.alerting.channels._http import JsonPoster, web_url

URL = "ALERT_WEBHOOK_URL"


class WebhookChannel:
    """A generic JSON webhook: the alert's fields plus a one-line `text`, with the dedup key as the
    Idempotency-Key header so a receiver can drop a redelivery."""

    name = "webhook"

    def __init__(self, url: str, *, connect_timeout: float = 5.0, read_timeout: float = 10.0) -> None:
        self._poster = JsonPoster(
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


CHANNEL = ChannelSpec(
    name=WebhookChannel.name,
    sends="the alert as JSON, with its dedup key as the `Idempotency-Key` header",
    settings=(Setting(URL, "Generic JSON webhook URL (the URL often carries a token)", secret=True, required=True),),
    build=lambda settings: WebhookChannel(web_url(settings, URL, secret=True)),
)
