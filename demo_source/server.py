"""The demo shop's HTTP API: a real server over a `ShopWorld`, with its clock and switchable faults.

This module owns the transport of the demo source: routes, bearer-token auth, filters, keyset
pagination, responses, control figures, the source's clock, and the fault knobs (`Faults`) that let tests
and demos make the upstream misbehave (500s, 429s with Retry-After, latency, a full outage, a changed
schema, records re-sent on a later page, records that reach the source late, bodies cut short, pages
that lose their next link or miscount their records, 200s that are not the JSON listing they should be,
and garbage values in records). It holds no data of its own: every listing is the world as of the
server's clock (`Faults.as_of`, else the wall clock, per request), encoded once and cached.

    GET /health                                            200 {"status": "ok"}, no auth
    GET /v1/orders|order_items|payments?date=YYYY-MM-DD    by the date of ordered_at / paid_at
    GET /v1/orders|order_items|payments?updated_since=..[&updated_before=..]   the change feed:
        records whose updated_at is in [since, before), any date (before: default the clock, <= 31 days)
    GET /v1/customers|products?updated_since=..&updated_before=..   ISO timestamps, [since, before);
        with dimensions="current_state" the latest versions only, updated_before optional
        all /v1 lists: limit (1..10000, default 1000), cursor (opaque, from the previous page),
        fields=<primary key> (keys-only records)
        -> {"data": [...], "next_cursor": str | null, "total": N} and header X-Total-Count: N (distinct keys)
    GET /v1/<table>/control?<the listing's filters>        the listing's control figures:
        {"table", "count", "key_checksum" (decimal string, see checksum.py), "amount_total", "as_of"}
    GET /admin/faults, PUT /admin/faults                   read / replace the Faults (JSON)

Everything but /health needs `Authorization: Bearer <token>`.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import email.utils
import hmac
import logging
import re
import socket
import socketserver
import threading
import time
import zlib
from bisect import bisect_right
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, date, datetime, timedelta
from functools import partial
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

from demo_source.checksum import MODULUS, key_text, text_hash
from demo_source.encoding import JSON_OPTIONS, encode_array
from demo_source.ledger import LATE_ARRIVAL_DELAY, settles_at
from demo_source.timeline import to_naive_utc
from demo_source.vocabulary import DAILY_TABLES, PRIMARY_KEYS, VERSIONED_TABLES
from demo_source.world import ShopWorld

log = logging.getLogger(__name__)

__all__ = ["LATE_ARRIVAL_DELAY", "BadRequest", "DemoShopServer", "Faults"]

API_TABLES = (*VERSIONED_TABLES, *DAILY_TABLES)
DIMENSION_MODES = ("daily_versions", "current_state")
DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000
# An update window reads the orders of every day that can change inside it (a month before it for
# orders and payments) or one day of versions per day it spans; the caps bound what one request costs.
MAX_UPDATED_RANGE = timedelta(days=31)
MAX_CURRENT_STATE_REACH = timedelta(days=366)
# The columns a money table's amount is computed from (control figures' amount_total).
MONEY_COLUMNS = {"payments": ("amount_cents",), "order_items": ("quantity", "unit_price_cents", "discount_cents")}
MAX_BODY_BYTES = 64 * 1024
_DATE_PATTERN = re.compile(r"\d{4}-\d{2}-\d{2}")
SCHEMA_DRIFT_CHANGES = ("drop", "retype", "rename", "add")
RETYPES = {"string": str, "float": float}
MALFORMED_BODIES = ("html", "array", "text_plain", "cut_json")


@dataclass
class Faults:
    """How badly the /v1 API misbehaves. Deterministic, counted in /v1 requests since the faults were set.

    error_rate: every round(1 / error_rate)-th request gets a 500 (0 = never).
    rate_limit_every: every Nth request gets a 429 with `Retry-After: retry_after_seconds` (0 = never).
    latency_ms: added before every response.
    outage: every request gets a 503.
    schema_drift: per table, how its records change shape in every response, applied in this order:
        {"order_items": {"drop": ["discount_cents"], "retype": {"quantity": "string" | "float"},
                         "rename": {"order_id": "order_ref"}, "add": {"coupon_code": "X"}}}
        (a renamed column keeps its place; added columns come last, with the given value in every record).
    duplicate_rate: every round(1 / duplicate_rate)-th record of a listing is sent twice: again at the start
        of the next page (a cursor that overlaps at page boundaries), or right after its own page's records
        when that is the last page. `total` does not count the copies: it is the distinct records the
        listing holds, and so are the control figures.
    duplicate_skew_seconds: the copies' updated_at is this much later (a newer version: the record changed
        between pages) or, if negative, earlier (a stale replica's older version); 0 = identical copies.
    late_arrival_rate: about this share of orders, with their items and payments, reach the source
        LATE_ARRIVAL_DELAY (a day) after they happen: at clock T the source holds such an order as it stood
        at T minus the delay, and every updated_at is that much later; ordered_at and paid_at are not.
    as_of: the source's clock (ISO 8601): the world is served as it stands at this instant, records that
        have not happened (or arrived) by then are not served (None = the wall clock, read per request).
    truncate_every: every Nth request's listing is cut short on the wire: the headers promise the whole
        body (Content-Length), half of it is sent and the connection is closed (0 = never).
    omit_next_cursor_after: the Nth page of a listing (1-based, pages of the requested limit) and every
        later one come without their `next_cursor` field, so the rest of the listing cannot be reached
        (0 = never).
    total_offset: added to the reported `total` (and X-Total-Count), so it differs from the records served.
    malformed_body: every listing answers 200 with something other than the JSON listing: "html" (a
        text/html maintenance page), "array" (a bare JSON `[]`), "text_plain" (the listing labelled
        text/plain) or "cut_json" (the listing's first half, labelled with its own length, so the HTTP
        message is complete but the JSON is not). None = well-formed listings.
    garbage_every, garbage: per table, column -> a value that breaks that column (any JSON value:
        {"payments": {"order_id": null, "amount_cents": -5, "paid_at": "2026-02-30T10:00:00Z"}}). The record
        at position i (0-based, in primary-key order) of a listing of such a table gets one of them when
        (i + 1) is a multiple of garbage_every, the table's columns taken in turn (`garbage_at` names it).
    """

    error_rate: float = 0.0
    rate_limit_every: int = 0
    retry_after_seconds: float = 1.0
    latency_ms: int = 0
    outage: bool = False
    schema_drift: dict[str, dict[str, Any]] = field(default_factory=dict)
    duplicate_rate: float = 0.0
    duplicate_skew_seconds: int = 0
    late_arrival_rate: float = 0.0
    as_of: str | None = None
    truncate_every: int = 0
    omit_next_cursor_after: int = 0
    total_offset: int = 0
    malformed_body: str | None = None
    garbage_every: int = 0
    garbage: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        def number(name: str, value: Any, low: float, high: float, integral: bool) -> None:
            valid_type = isinstance(value, int) if integral else isinstance(value, int | float)
            if isinstance(value, bool) or not valid_type or not low <= value <= high:
                kind = "an integer" if integral else "a number"
                raise ValueError(f"{name} must be {kind} in [{low:g}, {high:g}], got {value!r}")

        number("error_rate", self.error_rate, 0, 1, integral=False)
        number("rate_limit_every", self.rate_limit_every, 0, 1_000_000, integral=True)
        number("retry_after_seconds", self.retry_after_seconds, 0, 3600, integral=False)
        number("latency_ms", self.latency_ms, 0, 60_000, integral=True)
        if not isinstance(self.outage, bool):
            raise ValueError(f"outage must be true or false, got {self.outage!r}")
        _check_schema_drift(self.schema_drift)
        number("duplicate_rate", self.duplicate_rate, 0, 1, integral=False)
        number("duplicate_skew_seconds", self.duplicate_skew_seconds, -86_400, 86_400, integral=True)
        number("late_arrival_rate", self.late_arrival_rate, 0, 1, integral=False)
        if self.as_of is not None:
            try:
                self.as_of_time()
            except (TypeError, ValueError):
                raise ValueError(f"as_of must be an ISO 8601 timestamp or null, got {self.as_of!r}") from None
        number("truncate_every", self.truncate_every, 0, 1_000_000, integral=True)
        number("omit_next_cursor_after", self.omit_next_cursor_after, 0, 1_000_000, integral=True)
        number("total_offset", self.total_offset, -1_000_000, 1_000_000, integral=True)
        if self.malformed_body is not None and self.malformed_body not in MALFORMED_BODIES:
            raise ValueError(
                f"malformed_body must be one of {', '.join(MALFORMED_BODIES)} or null, got {self.malformed_body!r}"
            )
        number("garbage_every", self.garbage_every, 0, 1_000_000, integral=True)
        _check_garbage(self.garbage)

    def as_of_time(self) -> datetime | None:
        return None if self.as_of is None else to_naive_utc(datetime.fromisoformat(self.as_of))

    def _duplicate_every(self) -> int:
        return max(1, round(1 / self.duplicate_rate)) if self.duplicate_rate else 0

    def is_duplicated(self, position: int) -> bool:
        """Whether the record at `position` (0-based) of a listing is sent twice."""
        every = self._duplicate_every()
        return bool(every) and (position + 1) % every == 0

    def duplicates_in(self, record_count: int) -> int:
        """How many copies a listing of `record_count` records carries on top of them (not in its total)."""
        every = self._duplicate_every()
        return record_count // every if every else 0

    def arrives_late(self, order_id: int) -> bool:
        """Whether an order (and its items and payments) reaches the source LATE_ARRIVAL_DELAY after its day."""
        return zlib.crc32(order_id.to_bytes(8, "big")) < self.late_arrival_rate * 2**32

    def garbage_at(self, table: str, position: int) -> str | None:
        """The column of the record at `position` (0-based) of a listing of `table` that carries garbage."""
        columns = list(self.garbage.get(table, ()))
        if not self.garbage_every or not columns or (position + 1) % self.garbage_every:
            return None
        return columns[((position + 1) // self.garbage_every - 1) % len(columns)]

    @classmethod
    def from_dict(cls, payload: Any) -> Faults:
        """Faults from a JSON object; missing settings take their defaults, unknown ones are an error."""
        if not isinstance(payload, dict):
            raise ValueError("faults must be a JSON object")
        known = {f.name for f in fields(cls)}
        for name in payload:
            if name not in known:
                raise ValueError(f"unknown fault setting {name!r}; expected some of {', '.join(sorted(known))}")
        return cls(**payload)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_schema_drift(drift: Any) -> None:
    def column_names(value: Any) -> bool:
        return all(isinstance(name, str) and name for name in value)

    if not isinstance(drift, dict):
        raise ValueError(f"schema_drift must be an object of table -> changes, got {drift!r}")
    for table, changes in drift.items():
        where = f"schema_drift.{table}"
        if table not in API_TABLES:
            raise ValueError(f"{where}: unknown table; expected some of {', '.join(API_TABLES)}")
        if not isinstance(changes, dict) or not set(changes) <= set(SCHEMA_DRIFT_CHANGES):
            raise ValueError(f"{where} must be an object with some of {', '.join(SCHEMA_DRIFT_CHANGES)}")
        drop = changes.get("drop", [])
        if not isinstance(drop, list) or not column_names(drop):
            raise ValueError(f"{where}.drop must be a list of column names")
        for change in ("retype", "rename", "add"):
            value = changes.get(change, {})
            if not isinstance(value, dict) or not column_names(value):
                raise ValueError(f"{where}.{change} must be an object keyed by column name")
        for column, new_type in changes.get("retype", {}).items():
            if new_type not in RETYPES:
                raise ValueError(f"{where}.retype.{column} must be one of {', '.join(RETYPES)}, got {new_type!r}")
        if not column_names(changes.get("rename", {}).values()):
            raise ValueError(f"{where}.rename must map column names to column names")


def _check_garbage(garbage: Any) -> None:
    if not isinstance(garbage, dict):
        raise ValueError(f"garbage must be an object of table -> {{column: value}}, got {garbage!r}")
    for table, values in garbage.items():
        if table not in API_TABLES:
            raise ValueError(f"garbage.{table}: unknown table; expected some of {', '.join(API_TABLES)}")
        if not isinstance(values, dict) or not values or not all(isinstance(c, str) and c for c in values):
            raise ValueError(f"garbage.{table} must be a non-empty object keyed by column name")


def _garbage_records(array_body: bytes, table: str, positions: range, faults: Faults) -> bytes:
    """The records at `positions` of a listing (a JSON array's contents) with their garbage values set."""
    columns = [faults.garbage_at(table, position) for position in positions]
    if not any(columns):
        return array_body
    records = orjson.loads(b"[" + array_body + b"]")
    for record, column in zip(records, columns, strict=True):
        if column is not None:
            record[column] = faults.garbage[table][column]
    return orjson.dumps(records, option=JSON_OPTIONS)[1:-1]


def _drift_records(array_body: bytes, changes: dict[str, Any]) -> bytes:
    """The records of a page (a JSON array's contents) with a table's schema drift applied."""
    records = orjson.loads(b"[" + array_body + b"]")
    drop = set(changes.get("drop", ()))
    retype = {column: RETYPES[new_type] for column, new_type in changes.get("retype", {}).items()}
    rename = changes.get("rename", {})
    drifted = []
    for record in records:
        shaped = {
            rename.get(column, column): value if value is None or column not in retype else retype[column](value)
            for column, value in record.items()
            if column not in drop
        }
        drifted.append(shaped | changes.get("add", {}))
    return orjson.dumps(drifted, option=JSON_OPTIONS)[1:-1]


class BadRequest(ValueError):
    """A client error in a /v1 query; the message names the offending parameter."""


@dataclass(frozen=True, slots=True)
class _Listing:
    """All records matching one query at one clock, encoded once (see encoding.encode_array), keys ascending.

    Records i..j-1 with their separating commas are array[starts[i] : starts[j] - 1], so any page is one
    slice of the array, whatever the limit. `amounts` holds each record's money amount (money tables
    only); `controls` caches the control figures per garbage setting, computed on first request.
    """

    keys: list[int]
    array: bytes
    starts: list[int]
    amounts: list[int | None] | None
    controls: dict[bytes, tuple[int, int, int | None]] = field(default_factory=dict)

    def record(self, position: int) -> bytes:
        return self.array[self.starts[position] : self.starts[position + 1] - 1]


@dataclass(frozen=True, slots=True)
class _Query:
    """What one listing holds: a table and its filters, resolved (the clock fills in a missing updated_before)."""

    table: str
    filter_text: str  # canonical form of the filters as given; binds cursors to their query
    day: date | None = None
    since: datetime | None = None
    before: datetime | None = None
    before_pinned: bool = False  # updated_before not given: the first page's clock, carried in cursors
    current_state: bool = False

    def settles_at(self, late_arrivals: bool) -> datetime | None:
        """From when on the listing is the same whatever the clock (None: never, for current state)."""
        if self.current_state:
            return None
        if self.day is not None:
            end = datetime(self.day.year, self.day.month, self.day.day) + timedelta(days=1)
            return settles_at(self.table, end, late_arrivals)
        assert self.before is not None
        return settles_at(self.table, self.before, late_arrivals)


@dataclass(frozen=True, slots=True)
class _Request:
    query: _Query
    limit: int
    after: int | None  # the last key of the previous page
    keys_only: bool


class DemoShopServer:
    """The shop's API on a `ThreadingHTTPServer` in a background thread.

    Use as a context manager or call start() / stop(). `url` is valid once started; `request_count` is
    the number of /v1 requests received (whatever their outcome), which tests use to see retries.
    `dimensions` is how customers and products are served: "daily_versions" (each day's partition of
    versions) or "current_state" (only the latest version of each, as of the clock).
    """

    def __init__(
        self,
        world: ShopWorld,
        token: str,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: Faults | None = None,
        dimensions: str = "daily_versions",
    ) -> None:
        if not token:
            raise ValueError("token must be a non-empty string")
        if dimensions not in DIMENSION_MODES:
            raise ValueError(f"dimensions must be one of {', '.join(DIMENSION_MODES)}, got {dimensions!r}")
        self.world = world
        self.host = host
        self.port = port
        self.dimensions = dimensions
        self._expected_auth = f"Bearer {token}".encode()
        self._faults = faults or Faults()
        self._lock = threading.Lock()
        self._request_count = 0
        self._requests_since_faults = 0
        self._listings: OrderedDict[tuple, _Listing] = OrderedDict()
        self._listings_lock = threading.Lock()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------------------------- lifecycle

    def start(self) -> DemoShopServer:
        """Bind and serve in a daemon thread. Raises OSError when the address is unavailable."""
        if self._httpd is not None:
            raise RuntimeError("server already started")
        httpd = _HTTPServer((self.host, self.port), _Handler)
        httpd.shop = self
        self.port = httpd.server_address[1]
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="demo-shop-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and drop open keep-alive connections, so that clients see the server go away."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        httpd.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> DemoShopServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("server not started")
        return f"http://{self.host}:{self.port}"

    @property
    def request_count(self) -> int:
        with self._lock:
            return self._request_count

    @property
    def faults(self) -> Faults:
        with self._lock:
            return self._faults

    def set_faults(self, faults: Faults) -> None:
        """Replace the faults; their request schedule restarts from the next request."""
        with self._lock:
            self._faults = faults
            self._requests_since_faults = 0

    # -------------------------------------------------------------------------------- requests

    def _authorized(self, handler: BaseHTTPRequestHandler) -> bool:
        given = handler.headers.get("Authorization", "").encode("latin-1", "replace")
        return hmac.compare_digest(given, self._expected_auth)

    def _unauthorized(self, handler: _Handler) -> None:
        reason = "invalid bearer token" if handler.headers.get("Authorization") else "missing bearer token"
        handler.send_json(
            HTTPStatus.UNAUTHORIZED,
            {"error": f"{reason}; send 'Authorization: Bearer <token>'"},
            {"WWW-Authenticate": 'Bearer realm="demo-shop"'},
        )

    def _handle_v1(self, handler: _Handler, resource: str, query_string: str) -> None:
        with self._lock:
            self._request_count += 1
            self._requests_since_faults += 1
            sequence = self._requests_since_faults
            faults = self._faults
        if faults.latency_ms:
            time.sleep(faults.latency_ms / 1000)
        if faults.outage:
            handler.send_json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": "service unavailable (simulated outage)"})
            return
        if not self._authorized(handler):
            self._unauthorized(handler)
            return
        table, _, endpoint = resource.partition("/")
        if table not in API_TABLES or endpoint not in ("", "control"):
            handler.send_json(HTTPStatus.NOT_FOUND, {"error": f"unknown resource /v1/{resource}"})
            return
        if faults.rate_limit_every and sequence % faults.rate_limit_every == 0:
            retry_after = f"{faults.retry_after_seconds:g}"
            handler.send_json(
                HTTPStatus.TOO_MANY_REQUESTS,
                {"error": f"rate limit exceeded; retry after {retry_after} s"},
                {"Retry-After": retry_after},
            )
            return
        if faults.error_rate and sequence % max(1, round(1 / faults.error_rate)) == 0:
            handler.send_json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error (simulated)"})
            return
        clock = _clock(faults)
        try:
            request = _parse_request(table, query_string, endpoint == "control", clock, self.dimensions)
        except BadRequest as exc:
            handler.send_json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
            return
        listing = self._listing(request.query, faults, clock)
        truncated = bool(faults.truncate_every) and sequence % faults.truncate_every == 0
        if endpoint == "control":
            count, checksum, amount_total = _control_figures(listing, table, faults)
            body = orjson.dumps(
                {
                    "table": table,
                    "count": count,
                    "key_checksum": str(checksum),
                    "amount_total": amount_total,
                    "as_of": clock,
                },
                option=JSON_OPTIONS,
            )
            (handler.send_truncated_body if truncated else handler.send_body)(HTTPStatus.OK, body)
            return
        body, total = _page(listing, request, faults)
        headers = {"X-Total-Count": total}
        if truncated:
            handler.send_truncated_body(HTTPStatus.OK, body, headers)
        elif faults.malformed_body:
            _send_malformed(handler, faults.malformed_body, body, headers)
        else:
            handler.send_body(HTTPStatus.OK, body, headers)

    def _handle_admin_faults(self, handler: _Handler, method: str) -> None:
        if not self._authorized(handler):
            self._unauthorized(handler)
            return
        if method == "PUT":
            try:
                faults = Faults.from_dict(orjson.loads(handler.read_body()))
            except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
                handler.send_json(HTTPStatus.BAD_REQUEST, {"error": f"faults: {exc}"})
                return
            self.set_faults(faults)
        handler.send_json(HTTPStatus.OK, self.faults.to_dict())

    def _listing(self, query: _Query, faults: Faults, clock: datetime) -> _Listing:
        table = query.table
        late = faults.arrives_late if faults.late_arrival_rate and table in DAILY_TABLES else None
        settled = query.settles_at(late_arrivals=late is not None)
        # A settled listing is the same at any later clock, so it is cached once; a recent one per second.
        lateness = faults.late_arrival_rate if late else 0.0
        cache_key = (query, lateness, None if settled and clock >= settled else clock)
        # Serialising under the lock means concurrent first requests for a listing wait for one build
        # instead of all doing it.
        with self._listings_lock:
            listing = self._listings.get(cache_key)
            if listing is not None:
                self._listings.move_to_end(cache_key)
                return listing
            world = self.world
            if query.day is not None:
                records = world._partition(table, query.day, clock, late)
            elif table in DAILY_TABLES:
                records = world._changes(table, query.since, query.before, clock, late)
            elif query.current_state:
                records = world._current_versions(table, query.since, query.before, clock)
            else:
                records = world._versions_between(table, query.since, query.before, clock)
            key = PRIMARY_KEYS[table]
            amounts = [_amount(table, record) for record in records] if table in MONEY_COLUMNS else None
            listing = _Listing([record[key] for record in records], *encode_array(records), amounts)
            self._listings[cache_key] = listing
            if len(self._listings) > 16:
                self._listings.popitem(last=False)
            return listing


def _clock(faults: Faults) -> datetime:
    """The instant the source serves its world as of: Faults.as_of, else the wall clock; whole seconds."""
    clock = faults.as_of_time() or datetime.now(UTC).replace(tzinfo=None)
    return clock.replace(microsecond=0)


def _amount(table: str, record: dict[str, Any]) -> int | None:
    """A money record's amount in cents, or None unless every column it is computed from is an integer."""
    values = [record.get(column) for column in MONEY_COLUMNS[table]]
    if not all(type(value) is int for value in values):  # bool is not an amount
        return None
    if table == "payments":
        return values[0]
    quantity, unit_price, discount = values
    return quantity * unit_price - discount


def _control_figures(listing: _Listing, table: str, faults: Faults) -> tuple[int, int, int | None]:
    """(count, key_checksum, amount_total) of the records a listing holds, its garbage values applied."""
    garbage = faults.garbage.get(table) if faults.garbage_every else None
    cache_key = orjson.dumps([faults.garbage_every, garbage], option=orjson.OPT_SORT_KEYS) if garbage else b""
    figures = listing.controls.get(cache_key)
    if figures is None:
        key = PRIMARY_KEYS[table]
        values: list[Any] = list(listing.keys)
        amounts = None if listing.amounts is None else list(listing.amounts)
        if garbage:
            for position in range(faults.garbage_every - 1, len(values), faults.garbage_every):
                column = faults.garbage_at(table, position)
                if column == key:
                    values[position] = garbage[column]
                if amounts is not None and column in MONEY_COLUMNS[table]:
                    record = orjson.loads(listing.record(position))
                    record[column] = garbage[column]
                    amounts[position] = _amount(table, record)
        texts = {key_text(value) for value in values}
        amount_total = None if amounts is None else sum(amount for amount in amounts if amount is not None)
        figures = (len(texts), sum(text_hash(text) for text in texts) % MODULUS, amount_total)
        listing.controls[cache_key] = figures
    return figures


def _page(listing: _Listing, request: _Request, faults: Faults) -> tuple[bytes, str]:
    """(the body of the requested page of a listing with every listing fault applied, its total)."""
    query, limit = request.query, request.limit
    count = len(listing.keys)
    start = 0 if request.after is None else bisect_right(listing.keys, request.after)
    end = min(start + limit, count)
    next_cursor = _encode_cursor(query, listing.keys[end - 1]) if end < count else None
    table = query.table
    if request.keys_only:
        records = _keys_records(listing, table, range(start, end), faults)
    else:
        records = listing.array[listing.starts[start] : listing.starts[end] - 1] if end > start else b""
        if records and faults.garbage_every and table in faults.garbage:
            records = _garbage_records(records, table, range(start, end), faults)
    if faults.duplicate_rate:
        # Copies of the previous page's chosen records lead this page; the last page repeats its own.
        copy = partial(_copy, listing, table, faults, request.keys_only)
        resent_before = [copy(p) for p in range(max(0, start - limit), start) if faults.is_duplicated(p)]
        resent_after = [copy(p) for p in range(start, end) if faults.is_duplicated(p)] if end == count else []
        records = b",".join(part for part in (*resent_before, records, *resent_after) if part)
    if records and table in faults.schema_drift:
        records = _drift_records(records, faults.schema_drift[table])
    page_number = start // limit + 1
    link = (
        b""
        if faults.omit_next_cursor_after and page_number >= faults.omit_next_cursor_after
        else b',"next_cursor":' + orjson.dumps(next_cursor)
    )
    total = str(count + faults.total_offset)
    return b"".join((b'{"data":[', records, b"]", link, b',"total":', total.encode(), b"}")), total


def _keys_records(listing: _Listing, table: str, positions: range, faults: Faults) -> bytes:
    """The records at `positions` carrying only their primary key (garbage in the key column applied)."""
    key = PRIMARY_KEYS[table]
    records = [{key: listing.keys[position]} for position in positions]
    if faults.garbage_every and key in faults.garbage.get(table, ()):
        for record, position in zip(records, positions, strict=True):
            if faults.garbage_at(table, position) == key:
                record[key] = faults.garbage[table][key]
    return orjson.dumps(records)[1:-1]


def _send_malformed(handler: _Handler, kind: str, listing: bytes, headers: dict[str, str]) -> None:
    """A 200 that is not the JSON listing: what a proxy, a maintenance page or a broken upstream sends."""
    if kind == "html":
        page = b"<!DOCTYPE html><html><body><h1>Down for maintenance</h1></body></html>"
        handler.send_body(HTTPStatus.OK, page, content_type="text/html; charset=utf-8")
    elif kind == "array":
        handler.send_body(HTTPStatus.OK, b"[]")
    elif kind == "text_plain":
        handler.send_body(HTTPStatus.OK, listing, headers, content_type="text/plain; charset=utf-8")
    else:
        handler.send_body(HTTPStatus.OK, listing[: len(listing) // 2], headers)


def _copy(listing: _Listing, table: str, faults: Faults, keys_only: bool, position: int) -> bytes:
    """The re-sent copy of the record at `position`, its updated_at skewed if asked."""
    if keys_only:
        return orjson.dumps({PRIMARY_KEYS[table]: listing.keys[position]})
    encoded = listing.record(position)
    if faults.duplicate_skew_seconds:
        record = orjson.loads(encoded)
        updated_at = datetime.fromisoformat(record["updated_at"])
        record["updated_at"] = to_naive_utc(updated_at) + timedelta(seconds=faults.duplicate_skew_seconds)
        encoded = orjson.dumps(record, option=JSON_OPTIONS)
    return encoded


def _parse_request(table: str, query_string: str, control: bool, clock: datetime, dimensions: str) -> _Request:
    """The request a /v1 query string makes of `table` (or of its control figures) at `clock`, or BadRequest."""
    params: dict[str, str] = {}
    for name, value in parse_qsl(query_string, keep_blank_values=True):
        if name in params:
            raise BadRequest(f"parameter {name} given more than once")
        params[name] = value
    filters = (
        ("date", "updated_since", "updated_before") if table in DAILY_TABLES else ("updated_since", "updated_before")
    )
    allowed = filters if control else (*filters, "limit", "cursor", "fields")
    path = f"/v1/{table}/control" if control else f"/v1/{table}"
    for name in params:
        if name not in allowed:
            raise BadRequest(f"unknown parameter {name} for {path}; allowed: {', '.join(allowed)}")

    current_state = table in VERSIONED_TABLES and dimensions == "current_state"
    if "date" in params:
        if "updated_since" in params or "updated_before" in params:
            raise BadRequest("give either date or updated_since (with updated_before), not both")
        value = params["date"]
        try:
            if not _DATE_PATTERN.fullmatch(value):
                raise ValueError(value)
            day = date.fromisoformat(value)
        except ValueError:
            raise BadRequest(f"date must be a date as YYYY-MM-DD, got {value[:40]!r}") from None
        query = _Query(table, f"date={day.isoformat()}", day=day)
    else:
        if "updated_since" not in params:
            alternative = "date (or updated_since for the change feed)" if table in DAILY_TABLES else "updated_since"
            raise BadRequest(f"missing required parameter {alternative}")
        since = _parse_timestamp("updated_since", params["updated_since"])
        filter_text = f"updated_since={since.isoformat()}"
        if "updated_before" in params:
            before = _parse_timestamp("updated_before", params["updated_before"])
            filter_text += f"&updated_before={before.isoformat()}"
        elif table in VERSIONED_TABLES and not current_state:
            raise BadRequest("missing required parameter updated_before")
        else:
            before = clock
        query = _Query(
            table,
            filter_text,
            since=since,
            before=before,
            before_pinned="updated_before" not in params,
            current_state=current_state,
        )
    after = None
    if "cursor" in params:
        query, after = _decode_cursor(query, params["cursor"])
    if query.since is not None:
        _check_window(query, clock)

    keys_only = "fields" in params
    if keys_only and params["fields"] != PRIMARY_KEYS[table]:
        raise BadRequest(
            f"fields must be {PRIMARY_KEYS[table]} (the primary key: the only field list supported), "
            f"got {params['fields'][:40]!r}"
        )
    raw_limit = params.get("limit", str(DEFAULT_LIMIT))
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_LIMIT:
        raise BadRequest(f"limit must be an integer from 1 to {MAX_LIMIT}, got {raw_limit[:40]!r}")
    return _Request(query, int(raw_limit), after, keys_only)


def _check_window(query: _Query, clock: datetime) -> None:
    since, before = query.since, query.before
    assert since is not None and before is not None
    if before <= since:
        if query.before_pinned:
            raise BadRequest(
                f"updated_since must be earlier than the source's clock ({clock.isoformat()}Z) "
                "when updated_before is not given"
            )
        raise BadRequest("updated_before must be later than updated_since")
    if query.current_state:
        if since < clock - MAX_CURRENT_STATE_REACH:
            raise BadRequest(
                f"updated_since must be at most {MAX_CURRENT_STATE_REACH.days} days before the source's clock "
                f"({clock.isoformat()}Z)"
            )
        if before - since > MAX_CURRENT_STATE_REACH:
            raise BadRequest(f"updated_before must be at most {MAX_CURRENT_STATE_REACH.days} days after updated_since")
    elif before - since > MAX_UPDATED_RANGE:
        if query.before_pinned:
            raise BadRequest(
                f"updated_since must be at most {MAX_UPDATED_RANGE.days} days before the source's clock "
                f"({clock.isoformat()}Z) when updated_before is not given"
            )
        raise BadRequest(f"updated_before must be at most {MAX_UPDATED_RANGE.days} days after updated_since")


def _parse_timestamp(name: str, value: str) -> datetime:
    try:
        return to_naive_utc(datetime.fromisoformat(value))
    except ValueError:
        # A literal "+00:00" arrives as " 00:00" unless URL-encoded, hence the hint.
        raise BadRequest(
            f"{name} must be an ISO 8601 timestamp such as 2026-11-20T00:00:00Z (URL-encode '+'), got {value[:40]!r}"
        ) from None


def _encode_cursor(query: _Query, last_key: int) -> str:
    payload: list[Any] = [query.table, query.filter_text, last_key]
    if query.before_pinned:
        assert query.before is not None
        payload.append(query.before.isoformat())
    raw = orjson.dumps(payload)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _decode_cursor(query: _Query, cursor: str) -> tuple[_Query, int]:
    """(the query, with the window end the cursor carries when it was not given; the previous page's last key)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        table, filter_text, last_key, *pinned = orjson.loads(raw)
    except (binascii.Error, orjson.JSONDecodeError, TypeError, ValueError):
        raise BadRequest("cursor is not a cursor returned by this API") from None
    if (
        table != query.table
        or filter_text != query.filter_text
        or type(last_key) is not int
        or len(pinned) != query.before_pinned
    ):
        raise BadRequest("cursor belongs to a different query; pass the same filters as the first page")
    if not pinned:
        return query, last_key
    try:
        return replace(query, before=to_naive_utc(datetime.fromisoformat(pinned[0]))), last_key
    except (TypeError, ValueError):
        raise BadRequest("cursor is not a cursor returned by this API") from None


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default backlog of 5 drops connections when many clients start at once
    # Don't let stop() wait for handler threads: keep-alive clients may hold connections open.
    block_on_close = False
    shop: DemoShopServer

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn) that can stall without a network.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def track(self, connection: socket.socket, active: bool) -> None:
        with self._connections_lock:
            if active:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # the client may have closed it already
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection from %s ended with an error", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a paging client reuses one connection
    server_version = "DemoShop/1.0"
    timeout = 30  # idle keep-alive connections give their thread back
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without NODELAY, Nagle plus delayed ACKs can add 40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection, active=True)

    def finish(self) -> None:
        self.server.track(self.connection, active=False)
        super().finish()

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The `Date` header: the source's own clock (`Faults.as_of` when set), as a real server's would be,
        so that a client keeping watermarks in the source's time sees the time the data is served at."""
        if timestamp is not None:
            return super().date_time_string(timestamp)
        clock = _clock(self.server.shop.faults).replace(tzinfo=UTC)
        return email.utils.format_datetime(clock, usegmt=True)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request access log on stderr."""

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def _dispatch(self, method: str) -> None:
        shop = self.server.shop
        parts = urlsplit(self.path)
        try:
            if parts.path == "/admin/faults":
                shop._handle_admin_faults(self, method)
            elif method != "GET":
                self.close_connection = True  # rather than read a body nobody wants
                self.send_json(HTTPStatus.METHOD_NOT_ALLOWED, {"error": f"{method} not allowed here"}, {"Allow": "GET"})
            elif parts.path == "/health":
                self.send_json(HTTPStatus.OK, {"status": "ok"})
            elif parts.path.startswith("/v1/"):
                shop._handle_v1(self, parts.path[len("/v1/") :], parts.query)
            else:
                self.send_json(HTTPStatus.NOT_FOUND, {"error": f"no route for {parts.path}"})
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception:
            log.exception("demo shop server failed on %s %s", method, parts.path)
            self.send_json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error"})

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self.close_connection = True  # the unread body would be taken for the next request
            raise ValueError(f"request body over {MAX_BODY_BYTES} bytes")
        return self.rfile.read(length)

    def send_json(self, status: HTTPStatus, payload: Any, headers: dict[str, str] | None = None) -> None:
        self.send_body(status, orjson.dumps(payload), headers)

    def send_body(
        self,
        status: HTTPStatus,
        body: bytes,
        headers: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        self._send_head(status, len(body), headers, content_type)
        self.wfile.write(body)

    def send_truncated_body(self, status: HTTPStatus, body: bytes, headers: dict[str, str] | None = None) -> None:
        """Promise the whole body, send half of it and hang up (what a crashed upstream or a cut proxy does)."""
        self._send_head(status, len(body), headers, "application/json")
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        self.close_connection = True

    def _send_head(self, status: HTTPStatus, length: int, headers: dict[str, str] | None, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
