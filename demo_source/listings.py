"""What the API sends for a query: its listing (every matching record at one clock, encoded once), the
requested page of it with every listing fault applied, and its control figures.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import orjson

from demo_source.checksum import MODULUS, key_text, text_hash
from demo_source.encoding import JSON_OPTIONS
from demo_source.faults import Faults, _drift_records, _garbage_records
from demo_source.queries import _encode_cursor, _Request
from demo_source.timeline import to_naive_utc
from demo_source.vocabulary import PRIMARY_KEYS

# The columns a money table's amount is computed from (control figures' amount_total).
MONEY_COLUMNS = {"payments": ("amount_cents",), "order_items": ("quantity", "unit_price_cents", "discount_cents")}


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
