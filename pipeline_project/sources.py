"""Sources: how records leave the upstream systems, as typed polars batches of bounded size.

Two kinds of source feed the pipeline: the shop's REST API (customers, products, orders, order items,
payments), read page by page with keyset pagination, and web-event landing files (JSON lines) dropped into
a landing directory. Both yield batches of at most `batch_rows` rows so memory does not grow with the size
of a partition. Nothing here writes anywhere; ingestion decides what to keep.

How a day is fetched, so that late records land in the right partition and nothing is lost at a page cut:
- A partition is a business day. Fact tables are asked for by their business date (`date=`: the day of
  `ordered_at` / `paid_at`), changing dimensions by the day their version was written (`updated_since` /
  `updated_before`); see `day_filter`. An order placed on D is in partition D whenever it reaches the
  source, never in the day it arrived.
- No cursor survives a run: every extraction of a partition re-reads that whole day and the raw layer
  replaces the partition. A record that reached the source after D was first extracted is picked up by the
  next extraction of D, which the daily schedule does for the last `partitions.LOOKBACK_DAYS` days.
- Within one extraction the client follows the source's opaque `next_cursor` and never builds a cursor
  from timestamps, so records sharing an `updated_at` across a page cut cannot be skipped (the classic
  `updated_at > last_seen` loss). A source whose cursor overlaps at a cut re-sends records: they are
  counted as fetched and dropped by primary key before the commit (`dedupe`, latest `updated_at` wins).

A circuit breaker (`circuit_breaker`) sits in front of every request: when the source keeps failing,
requests fail fast with a message that says so instead of reaching it.
"""

from __future__ import annotations

import io
import itertools
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path

import httpx
import orjson
import polars as pl
from tenacity import (
    Retrying,
    before_sleep_log,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from pipeline_project.circuit_breaker import CircuitBreaker, CircuitOpenError
from pipeline_project.contracts import RawTableContract

log = logging.getLogger(__name__)

TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S%.fZ"

# How each API table is filtered to one day: fact tables by their event date, dimension tables by the
# window in which their records changed.
DATE_FILTERED = {"orders", "order_items", "payments"}
UPDATED_FILTERED = {"customers", "products"}


class SourceError(Exception):
    """The source could not be read completely; the message names the endpoint, never a credential.

    `retryable` says whether trying again later can help (an outage, a timeout) or cannot (a rejected
    token, a bad request).
    """

    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


def _is_transient(error: BaseException) -> bool:
    if isinstance(error, httpx.TransportError):
        return True
    if isinstance(error, httpx.HTTPStatusError):
        status = error.response.status_code
        return status == 429 or status >= 500
    return False


def _retry_after_seconds(error: BaseException | None) -> float | None:
    """The server's Retry-After (delta-seconds or an HTTP date) on a 429/503, if it sent one."""
    if not isinstance(error, httpx.HTTPStatusError):
        return None
    value = error.response.headers.get("Retry-After")
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


@dataclass
class ExtractStats:
    """What one extraction saw, for the load ledger."""

    source_reported_count: int | None = None
    fetched_count: int = 0
    pages: int = 0
    bytes_read: int = 0
    files: list[str] = field(default_factory=list)


def source_host(base_url: str) -> str:
    """host:port of a base URL: what messages may name (never a path, query string or userinfo)."""
    url = httpx.URL(base_url)
    return f"{url.host}:{url.port}" if url.port else url.host


def day_filter(table: str, day: date) -> dict[str, str]:
    if table in DATE_FILTERED:
        return {"date": day.isoformat()}
    if table in UPDATED_FILTERED:
        start = datetime.combine(day, time.min)
        return {
            "updated_since": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "updated_before": (start + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
    raise ValueError(f"table {table!r} is not served by the shop API")


def to_frame(contract: RawTableContract, records: list[dict]) -> pl.DataFrame:
    """Type raw records by the contract's arrival schema; values of the wrong type become null (then fail)."""
    return _parse_timestamps(contract, pl.DataFrame(records, schema=contract.arrival_schema, strict=False))


def _parse_timestamps(contract: RawTableContract, frame: pl.DataFrame) -> pl.DataFrame:
    """ISO-8601 `...Z` strings to naive UTC datetimes; unparseable values become null (and then fail)."""
    return frame.with_columns(
        pl.col(name).str.to_datetime(TIMESTAMP_FORMAT, time_unit="us", strict=False)
        for name in contract.timestamp_columns
    )


class ShopApiClient:
    """A paginating client for the shop's REST API with timeouts, retries on transient failures and a
    circuit breaker (pass one `breaker` to every client of a run so they all stop when the source is down)."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        page_size: int = 5000,
        timeout_seconds: float = 30.0,
        max_attempts: int = 5,
        max_backoff_seconds: float = 30.0,
        max_retry_after_seconds: float = 60.0,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self._token = token
        self._breaker = breaker or CircuitBreaker(source_host(base_url))
        self._client = httpx.Client(
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            timeout=httpx.Timeout(timeout_seconds, connect=min(timeout_seconds, 10.0)),
        )
        self._page_size = page_size
        self._retrying = Retrying(
            retry=retry_if_exception(_is_transient),
            stop=stop_after_attempt(max_attempts),
            wait=RetryAfterOrBackoff(
                wait_exponential_jitter(multiplier=0.5, max=max_backoff_seconds), max_retry_after_seconds
            ),
            before_sleep=before_sleep_log(log, logging.WARNING),
            reraise=True,
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> ShopApiClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _get_page(self, path: str, params: dict[str, str]) -> dict:
        def attempt() -> httpx.Response:
            self._breaker.before_request()
            try:
                response = self._client.get(path, params=params)
            except Exception as err:
                self._breaker.record_failure(type(err).__name__)
                raise
            if response.status_code >= 500:
                self._breaker.record_failure(f"HTTP {response.status_code}")
            else:
                self._breaker.record_success()
            response.raise_for_status()
            return response

        try:
            response = self._retrying(attempt)
        except CircuitOpenError as err:
            raise SourceError(f"GET {path} not sent: {err}", retryable=True) from None
        except httpx.HTTPStatusError as err:
            detail = self._redact(err.response.text[:200])
            raise SourceError(
                f"GET {path} answered HTTP {err.response.status_code}: {detail}", retryable=_is_transient(err)
            ) from None
        except httpx.TransportError as err:
            raise SourceError(
                f"GET {path} failed: {type(err).__name__}: {self._redact(str(err))}", retryable=True
            ) from None
        return orjson.loads(response.content) | {"_bytes": len(response.content)}

    def _redact(self, text: str) -> str:
        """Error text from a server may echo what it was sent; the token never leaves in a message."""
        return text.replace(self._token, "***") if self._token else text

    def iter_batches(
        self, contract: RawTableContract, day: date, stats: ExtractStats, batch_rows: int = 50_000
    ) -> Iterator[pl.DataFrame]:
        """Yield the day's records of one table as typed batches, recording counts in `stats`."""
        path = f"/v1/{contract.name}"
        params = {**day_filter(contract.name, day), "limit": str(self._page_size)}
        # Pages become compact polars frames at once; only one page of Python dicts is alive at a time.
        pending: list[pl.DataFrame] = []
        pending_rows = 0
        while True:
            page = self._get_page(path, params)
            stats.pages += 1
            stats.bytes_read += page["_bytes"]
            if stats.source_reported_count is None:
                stats.source_reported_count = page.get("total")
            frame = to_frame(contract, page["data"])
            stats.fetched_count += frame.height
            pending.append(frame)
            pending_rows += frame.height
            if pending_rows >= batch_rows:
                yield pl.concat(pending)
                pending, pending_rows = [], 0
            cursor = page.get("next_cursor")
            if not cursor:
                break
            params["cursor"] = cursor
        if pending:
            yield pl.concat(pending)


def landing_files(landing_dir: Path, table: str, day: date) -> list[Path]:
    """The landing files of one day, in a stable order."""
    return sorted((landing_dir / table / day.isoformat()).glob("*.jsonl"))


def iter_landing_batches(
    contract: RawTableContract, files: list[Path], stats: ExtractStats, batch_rows: int = 50_000
) -> Iterator[pl.DataFrame]:
    """Yield the records of landing files as typed batches; a file's line count is its reported count.

    Files are read `batch_rows` lines at a time, so memory is bounded by the batch, not the file.
    """
    stats.source_reported_count = 0
    for path in files:
        stats.files.append(path.name)
        stats.bytes_read += path.stat().st_size
        with path.open("rb") as handle:
            while lines := list(itertools.islice(handle, batch_rows)):
                stats.source_reported_count += len(lines)
                stats.fetched_count += len(lines)
                yield _parse_json_lines(contract, b"".join(lines))
    if not files:
        yield to_frame(contract, [])


def _parse_json_lines(contract: RawTableContract, payload: bytes) -> pl.DataFrame:
    return _parse_timestamps(contract, pl.read_ndjson(io.BytesIO(payload), schema=contract.arrival_schema))
