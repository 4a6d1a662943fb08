"""The fault knobs of the demo shop's API (`Faults`): what they may be set to, and the source's clock.

`Faults` says how badly the /v1 API misbehaves (500s, 429s with Retry-After, latency, a full outage, a
changed schema, records re-sent on a later page, records that reach the source late, bodies cut short,
pages that lose their next link or miscount their records, 200s that are not the JSON listing they should
be, garbage values in records) and the clock the world is served as of. This module owns the knobs, their
validation, and how schema drift and garbage reshape a page's records.
"""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

import orjson

from demo_source.encoding import JSON_OPTIONS
from demo_source.queries import API_TABLES
from demo_source.timeline import to_naive_utc

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


def _clock(faults: Faults) -> datetime:
    """The instant the source serves its world as of: Faults.as_of, else the wall clock; whole seconds."""
    clock = faults.as_of_time() or datetime.now(UTC).replace(tzinfo=None)
    return clock.replace(microsecond=0)
