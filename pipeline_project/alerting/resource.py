"""The alerting resource: where the outbox lives, which channels are configured, the webserver's URL.

Every field comes from an environment variable (see `.env.example`). The channel fields are not listed here:
there is one per setting of every channel in the registry (`alerting/channels/`), named after the setting
(ALERT_SMTP_HOST -> smtp_host), empty by default; an empty channel setting turns that channel off.
`alerting_resource_from_env` reads each of them through `dg.EnvVar`, so Dagster does not display the ones
marked secret (webhook URLs, the PagerDuty routing key, the SMTP password), and they never appear in alert
text.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pydantic

from pipeline_project.alerting.channels import Channel, channel_settings, configured_channels
from pipeline_project.alerting.channels.log import LOG_PATH
from pipeline_project.alerting.outbox import DeliveryPolicy, Outbox

# Field -> environment variable, for every setting of every registered channel.
CHANNEL_SETTINGS: dict[str, str] = {setting.field: setting.env for setting in channel_settings()}

# The channel fields as a base class, derived from the registry: plain `str` fields with their setting's
# meaning as the description Dagster shows, so the resource below reads like one written by hand.
_ChannelFields = pydantic.create_model(
    "_ChannelFields",
    __base__=dg.ConfigurableResource,
    __module__=__name__,
    **{
        setting.field: (str, pydantic.Field(default="", description=f"{setting.env}: {setting.meaning}"))
        for setting in channel_settings()
    },
)


class AlertingResource(_ChannelFields):
    directory: str
    webserver_url: str
    # Where the runbooks are published (e.g. the repository's URL on your Git host, ending in the branch),
    # so alerts carry a clickable link instead of a path in the repository.
    runbook_base_url: str = ""
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
        settings[LOG_PATH] = str(self.path / "alerts.log")
        return configured_channels(settings)


_clashes = sorted(set(CHANNEL_SETTINGS) & set(AlertingResource.__annotations__))
if _clashes:
    raise ValueError(f"channel settings would replace AlertingResource's own fields: {_clashes}")


def alerting_resource_from_env(**tuning) -> AlertingResource:
    """The resource as a code location builds it: every setting, the secret ones included, read through
    `dg.EnvVar` when the resource is initialized, never at import."""
    return AlertingResource(
        directory=dg.EnvVar("ALERT_DIR"),
        webserver_url=dg.EnvVar("DAGSTER_WEBSERVER_URL"),
        runbook_base_url=dg.EnvVar("ALERT_RUNBOOK_BASE_URL"),
        **{field: dg.EnvVar(env) for field, env in CHANNEL_SETTINGS.items()},
        **tuning,
    )
