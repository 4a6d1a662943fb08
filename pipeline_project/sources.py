"""Sources: how records leave the upstream systems, as polars batches of bounded size.

Two kinds of source feed the pipeline: the shop's REST API (customers, products, orders, order items,
payments), read page by page with keyset pagination, and web-event landing files (JSON lines) dropped into
a landing directory. Both yield batches of at most `batch_rows` rows so memory does not grow with the size
of a partition. Batches keep the columns and types the source sent (polars infers them from every value),
so that ingestion can compare them with their contract (`schema_drift`). Nothing here writes anywhere;
ingestion decides what to keep.

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

What a page must be, so that a partition is never committed from a partial or misread listing:
- A JSON object (`Content-Type: application/json`) with `data` (a list of objects), `next_cursor` (a string,
  or null on the last page) and `total` (the records the whole listing holds, the same on every page).
  Anything else on a 200 (an HTML maintenance page, a bare array, a missing field) fails the partition at
  once with a shape error naming the endpoint: retrying a misconfigured URL or a changed API cannot help.
  A body cut short (on the wire, or JSON that ends early) is retried like a dropped connection.
- When the last page is in, the records fetched must be the `total` the source reported; otherwise the
  partition fails (retryably: a listing that changed while it was read is complete on the next try).
  "Zero records reported and zero fetched" is a complete, empty day.

A circuit breaker (`circuit_breaker`) sits in front of every request: when the source keeps failing,
requests fail fast with a message that says so instead of reaching it. Every request is bounded by the
client's timeouts and every page by its attempts, so a source that stalls fails the partition in bounded
time.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import stat
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from types import NoneType
from urllib.parse import urlencode

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


class UnreadableBody(Exception):
    """A 200 whose body is not complete JSON (cut short by the upstream or a proxy): worth another attempt."""


class UnexpectedResponse(Exception):
    """A 200 that is not a listing page (wrong content type or shape): another attempt would get the same."""


def _is_transient(error: BaseException) -> bool:
    if isinstance(error, httpx.TransportError | UnreadableBody):
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
    source: str = ""  # where the batch being read comes from: the endpoint or the landing file


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


def observed_frame(records: list[dict]) -> pl.DataFrame:
    """Records as the source sent them: every key any record has is a column, typed from all its values.

    A column whose non-null values are of more than one JSON type (a string among numbers, an object among
    strings) is an Object column of the values as sent: polars would cast them to a common type (1 -> "1",
    true -> 1) or set the misfits to null, and `schema_drift` judges such values one by one.
    """
    json_types: set[tuple[str, type]] = set()
    for record in records:
        json_types.update(zip(record, map(type, record.values()), strict=True))
    types_per_column = Counter(name for name, json_type in json_types if json_type is not NoneType)
    mixed = {name for name, count in types_per_column.items() if count > 1}
    if not mixed:
        return pl.DataFrame(records, infer_schema_length=None)
    # Polars infers a type for every column it is given, even one overridden as Object, so mixed columns are
    # built apart and put back in the order the source sent them.
    order = list(dict.fromkeys(itertools.chain.from_iterable(records)))
    frame = pl.DataFrame([pl.Series(name, [record.get(name) for record in records], dtype=pl.Object) for name in mixed])
    plain = pl.DataFrame(
        [{name: value for name, value in record.items() if name not in mixed} for record in records],
        infer_schema_length=None,
    )
    if plain.width:
        frame = pl.concat([plain, frame], how="horizontal")
    return frame.select(order)


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
            return response, _listing_page(response)

        try:
            response, page = self._retrying(attempt)
        except CircuitOpenError as err:
            raise SourceError(f"GET {path} not sent: {err}", retryable=True) from None
        except UnreadableBody as err:
            raise SourceError(f"GET {path} answered 200 with {err}", retryable=True) from None
        except UnexpectedResponse as err:
            raise SourceError(
                f"GET {path} answered 200 with {self._redact(str(err))}; expected a JSON object with "
                "data, next_cursor and total",
                retryable=False,
            ) from None
        except httpx.HTTPStatusError as err:
            detail = self._redact(err.response.text[:200])
            raise SourceError(
                f"GET {path} answered HTTP {err.response.status_code}: {detail}", retryable=_is_transient(err)
            ) from None
        except httpx.TransportError as err:
            raise SourceError(
                f"GET {path} failed: {type(err).__name__}: {self._redact(str(err))}", retryable=True
            ) from None
        return page | {"_bytes": len(response.content)}

    def _redact(self, text: str) -> str:
        """Error text from a server may echo what it was sent; the token never leaves in a message."""
        return text.replace(self._token, "***") if self._token else text

    def iter_batches(
        self, contract: RawTableContract, day: date, stats: ExtractStats, batch_rows: int = 50_000
    ) -> Iterator[pl.DataFrame]:
        """Yield the day's records of one table as batches of one schema each, recording counts in `stats`."""
        path = f"/v1/{contract.name}"
        params = {**day_filter(contract.name, day), "limit": str(self._page_size)}
        stats.source = f"GET {path}?{urlencode(day_filter(contract.name, day), safe=':')}"
        # Pages become compact polars frames at once; only one page of Python dicts is alive at a time.
        pending: list[pl.DataFrame] = []
        pending_rows = 0
        while True:
            page = self._get_page(path, params)
            stats.pages += 1
            stats.bytes_read += page["_bytes"]
            if stats.source_reported_count is None:
                stats.source_reported_count = page["total"]
            elif page["total"] != stats.source_reported_count:
                raise SourceError(
                    f"{stats.source}: the listing changed while it was read (page {stats.pages} reports "
                    f"{page['total']} records, the first page {stats.source_reported_count}); nothing of the "
                    "partition was committed",
                    retryable=True,
                )
            frame = observed_frame(page["data"])
            stats.fetched_count += frame.height
            if pending and frame.schema != pending[0].schema:
                # A batch has one schema, so a column that changes from one page to the next is compared.
                yield pl.concat(pending)
                pending, pending_rows = [], 0
            pending.append(frame)
            pending_rows += frame.height
            if pending_rows >= batch_rows:
                yield pl.concat(pending)
                pending, pending_rows = [], 0
            cursor = page["next_cursor"]
            if cursor is None:
                break
            params["cursor"] = cursor
        if stats.fetched_count != stats.source_reported_count:
            raise SourceError(
                f"{stats.source}: the source reported {stats.source_reported_count} records but its "
                f"{stats.pages} page(s) held {stats.fetched_count}; nothing of the partition was committed",
                retryable=True,
            )
        if pending:
            yield pl.concat(pending)


def _listing_page(response: httpx.Response) -> dict:
    """The page a 200 carries, or UnreadableBody / UnexpectedResponse saying what arrived instead."""
    content_type = response.headers.get("Content-Type", "")
    media_type = content_type.split(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        excerpt = response.content[:80].decode("utf-8", "replace")
        raise UnexpectedResponse(f"Content-Type {content_type or '(none)'!r}, not JSON: {excerpt!r}")
    try:
        page = orjson.loads(response.content)
    except orjson.JSONDecodeError as err:
        raise UnreadableBody(f"{len(response.content)} bytes that are not complete JSON ({err})") from None
    if not isinstance(page, dict):
        raise UnexpectedResponse(f"a JSON {type(page).__name__}")
    problems = [f"{name} is missing" for name in ("data", "next_cursor", "total") if name not in page]
    data, cursor, total = page.get("data", []), page.get("next_cursor"), page.get("total", 0)
    if not isinstance(data, list) or not all(isinstance(record, dict) for record in data):
        problems.append("data is not a list of objects")
    if not (cursor is None or (isinstance(cursor, str) and cursor)):
        problems.append("next_cursor is neither a non-empty string nor null")
    if isinstance(total, bool) or not isinstance(total, int) or total < 0:
        problems.append(f"total is not a non-negative integer ({str(total)[:40]!r})")
    if problems:
        raise UnexpectedResponse(f"a JSON object in which {', '.join(problems)}")
    return page


class UnreadableLandingFile(Exception):
    """A landing file that cannot be read as UTF-8 JSON lines at all: the message names the file, the line
    and why. (A file whose records merely break the contract is readable; those records are quarantined.)"""

    def __init__(self, path: Path, reason: str, detail: str, line_number: int | None = None) -> None:
        where = f" at line {line_number}" if line_number is not None else ""
        super().__init__(f"landing file {path.name}{where}: {detail}")
        self.path = path
        self.reason = reason
        self.detail = detail
        self.line_number = line_number


def iter_landing_batches(
    contract: RawTableContract,
    files: list[Path],
    stats: ExtractStats,
    batch_rows: int = 50_000,
    max_file_bytes: int | None = None,
) -> Iterator[pl.DataFrame]:
    """Yield the records of landing files as batches; a file's non-blank lines are its reported count.

    Files are read `batch_rows` lines at a time, so memory is bounded by the batch, not the file. A file is
    never opened through a symlink, and one over `max_file_bytes` is refused before anything is parsed.
    """
    stats.source_reported_count = 0
    for path in files:
        stats.files.append(path.name)
        stats.source = f"landing file {path}"
        with _open_without_following(path) as handle:
            size = os.fstat(handle.fileno()).st_size
            if max_file_bytes is not None and size > max_file_bytes:
                raise UnreadableLandingFile(path, "too_large", f"{size} bytes, over the cap of {max_file_bytes}")
            stats.bytes_read += size
            first_line = 1
            while lines := list(itertools.islice(handle, batch_rows)):
                frame = _parse_json_lines(path, first_line, lines)
                blank = 0 if frame.height == len(lines) else sum(1 for line in lines if line.isspace())
                stats.source_reported_count += len(lines) - blank
                stats.fetched_count += frame.height
                first_line += len(lines)
                yield frame
    if not files:
        yield observed_frame([])


def _open_without_following(path: Path):
    """Open a regular file for reading; a symlink is refused, and a FIFO cannot block the read (O_NONBLOCK)."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise UnreadableLandingFile(path, "symlink", "is a symbolic link, which is never followed") from None
        raise
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise UnreadableLandingFile(path, "not_a_regular_file", "is not a regular file")
    return os.fdopen(descriptor, "rb")


def _parse_json_lines(path: Path, first_line: int, lines: list[bytes]) -> pl.DataFrame:
    """The non-blank lines as one frame (`observed_frame`, so values keep the JSON type they were written as),
    or UnreadableLandingFile naming the first line that is not a JSON object."""
    records = []
    for offset, line in enumerate(lines):
        if line.isspace():
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError as error:
            raise UnreadableLandingFile(path, "malformed", f"not UTF-8 JSON ({error})", first_line + offset) from None
        if not isinstance(record, dict):
            raise UnreadableLandingFile(
                path, "malformed", f"a JSON {type(record).__name__} where an object was expected", first_line + offset
            )
        records.append(record)
    return observed_frame(records)
