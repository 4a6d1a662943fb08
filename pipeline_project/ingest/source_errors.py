"""How reading the shop API fails, and which failures are worth another attempt.

`SourceError` (and `BrokenListing`, a listing that contradicts itself) is what leaves the client. The others
are what one attempt fails with inside it: a status other than 200 (`StatusError`), a 200 whose body is cut
short (`UnreadableBody`) or is not what was asked for (`UnexpectedResponse`), a response that did not arrive
in time (`ResponseDeadlineExceeded`). The retry policy: a dropped connection, a timeout, a body cut short, a
429 and a 5xx are transient (`is_transient`), and the wait before the next attempt honours the server's
Retry-After, capped, else backs off exponentially with jitter (`RetryAfterOrBackoff`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx


class SourceError(Exception):
    """The source could not be read completely; the message names the endpoint, never a credential.

    `retryable` says whether trying again later can help (an outage, a timeout) or cannot (a rejected
    token, a bad request).
    """

    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class ResponseDeadlineExceeded(httpx.TimeoutException):
    """The whole response did not arrive in time (each read did): a transient failure, retried like a timeout."""

    def __init__(self, message: str) -> None:
        super().__init__(message)


class BrokenListing(SourceError):
    """A listing that contradicts itself while it is read (a cursor that does not advance or cycles, more pages
    than its total allows, a total that changes): what was read cannot be complete, so the load is rejected and
    reconciliation says why."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)


class UnreadableBody(Exception):
    """A 200 whose body is not complete JSON (cut short by the upstream or a proxy): worth another attempt."""


class UnexpectedResponse(Exception):
    """A 200 that is not a listing page (wrong content type or shape): another attempt would get the same."""


class StatusError(Exception):
    """An answer other than 200: its status, headers (for Retry-After) and body (for the error message)."""

    def __init__(self, status: int, headers: httpx.Headers, content: bytes) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.headers = headers
        self.content = content


def is_transient(error: BaseException) -> bool:
    if isinstance(error, httpx.TransportError | UnreadableBody):
        return True
    if isinstance(error, StatusError):
        return error.status == 429 or error.status >= 500
    return False


def _retry_after_seconds(error: BaseException | None) -> float | None:
    """The server's Retry-After (delta-seconds or an HTTP date) on a 429/503, if it sent one."""
    if not isinstance(error, StatusError):
        return None
    value = error.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
        except (TypeError, ValueError):
            return None


class RetryAfterOrBackoff:
    """Tenacity wait: honour the server's Retry-After, capped, else exponential backoff with jitter."""

    def __init__(self, backoff, max_retry_after_seconds: float) -> None:
        self.backoff = backoff
        self.max_retry_after_seconds = max_retry_after_seconds

    def __call__(self, retry_state) -> float:
        retry_after = _retry_after_seconds(retry_state.outcome.exception() if retry_state.outcome else None)
        if retry_after is not None:
            return min(retry_after, self.max_retry_after_seconds)
        return self.backoff(retry_state)
