"""What the HTTP channels (webhook, Slack, PagerDuty) share: one JSON POST under the send deadline, every
failure a DeliveryError with the credentials scrubbed, and the check of a URL setting.

httpx logs every request's full URL at INFO; the URLs a channel marks as secret are rewritten in those log
records here, and `pipeline_project.secrets` (imported for its filter) scrubs every URL httpx logs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TypeVar

import httpx

import pipeline_project.secrets  # noqa: F401  (its filter scrubs the URLs httpx and httpcore log)
from pipeline_project.alerting.channels import SEND_DEADLINE_SECONDS, DeliveryError, collapse, scrub_secrets

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


class JsonPoster:
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
        answer = self._redacted(collapse(response.text[:200]))
        expectation = f" (expected {expected_status})" if expected_status else ""
        return self._error(
            f"HTTP {response.status_code}{expectation} from {self._shown_url}: {answer}",
            retryable=is_retryable_status(response.status_code),
        )

    def _redacted(self, text: str) -> str:
        return scrub_secrets(text, self._secrets)

    def _error(self, reason: str, *, retryable: bool) -> DeliveryError:
        return DeliveryError(self._channel, reason, retryable=retryable)


def web_url(settings: Mapping[str, str], key: str, *, secret: bool) -> str:
    """The setting `key` as an http(s) URL with a host; a ValueError naming it (and quoting it unless it is
    a secret) otherwise."""
    url = settings[key]
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        shown = "" if secret else f" (got {url!r})"
        raise ValueError(f"{key} must be an http:// or https:// URL with a host{shown}")
    return url
