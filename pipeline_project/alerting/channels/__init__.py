"""Alert channels: how one `Alert` becomes a webhook POST, a Slack message, a PagerDuty event, an email or a
log line, and the registry of those channels, from which everything that names a channel is derived.

**The registry.** Each channel is one module of this package that declares, once, `CHANNEL`: a
`ChannelSpec` with its name, its settings (environment variable, whether it is a secret, a one-line meaning
and default for the docs) and how it is built from them. `CHANNEL_MODULES` lists those modules, one line
each. Derived from it, and from nothing else:

- the `AlertingResource` fields and `alerting_resource_from_env` (`alerting/resource.py`): one field per
  setting, each read through `dg.EnvVar`;
- the secret settings redacted from every text (`pipeline_project.secrets.secret_settings`);
- the settings the code location defaults to empty (`pipeline_project/settings.py`);
- the check that every route in `policies.ALERT_ROUTES` names a known channel, when the code location loads;
- the channel table of docs/operations.md and `.env.example`'s alert channel block (`make docs` writes them, and
  `tests/test_alert_channel_registry.py` fails when they are stale).

Adding a channel is adding its module and its line in `CHANNEL_MODULES` (and naming it in the routes of
`policies.ALERT_ROUTES` that should use it). A channel is off while its required settings are empty; some of
its settings set without the required ones is an error, not silently off. The log channel is always on.

**Sending.** Each `send` is exactly one delivery attempt. It returns when the receiver accepted the alert
and raises `DeliveryError` otherwise; retrying with backoff is the outbox's job, across sensor ticks.

A send never outlasts its deadline (`deadline_seconds`, by default `SEND_DEADLINE_SECONDS`), connection and
TLS included: the HTTP channels run the request under `asyncio.wait_for`, whose cancellation closes the
connection (`_http.py`); email arms a watchdog that shuts the SMTP socket down at the deadline (a TCP
connect that is still in progress then ends at its own timeout, which is never longer than the deadline).
This is what lets the outbox fence its claims: a delivery is claimed for twice the send deadline
(`outbox.DeliveryPolicy.claim_seconds`), so by the time a claim expires and another sender may take the
delivery over, the send that claimed it has ended one way or the other. Settings marked secret (webhook
URLs, Slack's included, the PagerDuty routing key, the SMTP password) are credentials: they appear in no
error message and no log record, and URLs are shown as scheme://host:port/… only.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from pipeline_project.alerting.alert import Alert

# The one place the send deadline is stated: the longest one send may take, whatever the channel. The outbox
# derives its claim on a delivery from it (twice as long), so that a claim always outlives its send.
SEND_DEADLINE_SECONDS = 30.0

# The registry: one line per channel, the module that declares it as `CHANNEL`, in the order the docs list
# them. The modules are imported on first use (`registered_channels`), since they import the types below.
CHANNEL_MODULES: tuple[str, ...] = (
    "pipeline_project.alerting.channels.webhook",
    "pipeline_project.alerting.channels.slack",
    "pipeline_project.alerting.channels.pagerduty",
    "pipeline_project.alerting.channels.email",
    "pipeline_project.alerting.channels.log",
)


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


@dataclass(frozen=True)
class Setting:
    """One environment variable a channel is built from."""

    env: str  # ALERT_<SOMETHING>; the AlertingResource field it fills is <something> (`field`)
    meaning: str  # one line for .env.example
    default: str = ""  # what an empty value means, for the docs ("" when empty simply means unset)
    secret: bool = False  # read only through dg.EnvVar, redacted from every text, never quoted in an error
    required: bool = False  # the channel is off while any required setting is empty

    @property
    def field(self) -> str:
        """The `AlertingResource` field: ALERT_SMTP_HOST -> smtp_host."""
        return self.env.removeprefix("ALERT_").lower()


@dataclass(frozen=True)
class ChannelSpec:
    """An alert channel as its module declares it (`CHANNEL`).

    `build` gets every setting stripped, the channel's own ones present ("" when empty), and is called only
    when the channel is on: always for an `always_on` channel, otherwise when its required settings are set.
    It raises ValueError naming the setting (never a secret's value) when a value is invalid.
    """

    name: str  # the name routes use (`policies.ALERT_ROUTES`) and the outbox stores
    sends: str  # one line for the channel table of docs/operations.md: what its receiver gets
    settings: tuple[Setting, ...]
    build: Callable[[Mapping[str, str]], Channel]
    always_on: bool = False


def registered_channels() -> tuple[ChannelSpec, ...]:
    """Every channel of the registry, in its order; a registry that contradicts itself is an error."""
    specs = tuple(importlib.import_module(module).CHANNEL for module in CHANNEL_MODULES)
    _check_registry(specs)
    return specs


def channel_names() -> tuple[str, ...]:
    return tuple(spec.name for spec in registered_channels())


def channel_settings() -> tuple[Setting, ...]:
    """Every channel's settings, in registry order."""
    return tuple(setting for spec in registered_channels() for setting in spec.settings)


def _check_registry(specs: Sequence[ChannelSpec]) -> None:
    problems = []
    names = [spec.name for spec in specs]
    problems += [f"channel {name!r} is registered twice" for name in sorted({n for n in names if names.count(n) > 1})]
    envs = [setting.env for spec in specs for setting in spec.settings]
    problems += [f"setting {env} is declared twice" for env in sorted({env for env in envs if envs.count(env) > 1})]
    problems += [f"setting {env} does not start with ALERT_" for env in envs if not env.startswith("ALERT_")]
    problems += [
        f"channel {spec.name!r} is neither always on nor has a required setting that turns it on"
        for spec in specs
        if not spec.always_on and not any(setting.required for setting in spec.settings)
    ]
    if problems:
        raise ValueError(f"the alert channel registry (CHANNEL_MODULES) is inconsistent: {'; '.join(problems)}")


def configured_channels(settings: Mapping[str, str | None]) -> dict[str, Channel]:
    """The channels the settings turn on, by name, in registry order; `log` always. A half-configured channel
    is an error rather than silently off, and an error names settings but never the value of a secret one."""
    values = {key: (value or "").strip() for key, value in settings.items()}
    channels: dict[str, Channel] = {}
    for spec in registered_channels():
        own = {setting.env: values.get(setting.env, "") for setting in spec.settings}
        if not spec.always_on:
            missing = [setting.env for setting in spec.settings if setting.required and not own[setting.env]]
            given = [env for env, value in own.items() if value]
            if missing and given:
                required = ", ".join(setting.env for setting in spec.settings if setting.required)
                raise ValueError(
                    f"{', '.join(given)} set but {', '.join(missing)} empty: {spec.name} is on with {required} "
                    "set, and off with none of its settings set"
                )
            if missing:
                continue
        channels[spec.name] = spec.build(values | own)
    return channels


# What every channel renders: the status, one line a human can act on, and bounded, collapsed text.


def status_label(alert: Alert) -> str:
    return "RESOLVED" if alert.is_recovery else alert.severity.value


def status_detail(alert: Alert) -> str:
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
    return truncate(collapse(" | ".join(parts)), limit)


def collapse(text: str) -> str:
    return " ".join(text.split())


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def is_web_url(value: str | None) -> bool:
    return bool(value) and value.startswith(("https://", "http://"))


def scrub_secrets(text: str, secrets: Sequence[str]) -> str:
    """Remove secrets that a server or a library echoed into error text."""
    for secret in sorted(secrets, key=len, reverse=True):
        # One- to three-character "secrets" are bare paths like "/" and would shred the text.
        if len(secret) > 3:
            text = text.replace(secret, "…")
    return text
