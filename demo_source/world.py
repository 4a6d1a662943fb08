"""The demo shop's world: every record the shop ever produced, as it stood at any instant.

This module owns the *data* of the demo source as callers ask for it, nothing about transport. Given a
scale and a bad-record rate, `ShopWorld` regenerates any day's customers, products, orders, order items,
payments and web events identically in any process (randomness.py). Orders live on after their day:
placed, paid, shipped, delivered, some refunded up to 30 days later (DATA_SPEC.md, "The life of an order";
ledger.py), so every accessor takes an `as_of` instant and answers with the records as they stood then
(None: the end of time, every life finished). The rules are the shared data spec's; `ground_truth`
computes the daily marts straight from the generated records so the pipeline's output can be checked
against them.

The days themselves are generated and cached by days.py; records (records.py) are built only for what is
asked. Records are dicts of plain Python values (int, str, bool, None, naive-UTC `datetime`) sorted by
primary key. The HTTP server and the landing writer use the package-private methods (`_partition`,
`_changes`, `_versions_between`, `_current_versions`, `_web_event_rows`), whose records callers must not
mutate.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Any

from demo_source.days import _ShopDays
from demo_source.ground_truth import daily_marts
from demo_source.ledger import (
    _CANCELLED,
    _DELAY_SECONDS,
    _INDEX_BITS,
    _INDEX_MASK,
    _PAID,
    _PLACED,
    _REFUNDED,
    _TIME_SHIFT,
    LIFECYCLE_DAYS,
    ORDER_ID_BLOCK,
    _Ledger,
)
from demo_source.records import _customer_version, _item_records, _order_record, _payment_record, gc_paused
from demo_source.timeline import EPOCH, SECONDS_PER_DAY, _day_of, _days, _moment, _to_second
from demo_source.vocabulary import DAILY_TABLES, ORDER_STATUSES, TABLES, VERSIONED_TABLES, WEB_EVENT_COLUMNS


class ShopWorld(_ShopDays):
    """Deterministic generator of the demo shop's records (see the module docstring and DATA_SPEC.md).

    `scale` multiplies the daily volumes (at 1.0: 150 signups, 2000 orders, about 50k web events);
    `bad_record_rate` is the share of each table's daily records that get one rule-breaking column.
    The world starts at EPOCH (2020-01-01); earlier days are empty. Every record accessor takes `as_of`,
    the instant the records are asked as of (None: the end of time). Thread-safe.
    """

    def __repr__(self) -> str:
        return f"ShopWorld(scale={self.scale:g}, bad_record_rate={self.bad_record_rate:g})"

    # ------------------------------------------------------------------------------------ public API

    def customers_updated_between(
        self, start: datetime, end: datetime, as_of: datetime | None = None
    ) -> list[dict[str, Any]]:
        """Daily customer versions with updated_at in [start, end) that exist at as_of, the latest per customer."""
        return self._versions_between("customers", start, end, as_of)

    def products_updated_between(
        self, start: datetime, end: datetime, as_of: datetime | None = None
    ) -> list[dict[str, Any]]:
        """Daily product versions with updated_at in [start, end) that exist at as_of, the latest per product."""
        return [dict(r) for r in self._versions_between("products", start, end, as_of)]

    def current_versions_between(
        self, table: str, start: datetime, end: datetime, as_of: datetime
    ) -> list[dict[str, Any]]:
        """The current version at as_of of each customer or product, if its updated_at is in [start, end).

        A customer's current version is its version as of its latest activity (signup or order) at or
        before as_of; a product's is the one of the latest nightly sync. A world without end has no final
        current state, so as_of is required.
        """
        return [dict(r) for r in self._current_versions(table, start, end, as_of)]

    def orders_on(self, day: date, as_of: datetime | None = None) -> list[dict[str, Any]]:
        return self._partition("orders", day, as_of)

    def order_items_on(self, day: date, as_of: datetime | None = None) -> list[dict[str, Any]]:
        return self._partition("order_items", day, as_of)

    def payments_on(self, day: date, as_of: datetime | None = None) -> list[dict[str, Any]]:
        """Payments with paid_at on `day`: captures and failures of the day's orders, refunds of earlier ones."""
        return self._partition("payments", day, as_of)

    def changed_between(
        self, table: str, start: datetime, end: datetime, as_of: datetime | None = None
    ) -> list[dict[str, Any]]:
        """The change feed's truth: records of orders, order_items or payments whose updated_at at as_of is
        in [start, end), whatever their date, by primary key."""
        return self._changes(table, start, end, as_of)

    def web_events_on(self, day: date, as_of: datetime | None = None) -> list[dict[str, Any]]:
        cutoff = None if as_of is None else _moment(_to_second(as_of))
        return [
            dict(zip(WEB_EVENT_COLUMNS, row, strict=True))
            for row in self._web_event_rows(day)
            if cutoff is None or row[6] <= cutoff
        ]

    def order_life(self, order_id: int) -> list[tuple[str, datetime]]:
        """Every (order_status, time) of an order's life, in order (empty for an id the world never had)."""
        day_index, k = divmod(order_id - 1, ORDER_ID_BLOCK)
        ledger = self._ledger(EPOCH + timedelta(days=day_index)) if order_id > 0 else None
        if ledger is None or k >= len(ledger):
            return []
        return [(ORDER_STATUSES[status], _moment(ledger.start + second)) for status, second in ledger.transitions(k)]

    def bad_records(self, table: str, day: date, as_of: datetime | None = None) -> dict[Any, str]:
        """Primary key -> broken column, for every corrupted record in `table`'s partition of `day` at as_of."""
        if table not in TABLES:
            raise ValueError(f"unknown table {table!r}; expected one of {', '.join(TABLES)}")
        now = _to_second(as_of)
        if table == "web_events":
            cutoff = _moment(now)
            rows = {row[0]: row[6] for row in self._web_event_rows(day)}
            return {key: column for key, column in self._web_day(day).bad.items() if rows[key] <= cutoff}
        if table == "products":
            synced = (day - EPOCH).days * SECONDS_PER_DAY + 300
            return dict(self._catalog(day).bad) if synced <= now else {}
        if table == "customers":
            ids, seconds = self._activity(day)
            start = (day - EPOCH).days * SECONDS_PER_DAY
            seen = {cid for cid, second in zip(ids, seconds, strict=True) if start + second <= now}
            return {cid: bad[0] for cid, bad in self._bad_customer_ids(day).items() if cid in seen}
        if table == "payments":
            bad = self._bad_payment_ids(day)
            return {
                payment_id: bad[payment_id][0]
                for payment_id, ledger, _, _, paid in self._payment_slots(day)
                if payment_id in bad and ledger.start + paid <= now
            }
        ledger = self._ledger(day)
        if ledger is None:
            return {}
        if table == "orders":
            return {
                ledger.first_order_id + k: column
                for k, (column, _) in ledger.bad_orders.items()
                if ledger.start + ledger.ordered[k] <= now
            }
        broken = {}
        for position, (column, _) in ledger.bad_items.items():
            k = bisect_right(ledger.item_starts, position) - 1
            if ledger.start + ledger.ordered[k] <= now:
                broken[(ledger.first_order_id + k) * 100 + position - ledger.item_starts[k] + 1] = column
        return broken

    def ground_truth(self, day: date, as_of: datetime | None = None) -> dict[str, int]:
        """The daily_revenue and web_funnel figures of `day` by DATA_SPEC.md's definitions, money in cents.

        "The marts as the source's data stands at as_of": the day's orders that exist then, in their status
        then, and the day's web events that have happened by then. Computed from the records exactly as
        served, so it describes a clean day only at bad_record_rate 0.
        """
        orders = self._partition("orders", day, as_of)
        items = self._partition("order_items", day, as_of)
        events = self._web_event_rows(day)
        if as_of is not None:
            cutoff = _moment(_to_second(as_of))
            events = [row for row in events if row[6] <= cutoff]
        return daily_marts(orders, items, events)

    def record_counts(self, day: date, as_of: datetime | None = None) -> dict[str, int]:
        """Rows per table in the partitions of `day` at as_of (customers, products: versions updated that day)."""
        start = datetime(day.year, day.month, day.day)
        end = start + timedelta(days=1)
        return {
            "customers": len(self._versions_between("customers", start, end, as_of)),
            "products": len(self._versions_between("products", start, end, as_of)),
            **{table: len(self._partition(table, day, as_of)) for table in DAILY_TABLES},
            "web_events": len(self.web_events_on(day, as_of)) if as_of else len(self._web_event_rows(day)),
        }

    # ------------------------------------------------------------------ package-private, for the server

    def _partition(
        self, table: str, day: date, as_of: datetime | None, late: Callable[[int], bool] | None = None
    ) -> list[dict[str, Any]]:
        """The records of a date-partitioned table for `day` as the source holds them at as_of.

        `late(order_id)` says which orders (with their items and payments) reach the source
        LATE_ARRIVAL_DELAY after they happen: at as_of such an order is in its state of as_of minus the
        delay, and every updated_at is that much later.
        """
        if table not in DAILY_TABLES:
            raise ValueError(f"{table!r} is not partitioned by date; expected one of {DAILY_TABLES}")
        now = _to_second(as_of)
        if table == "payments":
            records = []
            bad = self._bad_payment_ids(day)
            for payment_id, ledger, k, is_refund, paid in self._payment_slots(day):
                shift = _DELAY_SECONDS if late is not None and late(ledger.first_order_id + k) else 0
                if ledger.start + paid + shift <= now:
                    records.append(_payment_record(self, ledger, k, is_refund, paid, shift, bad.get(payment_id)))
            return records
        ledger = self._ledger(day)
        if ledger is None:
            return []
        records = []
        with gc_paused():
            for k in range(len(ledger)):
                if ledger.start + ledger.ordered[k] > now:
                    break  # orders follow the clock: no later one exists yet either
                shift = _DELAY_SECONDS if late is not None and late(ledger.first_order_id + k) else 0
                if table == "order_items":
                    if ledger.start + ledger.ordered[k] + shift <= now:
                        records += _item_records(self, ledger, k, shift)
                    continue
                state = ledger.state(k, now - shift - ledger.start)
                if state is not None:
                    records.append(_order_record(ledger, k, state, shift))
        return records

    def _changes(
        self,
        table: str,
        start: datetime,
        end: datetime,
        as_of: datetime | None,
        late: Callable[[int], bool] | None = None,
    ) -> list[dict[str, Any]]:
        """Records of a date-partitioned table whose updated_at at as_of is in [start, end), by primary key.

        Reads the change indexes of the ledgers of every day whose orders can change inside the window
        (LIFECYCLE_DAYS back for orders and payments) and builds records only for what it finds. `late`
        as for _partition.
        """
        if table not in DAILY_TABLES:
            raise ValueError(f"{table!r} is not partitioned by date; expected one of {DAILY_TABLES}")
        now, low, high = _to_second(as_of), _to_second(start), _to_second(end)
        lag = _DELAY_SECONDS if late is not None else 0
        # An index entry at second s is an update at s, or at s + lag for a late order.
        first_candidate, last_candidate = low - lag, min(high, now + 1)
        # The orders of a day change until LIFECYCLE_DAYS after the day's last second; items only on the day.
        span = SECONDS_PER_DAY * (1 if table == "order_items" else LIFECYCLE_DAYS + 1)
        found: list[tuple[int, _Ledger, int, int, int]] = []  # (key, ledger, k, status, shift)
        for day in _days(_day_of(first_candidate - span + 1), _day_of(last_candidate - 1)):
            ledger = self._ledger(day)
            with self._lock:
                changes = ledger.change_index()
            first = bisect_left(changes, (first_candidate - ledger.start) << _TIME_SHIFT)
            last = bisect_left(changes, (last_candidate - ledger.start) << _TIME_SHIFT)
            seen: set[int] = set()
            for packed in changes[first:last]:
                k = packed & _INDEX_MASK
                status = packed >> _INDEX_BITS & 7
                if table == "orders":
                    if k in seen:
                        continue
                    seen.add(k)
                elif status not in ((_PLACED,) if table == "order_items" else (_PAID, _CANCELLED, _REFUNDED)):
                    continue
                order_id = ledger.first_order_id + k
                shift = _DELAY_SECONDS if late is not None and late(order_id) else 0
                if table == "orders":
                    state = ledger.state(k, now - shift - ledger.start)
                    if state is None:
                        continue
                    status, second = state
                else:
                    second = packed >> _TIME_SHIFT
                updated = ledger.start + second + shift
                if low <= updated < high and updated <= now:
                    key = order_id * 10 + (2 if status == _REFUNDED else 1) if table == "payments" else order_id
                    found.append((key, ledger, k, status, shift))
        found.sort(key=lambda hit: hit[0])
        records = []
        with gc_paused():
            for key, ledger, k, status, shift in found:
                if table == "orders":
                    records.append(_order_record(ledger, k, ledger.state(k, now - shift - ledger.start), shift))
                elif table == "order_items":
                    records += _item_records(self, ledger, k, shift)
                else:
                    is_refund = status == _REFUNDED
                    paid = ledger.refunded[k] if is_refund else ledger.settled[k]
                    bad = self._bad_payment_ids(_day_of(ledger.start + paid)).get(key)
                    records.append(_payment_record(self, ledger, k, is_refund, paid, shift, bad))
        return records

    def _versions_between(
        self, table: str, start: datetime, end: datetime, as_of: datetime | None
    ) -> list[dict[str, Any]]:
        """The latest daily version per key among `table`'s versions with updated_at in [start, end) that
        exist at as_of. A version is what a day's partition holds, so a range over several days keeps the
        last day's version of a customer seen on more than one. Callers must not mutate the records."""
        if table not in VERSIONED_TABLES:
            raise ValueError(f"{table!r} is not versioned; expected one of {VERSIONED_TABLES}")
        now, low, high = _to_second(as_of), _to_second(start), _to_second(end)
        until = min(high, now + 1)
        latest: dict[int, Any] = {}
        for day in _days(_day_of(low), _day_of(until - 1)):
            day_start = (day - EPOCH).days * SECONDS_PER_DAY
            if table == "products":
                if low <= day_start + 300 < until:
                    latest.update(enumerate(self._catalog(day).records, 1))
                continue
            ids, seconds = self._activity(day)
            for customer_id, second in zip(ids, seconds, strict=True):
                if low <= day_start + second < until:
                    latest[customer_id] = (day, day_start + second)
        if table == "products":
            return [latest[key] for key in sorted(latest)]
        with gc_paused():
            return [_customer_version(self, customer_id, *latest[customer_id]) for customer_id in sorted(latest)]

    def _current_versions(self, table: str, start: datetime, end: datetime, as_of: datetime) -> list[dict[str, Any]]:
        """The current version of each key at as_of whose updated_at is in [start, end) (see
        current_versions_between). Customers cost one day of order draws (ledger or activity, cached) per
        day from `start` to as_of. Callers must not mutate the records."""
        if table not in VERSIONED_TABLES:
            raise ValueError(f"{table!r} is not versioned; expected one of {VERSIONED_TABLES}")
        now, low, high = _to_second(as_of), _to_second(start), _to_second(end)
        if table == "products":
            synced = (now - 300) // SECONDS_PER_DAY * SECONDS_PER_DAY + 300  # the latest 00:05 sync
            in_window = low <= synced < high and _day_of(synced) >= EPOCH
            return list(self._catalog(_day_of(synced)).records) if in_window else []
        found: dict[int, tuple[date, int]] = {}
        seen: set[int] = set()  # customers whose latest activity is already known
        day = _day_of(now)
        while day >= max(_day_of(low), EPOCH):
            day_start = (day - EPOCH).days * SECONDS_PER_DAY
            ids, seconds = self._activity(day, until=now - day_start)
            if day_start < high:
                for customer_id, second in zip(ids, seconds, strict=True):
                    if customer_id not in seen and low <= day_start + second < high:
                        found[customer_id] = (day, day_start + second)
            seen.update(ids)
            day -= timedelta(days=1)
        with gc_paused():
            return [_customer_version(self, customer_id, *found[customer_id]) for customer_id in sorted(found)]

    def _web_event_rows(self, day: date) -> list[tuple]:
        """The cached web events as tuples in WEB_EVENT_COLUMNS order. Callers must not mutate them."""
        return self._web_day(day).rows
