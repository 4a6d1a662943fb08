"""The alerting resource: where the outbox lives, which channels are configured, the webserver's URL.

Every field comes from an environment variable (see `.env.example`); an empty channel setting turns that
channel off. The webhook URLs, the PagerDuty routing key and the SMTP password are secrets: they are only
ever read through `dg.EnvVar`, so Dagster does not display them, and they never appear in alert text.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from pipeline_project.alerting.channels import Channel, configured_channels
from pipeline_project.alerting.outbox import DeliveryPolicy, Outbox

CHANNEL_SETTINGS = {
    "webhook_url": "ALERT_WEBHOOK_URL",
    "slack_webhook_url": "ALERT_SLACK_WEBHOOK_URL",
    "pagerduty_routing_key": "ALERT_PAGERDUTY_ROUTING_KEY",
    "pagerduty_events_url": "ALERT_PAGERDUTY_EVENTS_URL",
    "smtp_host": "ALERT_SMTP_HOST",
    "smtp_port": "ALERT_SMTP_PORT",
    "smtp_user": "ALERT_SMTP_USER",
    "smtp_password": "ALERT_SMTP_PASSWORD",
    "smtp_security": "ALERT_SMTP_SECURITY",
    "email_from": "ALERT_EMAIL_FROM",
    "email_to": "ALERT_EMAIL_TO",
}


class AlertingResource(dg.ConfigurableResource):
    directory: str
    webserver_url: str
    # Where the runbooks are published (e.g. the repository's URL on your Git host, ending in the branch),
    # so alerts carry a clickable link instead of a path in the repository.
    runbook_base_url: str = ""
    webhook_url: str = ""
    slack_webhook_url: str = ""
    pagerduty_routing_key: str = ""
    pagerduty_events_url: str = ""
    smtp_host: str = ""
    smtp_port: str = ""
    smtp_user: str = ""
    smtp_password: str = ""
    smtp_security: str = ""
    email_from: str = ""
    email_to: str = ""
    retry_base_seconds: float = 15.0
    fallback_after_attempts: int = 3

    @property
    def path(self) -> Path:
        return Path(self.directory)

    @property
    def heartbeat_path(self) -> Path:
        return self.path / "heartbeat.json"

    def outbox(self) -> Outbox:
        policy = DeliveryPolicy(
            base_backoff_seconds=self.retry_base_seconds, fallback_after_attempts=self.fallback_after_attempts
        )
        return Outbox(self.path / "outbox.sqlite", policy, self.runbook_base_url)

    def channels(self) -> dict[str, Channel]:
        settings = {env: getattr(self, field) for field, env in CHANNEL_SETTINGS.items()}
        settings["ALERT_LOG_PATH"] = str(self.path / "alerts.log")
        return configured_channels(settings)


def alerting_resource_from_env(**tuning) -> AlertingResource:
    return AlertingResource(
        directory=dg.EnvVar("ALERT_DIR"),
        webserver_url=dg.EnvVar("DAGSTER_WEBSERVER_URL"),
        runbook_base_url=dg.EnvVar("ALERT_RUNBOOK_BASE_URL"),
        **{field: dg.EnvVar(env) for field, env in CHANNEL_SETTINGS.items()},
        **tuning,
    )
