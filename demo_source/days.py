"""A shop world's days, each generated once and cached, which every accessor of `ShopWorld` reads.

This module owns a world's parameters (scale, daily volumes, bad-record rate), its seeded streams, which
records of a day are broken, and the per-day caches: ledgers, catalogs, customer activity, broken payments
and customers, and web events. A day's orders are kept as a compact ledger in a cache of many days, so
questions that span weeks need no records; records are built only for what is asked.
"""

from __future__ import annotations

import random
import threading
from array import array
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

from demo_source.catalogue import _build_catalog, _Catalog
from demo_source.customers import _signup_second
from demo_source.ledger import _INDEX_BITS, _INDEX_MASK, _PLACED, LIFECYCLE_DAYS, _build_ledger, _draw_orders, _Ledger
from demo_source.randomness import _seed
from demo_source.records import gc_paused
from demo_source.timeline import EPOCH, LAST_SECOND, SECONDS_PER_DAY
from demo_source.vocabulary import BAD_VALUES
from demo_source.web_events import _build_web_day, _WebDay

MAX_SCALE = 100.0


class _LRU:
    def __init__(self, maxsize: int) -> None:
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self._maxsize = maxsize

    def get(self, key: Any) -> Any:
        """The cached value or None, without building it."""
        return self._items.get(key)

    def get_or_build(self, key: Any, build: Callable[[], Any]) -> Any:
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        value = self._items[key] = build()
        if len(self._items) > self._maxsize:
            self._items.popitem(last=False)
        return value


class _ShopDays:
    """The parameters and the cached days of a world; `ShopWorld` adds the accessors. Thread-safe."""

    def __init__(self, scale: float = 1.0, bad_record_rate: float = 0.0) -> None:
        if not 0 < scale <= MAX_SCALE:
            raise ValueError(f"scale must be in (0, {MAX_SCALE:g}], got {scale!r}")
        if not 0 <= bad_record_rate <= 1:
            raise ValueError(f"bad_record_rate must be in [0, 1], got {bad_record_rate!r}")
        self.scale = float(scale)
        self.bad_record_rate = float(bad_record_rate)
        self.customers_per_day = max(1, round(150 * self.scale))
        self.orders_per_day = max(1, round(2000 * self.scale))
        self.web_events_per_day = max(1, round(50_000 * self.scale))
        # One re-entrant lock for all builds: they are CPU-bound under the GIL anyway, and serialising them
        # stops two server threads from generating the same day twice.
        self._lock = threading.RLock()
        # A 31-day change feed of orders reads 62 days of ledgers, and the refunds landing on a day need
        # the prices of the 30 days before it; a cache smaller than a request's sweep would miss every time.
        self._ledgers = _LRU(72)
        self._catalogs = _LRU(72)
        self._activities = _LRU(370)  # a current-state listing of customers reaches back up to 366 days
        self._bad_payments = _LRU(40)
        self._bad_customers = _LRU(40)
        self._web_days = _LRU(2)  # the big one: 500k events a day at scale 10

    def _rng(self, purpose: str, day: date) -> random.Random:
        return random.Random(_seed(purpose, day, self.scale))

    def _catalog(self, day: date) -> _Catalog:
        if day < EPOCH:
            return _Catalog()
        with self._lock, gc_paused():
            return self._catalogs.get_or_build(day, lambda: _build_catalog(self, day))

    def _ledger(self, day: date) -> _Ledger | None:
        if day < EPOCH:
            return None
        with self._lock, gc_paused():
            return self._ledgers.get_or_build(day, lambda: _build_ledger(self, day))

    def _activity(self, day: date, until: int = LAST_SECOND) -> tuple[array, array]:
        """Customers who signed up or ordered on `day` up to its second `until`, ascending, each with the
        second of their last activity then: the customers partition of the day, and the input of the
        current-state versions. Whole days are cached (cheaply when the day's ledger already is)."""
        if day < EPOCH or until < 0:
            return array("i"), array("i")
        if until >= LAST_SECOND:
            with self._lock:
                return self._activities.get_or_build(day, lambda: self._build_activity(day, LAST_SECOND))
        return self._build_activity(day, until)

    def _build_activity(self, day: date, until: int) -> tuple[array, array]:
        ledger = self._ledgers.get(day)
        ordered, customer_ids = (ledger.ordered, ledger.customer_ids) if ledger else _draw_orders(self, day)[1:]
        last: dict[int, int] = {}
        for second, customer_id in zip(ordered, customer_ids, strict=True):
            if second > until:
                break
            last[customer_id] = second  # orders come in time order: the last one wins
        first_new_id = (day - EPOCH).days * self.customers_per_day + 1
        for customer_id in range(first_new_id, first_new_id + self.customers_per_day):
            # A new customer's orders all follow the signup, so the signup only counts without orders.
            signed_up = _signup_second(customer_id)
            if signed_up <= until:
                last.setdefault(customer_id, signed_up)
        ids = sorted(last)
        return array("i", ids), array("i", [last[customer_id] for customer_id in ids])

    def _web_day(self, day: date) -> _WebDay:
        if day < EPOCH:
            return _WebDay()
        with self._lock, gc_paused():
            return self._web_days.get_or_build(day, lambda: _build_web_day(self, day))

    def _corrupted_indices(self, table: str, day: date, count: int) -> list[int]:
        """Which of a partition's `count` records to break: a deterministic sample of about rate * count."""
        if self.bad_record_rate == 0 or count == 0:
            return []
        # At least one, so that small demo days still exercise the quarantine path.
        k = min(count, max(1, round(self.bad_record_rate * count)))
        return sorted(self._rng(f"bad:{table}", day).sample(range(count), k))

    def _bad_positions(self, table: str, day: date, count: int) -> dict[int, tuple[str, Any]]:
        """Position in the day's final partition -> (column, value) of the records to break. Orders
        alternate between their two breakages so both quarantine rules get exercised every day."""
        variants = BAD_VALUES[table]
        return {
            index: variants[n % len(variants)] for n, index in enumerate(self._corrupted_indices(table, day, count))
        }

    def _payment_slots(self, day: date) -> list[tuple[int, _Ledger, int, bool, int]]:
        """The payments partition of `day` as it finally stands, by payment_id: (payment_id, ledger, order
        index, is a refund, paid second since the ledger's midnight). Refunds come from the orders of
        the LIFECYCLE_DAYS days before, captures and failures from the day's own orders."""
        slots = []
        for back in range(LIFECYCLE_DAYS, 0, -1):  # earlier orders first: their ids are lower
            ledger = self._ledger(day - timedelta(days=back))
            if ledger is None:
                continue
            first = bisect_left(ledger.refunds, back * SECONDS_PER_DAY << _INDEX_BITS)
            last = bisect_left(ledger.refunds, (back + 1) * SECONDS_PER_DAY << _INDEX_BITS)
            for k in sorted(packed & _INDEX_MASK for packed in ledger.refunds[first:last]):
                slots.append(((ledger.first_order_id + k) * 10 + 2, ledger, k, True, ledger.refunded[k]))
        ledger = self._ledger(day)
        if ledger is not None:
            for k, outcome in enumerate(ledger.outcomes):
                if outcome != _PLACED:
                    slots.append(((ledger.first_order_id + k) * 10 + 1, ledger, k, False, ledger.settled[k]))
        return slots

    def _bad_payment_ids(self, day: date) -> dict[int, tuple[str, Any]]:
        """payment_id -> (column, value) of the broken payments of `day`'s partition (by its final form, so
        a payment is broken or not whatever the clock)."""
        if self.bad_record_rate == 0:
            return {}

        def build() -> dict[int, tuple[str, Any]]:
            slots = self._payment_slots(day)
            return {slots[i][0]: bad for i, bad in self._bad_positions("payments", day, len(slots)).items()}

        with self._lock:
            return self._bad_payments.get_or_build(day, build)

    def _bad_customer_ids(self, day: date) -> dict[int, tuple[str, Any]]:
        """customer_id -> (column, value) of the broken versions in `day`'s customers partition."""
        if self.bad_record_rate == 0:
            return {}

        def build() -> dict[int, tuple[str, Any]]:
            ids = self._activity(day)[0]
            return {ids[i]: bad for i, bad in self._bad_positions("customers", day, len(ids)).items()}

        with self._lock:
            return self._bad_customers.get_or_build(day, build)
