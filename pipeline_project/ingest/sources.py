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
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as time_of_day
from email.utils import parsedate_to_datetime
from pathlib import Path
from time import monotonic
from types import NoneType
from urllib.parse import urlencode

import httpx
import orjson
import polars as pl
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from pipeline_project import secrets  # noqa: F401  (scrubs the URLs httpx logs)
from pipeline_project.ingest.circuit_breaker import CircuitBreaker, CircuitOpenError
from pipeline_project.ingest.reconcile import CONTROL_ENDPOINT, KEY_LISTING, ControlFigures, key_text
from pipeline_project.quality.contracts import (
    BATCH_ROWS,
    BUSINESS_DATE,
    DAILY_VERSIONS,
    RAW_CONTRACTS,
    RawTableContract,
)

log = logging.getLogger(__name__)

DATE_FILTERED = {name for name, contract in RAW_CONTRACTS.items() if contract.day_selection == BUSINESS_DATE}
UPDATED_FILTERED = {name for name, contract in RAW_CONTRACTS.items() if contract.day_selection == DAILY_VERSIONS}
# What the source keeps of its dimensions (customers, products): a version per day, or the current state only.
DIMENSION_MODES = ("daily_versions", "current_state")
# Where the control figures of a listing come from (see `reconcile`).
CONTROL_MODES = {"endpoint": CONTROL_ENDPOINT, "key_listing": KEY_LISTING}


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


def _identity():
    return lambda data, limit: [data]


def _inflating(wbits: int):
    """A decompressor that never produces more than `limit` bytes from one call (a bomb stops at the cap)."""
    decompressor = zlib.decompressobj(wbits)

    def decompress(data: bytes, limit: int) -> Iterator[bytes]:
        while data:
            chunk = decompressor.decompress(data, limit)
            yield chunk
            if len(chunk) >= limit:
                return  # the caller refuses the body: it is over the cap
            data = decompressor.unconsumed_tail

    return decompress


_DECOMPRESSORS = {
    "identity": _identity,
    "gzip": lambda: _inflating(16 + zlib.MAX_WBITS),
    "deflate": lambda: _inflating(zlib.MAX_WBITS),
}
ERROR_DETAIL_CHARS = 200


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


def _is_transient(error: BaseException) -> bool:
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


def _log_retry(retry_state: RetryCallState) -> None:
    """A warning per retried attempt that names the failure, never a URL: a query string or userinfo in a URL
    can carry what a log must not (tenacity's own message quotes the exception, and httpx's names the URL)."""
    error = retry_state.outcome.exception() if retry_state.outcome else None
    what = str(error) if isinstance(error, StatusError) else type(error).__name__
    log.warning(
        "shop API request failed (%s) on attempt %d; retrying in %.1f s",
        what,
        retry_state.attempt_number,
        retry_state.upcoming_sleep,
    )


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

    source_reported_count: int | None = None  # the listing's `total`: a claim, compared but never trusted
    fetched_count: int = 0  # records (or landing lines) received, copies and bad lines included
    pages: int = 0
    bytes_read: int = 0
    files: list[str] = field(default_factory=list)
    source: str = ""  # where the batch being read comes from: the endpoint or the landing file
    bad_lines: list[BadLine] = field(default_factory=list)  # landing lines that are not records, to quarantine


def source_host(base_url: str) -> str:
    """host:port of a base URL: what messages may name (never a path, query string or userinfo)."""
    url = httpx.URL(base_url)
    return f"{url.host}:{url.port}" if url.port else url.host


def iso_z(moment: datetime) -> str:
    """A naive-UTC or aware datetime as the API's timestamp text (second precision, `Z`)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def day_filter(table: str, day: date, dimensions: str = "daily_versions") -> dict[str, str]:
    """The listing filter that selects one partition of `table`.

    Fact tables: their business date. Dimensions with a version per day: the versions written during the
    day. Dimensions kept as current state only: every record changed since the day began, in its current
    version, because the source no longer knows the day's version of a record changed later; so a re-read
    of the day can only gain records, and none ever disappears from the raw layer.
    """
    if table in DATE_FILTERED:
        return {"date": day.isoformat()}
    if table in UPDATED_FILTERED:
        start = datetime.combine(day, time_of_day.min)
        if dimensions == "current_state":
            return {"updated_since": iso_z(start)}
        return {"updated_since": iso_z(start), "updated_before": iso_z(start + timedelta(days=1))}
    raise ValueError(f"table {table!r} is not served by the shop API")


def changes_filter(since: datetime, before: datetime) -> dict[str, str]:
    """The listing filter of the records whose current version changed in [since, before)."""
    return {"updated_since": iso_z(since), "updated_before": iso_z(before)}


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
    circuit breaker (pass one `breaker` to every client of a run so they all stop when the source is down).

    `dimensions` says what the source keeps of its dimensions (`DIMENSION_MODES`), which decides how a day
    of them is selected (`day_filter`). `source_clock` is the source's own time (its `Date` header) at the
    latest answer and `first_source_clock` at the first: watermarks of change capture are kept in the
    source's time, so a source whose clock differs from ours loses nothing at the watermark.
    """

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
        dimensions: str = "daily_versions",
        max_response_bytes: int = 64 * 1024 * 1024,
        response_deadline_seconds: float = 120.0,
    ) -> None:
        if dimensions not in DIMENSION_MODES:
            raise ValueError(f"dimensions must be one of {', '.join(DIMENSION_MODES)}, got {dimensions!r}")
        if httpx.URL(base_url).userinfo:
            raise ValueError(
                "SHOP_API_URL must not carry user information (user:password@); the bearer token goes in SHOP_API_TOKEN"
            )
        self._token = token
        self.dimensions = dimensions
        self.source_clock: datetime | None = None
        self.first_source_clock: datetime | None = None  # at this client's first answer
        self._breaker = breaker or CircuitBreaker(source_host(base_url))
        self._client = httpx.Client(
            base_url=base_url,
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/json",
                "Accept-Encoding": ", ".join(name for name in _DECOMPRESSORS if name != "identity"),
            },
            timeout=httpx.Timeout(timeout_seconds, connect=min(timeout_seconds, 10.0)),
        )
        self.page_size = page_size
        self.max_response_bytes = max_response_bytes
        self.response_deadline_seconds = response_deadline_seconds
        self._retrying = Retrying(
            retry=retry_if_exception(_is_transient),
            stop=stop_after_attempt(max_attempts),
            wait=RetryAfterOrBackoff(
                wait_exponential_jitter(multiplier=0.5, max=max_backoff_seconds), max_retry_after_seconds
            ),
            before_sleep=_log_retry,
            reraise=True,
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> ShopApiClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _get(
        self, path: str, params: dict[str, str], read: Callable[[httpx.Headers, bytes], dict], expected: str
    ) -> dict:
        """GET with retries and the breaker; `read` turns a 200's headers and body into its JSON object or
        raises UnreadableBody / UnexpectedResponse; `expected` says what the body should have been, for errors."""

        def attempt() -> tuple[httpx.Response, bytes, dict]:
            self._breaker.before_request()
            try:
                response, content = self._fetch(path, params)
                if response.status_code >= 500:
                    raise StatusError(response.status_code, response.headers, content)
                body = read(response.headers, content) if response.status_code == 200 else {}
            except (httpx.TransportError, StatusError, UnreadableBody) as err:
                # A dropped connection, a 5xx and a 200 cut short all say the source is not answering properly.
                self._breaker.record_failure(str(err) if isinstance(err, StatusError) else type(err).__name__)
                raise
            except Exception:
                self._breaker.record_success()  # it answered, just not with anything we can use
                raise
            self._breaker.record_success()
            if response.status_code != 200:
                raise StatusError(response.status_code, response.headers, content)
            return response, content, body

        try:
            response, content, body = self._retrying(attempt)
        except CircuitOpenError as err:
            raise SourceError(f"GET {path} not sent: {err}", retryable=True) from None
        except UnreadableBody as err:
            raise SourceError(f"GET {path} answered 200 with {err}", retryable=True) from None
        except UnexpectedResponse as err:
            raise SourceError(
                f"GET {path} answered with {self._redact(str(err))}; expected {expected}", retryable=False
            ) from None
        except StatusError as err:
            # Redacted before it is cut: a token cut in half at the boundary would no longer be recognised.
            detail = self._redact(err.content.decode("utf-8", "replace"))[:ERROR_DETAIL_CHARS]
            message = f"GET {path} answered HTTP {err.status}: {detail}"
            raise SourceError(message, retryable=_is_transient(err)) from None
        except httpx.TransportError as err:
            raise SourceError(
                f"GET {path} failed: {type(err).__name__}: {self._redact(str(err))}", retryable=True
            ) from None
        self._note_source_clock(response)
        return body | {"_bytes": len(content)}

    def _fetch(self, path: str, params: dict[str, str]) -> tuple[httpx.Response, bytes]:
        """One request, its body read whole within `response_deadline_seconds` and `max_response_bytes`.

        httpx's timeouts bound each socket read, not the response, so a source that sends a byte every few
        seconds would never time out: the deadline is checked as the body arrives (it ends within one read
        timeout of the deadline). The cap is checked against a declared Content-Length before anything is read,
        and against the bytes as they are decompressed, so neither a lying length, one huge record nor a
        compressed body that inflates without bound is held in memory past it."""
        deadline = monotonic() + self.response_deadline_seconds
        with self._client.stream("GET", path, params=params) as response:
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > self.max_response_bytes:
                raise UnexpectedResponse(
                    f"a body of {int(declared)} bytes declared, over the cap of {self.max_response_bytes} bytes"
                )
            encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
            if encoding not in _DECOMPRESSORS:
                raise UnexpectedResponse(f"a body encoded as {encoding!r}, which is not accepted")
            decompress = _DECOMPRESSORS[encoding]()
            chunks, size = [], 0
            for raw in response.iter_raw():
                for chunk in decompress(raw, self.max_response_bytes - size + 1):
                    size += len(chunk)
                    if size > self.max_response_bytes:
                        raise UnexpectedResponse(
                            f"a body over the cap of {self.max_response_bytes} bytes (Content-Length said "
                            f"{declared or 'nothing'}; encoding {encoding})"
                        )
                    chunks.append(chunk)
                if monotonic() > deadline:
                    raise ResponseDeadlineExceeded(
                        f"the response was not complete after {self.response_deadline_seconds:g} s"
                    )
        return response, b"".join(chunks)

    def _note_source_clock(self, response: httpx.Response) -> None:
        try:
            self.source_clock = parsedate_to_datetime(response.headers["Date"]).astimezone(UTC).replace(tzinfo=None)
        except (KeyError, TypeError, ValueError):
            return  # a source without a usable Date header: change capture falls back to our clock
        if self.first_source_clock is None:
            self.first_source_clock = self.source_clock

    def _redact(self, text: str) -> str:
        """Error text from a server may echo what it was sent; the token never leaves in a message."""
        return text.replace(self._token, "***") if self._token else text

    def control_figures(self, contract: RawTableContract, filters: dict[str, str]) -> ControlFigures:
        """The source's control figures for the listing that `filters` select (`GET /v1/<table>/control`)."""
        body = self._get(
            f"/v1/{contract.name}/control",
            filters,
            _control_body,
            "a JSON object with count, key_checksum and amount_total",
        )
        return ControlFigures(CONTROL_ENDPOINT, body["count"], int(body["key_checksum"]), body["amount_total"])

    def listed_keys(self, contract: RawTableContract, filters: dict[str, str], page_size: int) -> ControlFigures:
        """A second pass over the listing that asks for keys only, as control figures with their key set.

        The caller picks another page size than the listing's, so that a fault tied to where pages are cut
        shows up as a difference between the two passes."""
        stats = ExtractStats()
        keys: set[str] = set()
        for page in self._pages(contract, {**filters, "fields": contract.primary_key}, stats, page_size):
            keys.update(key_text(record.get(contract.primary_key)) for record in page["data"])
        return ControlFigures.of_keys(KEY_LISTING, keys)

    def _pages(
        self,
        contract: RawTableContract,
        filters: dict[str, str],
        stats: ExtractStats,
        page_size: int,
        fixed_total: bool = True,
    ) -> Iterator[dict]:
        """Every page of a listing, following the source's opaque cursor; counts go to `stats`.

        Paging is bounded: a cursor that does not advance or comes back (a cycle), or more pages than the
        listing's `total` needs, fails the partition at once instead of paging until the disk is full. A
        `total` that changes between pages breaks the listing off too, unless the listing may legitimately
        change while it is read (`fixed_total=False`: a change feed, whose records move on as they change)."""
        path = f"/v1/{contract.name}"
        params = {**filters, "limit": str(page_size)}
        stats.source = f"GET {path}?{urlencode(filters, safe=':')}"
        cursors_seen: set[str] = set()
        while True:
            page = self._get(path, params, _listing_page, "a JSON object with data, next_cursor and total")
            stats.pages += 1
            stats.bytes_read += page["_bytes"]
            if stats.source_reported_count is None or not fixed_total:
                stats.source_reported_count = max(stats.source_reported_count or 0, page["total"])
            elif page["total"] != stats.source_reported_count:
                raise BrokenListing(
                    f"{stats.source}: the listing changed while it was read (page {stats.pages} reports "
                    f"{page['total']} records, the first page {stats.source_reported_count})"
                )
            stats.fetched_count += len(page["data"])
            yield page
            cursor = page["next_cursor"]
            if cursor is None:
                return
            if cursor in cursors_seen or cursor == params.get("cursor"):
                raise BrokenListing(
                    f"{stats.source}: page {stats.pages} links back to a page already read (the cursor does not "
                    "advance); the listing cannot be read to its end"
                )
            pages_needed = -(-stats.source_reported_count // page_size) + 1  # the last page may come back empty
            if stats.pages >= pages_needed:
                raise BrokenListing(
                    f"{stats.source}: page {stats.pages} links to another page, but {stats.source_reported_count} "
                    f"records fit in {pages_needed - 1} page(s) of {page_size}"
                )
            cursors_seen.add(cursor)
            params["cursor"] = cursor

    def iter_listing(
        self,
        contract: RawTableContract,
        filters: dict[str, str],
        stats: ExtractStats,
        batch_rows: int = BATCH_ROWS,
        fixed_total: bool = True,
    ) -> Iterator[pl.DataFrame]:
        """Yield the listing's records as batches of one schema each, recording counts in `stats`.

        Whether the listing was complete is not decided here: copies make row counts meaningless, so the
        records are reconciled by key against control figures once they are loaded (`reconcile`)."""
        # Pages become compact polars frames at once; only one page of Python dicts is alive at a time.
        pending: list[pl.DataFrame] = []
        pending_rows = 0
        pages = self._pages(contract, filters, stats, self.page_size, fixed_total)
        while True:
            try:
                page = next(pages, None)
            except BrokenListing:
                if pending:  # what arrived before the listing broke off still counts, and is reconciled
                    yield pl.concat(pending)
                raise
            if page is None:
                break
            frame = observed_frame(page["data"])
            if pending and frame.schema != pending[0].schema:
                # A batch has one schema, so a column that changes from one page to the next is compared.
                yield pl.concat(pending)
                pending, pending_rows = [], 0
            pending.append(frame)
            pending_rows += frame.height
            if pending_rows >= batch_rows:
                yield pl.concat(pending)
                pending, pending_rows = [], 0
        if pending:
            yield pl.concat(pending)

    def iter_batches(
        self, contract: RawTableContract, day: date, stats: ExtractStats, batch_rows: int = BATCH_ROWS
    ) -> Iterator[pl.DataFrame]:
        """Yield one partition's records (`day_filter`) as batches."""
        return self.iter_listing(contract, day_filter(contract.name, day, self.dimensions), stats, batch_rows)


def _json_object(headers: httpx.Headers, content: bytes) -> dict:
    """The JSON object a 200 carries, or UnreadableBody / UnexpectedResponse saying what arrived instead."""
    content_type = headers.get("Content-Type", "")
    media_type = content_type.split(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        excerpt = content[:80].decode("utf-8", "replace")
        raise UnexpectedResponse(f"Content-Type {content_type or '(none)'!r}, not JSON: {excerpt!r}")
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError as err:
        raise UnreadableBody(f"{len(content)} bytes that are not complete JSON ({err})") from None
    if not isinstance(body, dict):
        raise UnexpectedResponse(f"a JSON {type(body).__name__}")
    return body


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _listing_page(headers: httpx.Headers, content: bytes) -> dict:
    """The page a 200 carries, or UnreadableBody / UnexpectedResponse saying what arrived instead."""
    page = _json_object(headers, content)
    problems = [f"{name} is missing" for name in ("data", "next_cursor", "total") if name not in page]
    data, cursor, total = page.get("data", []), page.get("next_cursor"), page.get("total", 0)
    if not isinstance(data, list) or not all(isinstance(record, dict) for record in data):
        problems.append("data is not a list of objects")
    if not (cursor is None or (isinstance(cursor, str) and cursor)):
        problems.append("next_cursor is neither a non-empty string nor null")
    if not _is_count(total):
        problems.append(f"total is not a non-negative integer ({str(total)[:40]!r})")
    if problems:
        raise UnexpectedResponse(f"a JSON object in which {', '.join(problems)}")
    return page


def _control_body(headers: httpx.Headers, content: bytes) -> dict:
    """The control figures a 200 carries, or UnexpectedResponse saying what is wrong with them."""
    body = _json_object(headers, content)
    problems = []
    if not _is_count(body.get("count")):
        problems.append(f"count is not a non-negative integer ({str(body.get('count'))[:40]!r})")
    checksum = body.get("key_checksum")
    if not (isinstance(checksum, str) and checksum.isdigit() and int(checksum) < 2**64):
        problems.append(f"key_checksum is not a decimal string of a 64-bit number ({str(checksum)[:40]!r})")
    amount = body.get("amount_total")
    if amount is not None and (isinstance(amount, bool) or not isinstance(amount, int)):
        problems.append(f"amount_total is neither an integer nor null ({str(amount)[:40]!r})")
    if problems:
        raise UnexpectedResponse(f"a JSON object in which {', '.join(problems)}")
    return body


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


@dataclass(frozen=True)
class BadLine:
    """A landing-file line that is not a JSON object: quarantined alone, with its file and line number."""

    file: str
    line_number: int
    problem: str
    excerpt: str

    @property
    def reason(self) -> str:
        return f"line:{self.problem} ({self.file}:{self.line_number})"


_BOM = b"\xef\xbb\xbf"
LINE_EXCERPT_BYTES = 1000
# As `git` and `file` do: a NUL byte near the start means the file is binary, not text.
BINARY_SNIFF_BYTES = 8192


def iter_landing_batches(
    contract: RawTableContract,
    files: list[Path],
    stats: ExtractStats,
    batch_rows: int = BATCH_ROWS,
    max_file_bytes: int | None = None,
    batch_bytes: int = 32 * 1024 * 1024,
) -> Iterator[pl.DataFrame]:
    """Yield the records of landing files as batches, line by line.

    Every non-blank line read counts in `stats.fetched_count`, which is the landing's control figure. A line
    that is not a JSON object (cut short, not UTF-8, a bare value) is not a record: it goes to
    `stats.bad_lines`, which the caller quarantines with the file name and line number, and the rest of the
    file loads. A UTF-8 byte-order mark and CRLF line ends are accepted. Batches are bounded by `batch_rows`
    lines and `batch_bytes` bytes, so memory is bounded by the batch, not the file. A file is never opened
    through a symlink; one over `max_file_bytes`, or one holding a NUL byte (binary, not JSON lines), is
    refused whole (UnreadableLandingFile) before any of it is loaded.
    """
    for path in files:
        stats.files.append(path.name)
        stats.source = f"landing file {path}"
        with _open_without_following(path) as handle:
            size = os.fstat(handle.fileno()).st_size
            if max_file_bytes is not None and size > max_file_bytes:
                raise UnreadableLandingFile(path, "too_large", f"{size} bytes, over the cap of {max_file_bytes}")
            stats.bytes_read += size
            if b"\x00" in os.pread(handle.fileno(), BINARY_SNIFF_BYTES, 0):
                raise UnreadableLandingFile(path, "binary", "holds NUL bytes: not JSON lines", 1)
            line_number = 0
            while True:
                records: list[dict] = []
                batch_size = 0
                for line in handle:
                    line_number += 1
                    if line_number == 1 and line.startswith(_BOM):
                        line = line[len(_BOM) :]
                    if line.isspace() or not line:
                        continue
                    if b"\x00" in line:
                        raise UnreadableLandingFile(path, "binary", "holds NUL bytes: not JSON lines", line_number)
                    stats.fetched_count += 1
                    record = _json_line(path.name, line_number, line, stats)
                    if record is not None:
                        records.append(record)
                    batch_size += len(line)
                    if len(records) >= batch_rows or batch_size >= batch_bytes:
                        break
                else:
                    if records or stats.bad_lines:
                        yield observed_frame(records)
                    break
                yield observed_frame(records)
    if not files:
        yield observed_frame([])


def _json_line(file_name: str, line_number: int, line: bytes, stats: ExtractStats) -> dict | None:
    """The JSON object a line holds, or None after recording it as a bad line."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as error:
        problem = "not_utf8" if "utf-8" in str(error).lower() else "malformed_json"
    else:
        if isinstance(record, dict):
            return record
        problem = f"json_{type(record).__name__}_not_object"
    excerpt = line[:LINE_EXCERPT_BYTES].decode("utf-8", "replace").rstrip("\r\n")
    stats.bad_lines.append(BadLine(file_name, line_number, problem, excerpt))
    return None


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
