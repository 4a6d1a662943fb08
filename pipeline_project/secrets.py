"""Which settings are secrets, and scrubbing their values from text that leaves the process.

Secrets are read through `dg.EnvVar` (Dagster never displays those values); anything that quotes
outside text (an error from a source, a failed step's message) is passed through `redact` before it is
logged, stored as metadata or sent in an alert.
"""

from __future__ import annotations

import logging
import os
import re

# The secret settings that are not an alert channel's: the channels mark theirs in their module.
SOURCE_SECRET_SETTINGS = ("SHOP_API_TOKEN",)
REDACTED = "***"
# Shorter values would redact ordinary words; no real token, key or webhook URL is this short.
_MIN_SECRET_LENGTH = 6


def secret_settings() -> tuple[str, ...]:
    """Every setting that holds a secret: the source's token and each alert channel setting marked secret."""
    # The registry is imported here, when asked, not at the top: the channel modules import this module (for
    # its httpx log filter), so reading the registry while this module loads would have them import it
    # half-initialized; and the source client, which imports this module too, has no use for alerting.
    from pipeline_project.alerting.channels import channel_settings

    return (*SOURCE_SECRET_SETTINGS, *(setting.env for setting in channel_settings() if setting.secret))


def __getattr__(name: str) -> tuple[str, ...]:
    """`SECRET_SETTINGS` is `secret_settings()`, computed when read for the reason that function gives."""
    if name == "SECRET_SETTINGS":
        return secret_settings()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def redact(text: str) -> str:
    """`text` with the value of every secret setting present in the environment replaced by ***."""
    secrets = sorted(
        {value for name in secret_settings() if len(value := os.environ.get(name, "")) >= _MIN_SECRET_LENGTH},
        key=len,
        reverse=True,
    )
    if not secrets:
        return text
    return re.sub("|".join(re.escape(secret) for secret in secrets), REDACTED, text)


_URL = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?:[^/@\s]*@)?(?P<host>[^/\s?#'\"]*)(?P<rest>[^\s'\"]*)")


def scrub_urls(text: str) -> str:
    """`text` with every URL cut down to its scheme and host: userinfo, a query string and even a path can carry
    a token (a Slack or webhook URL is a secret as a whole)."""
    return _URL.sub(lambda match: match["scheme"] + match["host"] + ("/…" if match["rest"] else ""), text)


class ScrubbingFilter(logging.Filter):
    """Rewrites a log record's message with URLs scrubbed and secrets redacted (for loggers of libraries that
    log URLs, such as httpx)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(scrub_urls(record.getMessage()))
        record.args = None
        return True


# The HTTP libraries log every request with its full URL (INFO), in whichever process sends one: the source
# client and every alert channel import this module.
for _library in ("httpx", "httpcore"):
    logging.getLogger(_library).addFilter(ScrubbingFilter())


def mask_personal(value: object) -> str:
    """Personal data (an e-mail address, a name) as it may appear in an alert: its first character and the
    shape of an e-mail's domain, nothing that identifies the person."""
    text = str(value)
    if not text:
        return text
    local, at, domain = text.partition("@")
    masked = f"{local[:1]}***"
    if at:
        masked += "@***" + (f".{domain.rsplit('.', 1)[1]}" if "." in domain else "")
    return masked
