"""The shop API client (`ShopApiClient`): how records leave the shop's REST API (customers, products, orders,
order items, payments), read page by page with keyset pagination, as batches of bounded size (`extraction`).

Which records a partition is asked for is decided by `listing_filters`. Within one extraction the client
follows the source's opaque `next_cursor` and never builds a cursor from timestamps, so records sharing an
`updated_at` across a page cut cannot be skipped (the classic `updated_at > last_seen` loss). A source whose
cursor overlaps at a cut re-sends records: they are counted as fetched and dropped by primary key before the
commit (`dedupe`, latest `updated_at` wins).

What a page must be, so that a partition is never committed from a partial or misread listing:
- A JSON object (`Content-Type: application/json`) with `data` (a list of objects), `next_cursor` (a string,
  or null on the last page) and `total` (the records the whole listing holds, the same on every page).
  Anything else on a 200 (an HTML maintenance page, a bare array, a missing field) fails the partition at
  once with a shape error naming the endpoint: retrying a misconfigured URL or a changed API cannot help.
  A body cut short (on the wire, or JSON that ends early) is retried like a dropped connection.
- When the last page is in, the records fetched must be the `total` the source reported; otherwise the
  partition fails (retryably: a listing that changed while it was read is complete on the next try).
  "Zero records reported and zero fetched" is a complete, empty day.

How a body is read and judged is `api_responses`; how a failure is reported and whether it is retried is
`source_errors`.

A circuit breaker (`circuit_breaker`) sits in front of every request: when the source keeps failing,
requests fail fast with a message that says so instead of reaching it. Every request is bounded by the
client's timeouts and every page by its attempts, so a source that stalls fails the partition in bounded
time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from email.utils import parsedate_to_datetime
from time import monotonic
from urllib.parse import urlencode

import httpx
import polars as pl
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from pipeline_project import secrets  # noqa: F401  (scrubs the URLs httpx logs)
from pipeline_project.ingest.api_responses import DECOMPRESSORS, control_body, listing_page
from pipeline_project.ingest.circuit_breaker import CircuitBreaker, CircuitOpenError
from pipeline_project.ingest.extraction import ExtractStats, observed_frame
from pipeline_project.ingest.listing_filters import DIMENSION_MODES, day_filter
from pipeline_project.ingest.reconcile import CONTROL_ENDPOINT, KEY_LISTING, ControlFigures, key_text
from pipeline_project.ingest.source_errors import (
    BrokenListing,
    ResponseDeadlineExceeded,
    RetryAfterOrBackoff,
    SourceError,
    StatusError,
    UnexpectedResponse,
    UnreadableBody,
    is_transient,
)
from pipeline_project.quality.contracts import BATCH_ROWS, RawTableContract

log = logging.getLogger(__name__)

# Where the control figures of a listing come from (see `reconcile`).
CONTROL_MODES = {"endpoint": CONTROL_ENDPOINT, "key_listing": KEY_LISTING}
ERROR_DETAIL_CHARS = 200


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


def source_host(base_url: str) -> str:
    """host:port of a base URL: what messages may name (never a path, query string or userinfo)."""
    url = httpx.URL(base_url)
    return f"{url.host}:{url.port}" if url.port else url.host


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
                "Accept-Encoding": ", ".join(name for name in DECOMPRESSORS if name != "identity"),
            },
            timeout=httpx.Timeout(timeout_seconds, connect=min(timeout_seconds, 10.0)),
        )
        self.page_size = page_size
        self.max_response_bytes = max_response_bytes
        self.response_deadline_seconds = response_deadline_seconds
        self._retrying = Retrying(
            retry=retry_if_exception(is_transient),
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
            raise SourceError(message, retryable=is_transient(err)) from None
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
            if encoding not in DECOMPRESSORS:
                raise UnexpectedResponse(f"a body encoded as {encoding!r}, which is not accepted")
            decompress = DECOMPRESSORS[encoding]()
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
            control_body,
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
            page = self._get(path, params, listing_page, "a JSON object with data, next_cursor and total")
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
