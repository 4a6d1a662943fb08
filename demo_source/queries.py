"""What a /v1 request asks for: its query string parsed and checked into a `_Request`, and the opaque
cursors that carry a listing's position (and its window end, when the client gave none) from page to page.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

import orjson

from demo_source.ledger import settles_at
from demo_source.timeline import to_naive_utc
from demo_source.vocabulary import DAILY_TABLES, PRIMARY_KEYS, VERSIONED_TABLES

API_TABLES = (*VERSIONED_TABLES, *DAILY_TABLES)
DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000
# An update window reads the orders of every day that can change inside it (a month before it for
# orders and payments) or one day of versions per day it spans; the caps bound what one request costs.
MAX_UPDATED_RANGE = timedelta(days=31)
MAX_CURRENT_STATE_REACH = timedelta(days=366)
_DATE_PATTERN = re.compile(r"\d{4}-\d{2}-\d{2}")


class BadRequest(ValueError):
    """A client error in a /v1 query; the message names the offending parameter."""


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
