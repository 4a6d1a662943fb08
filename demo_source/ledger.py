"""A day's orders as a compact ledger, and the life of an order (DATA_SPEC.md, "The life of an order").

Orders live on after their day: placed, paid, shipped, delivered, some refunded up to LIFECYCLE_DAYS
later, and some reach the source late. A day's orders are kept as a `_Ledger` (arrays of ordered second,
customer, outcome and transition times, about 40 bytes an order), so questions that span weeks (a change
feed, the refunds landing on a day, a customer's latest activity) need no records. This module owns the
ledger, how a day's orders are drawn into it, and when what a table holds stops changing (`settles_at`).
"""

from __future__ import annotations

import random
from array import array
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from itertools import accumulate
from typing import TYPE_CHECKING, Any

from demo_source.customers import _signup_second
from demo_source.randomness import _SALT_LIFECYCLE, _SALT_REFUND, _mix, _profile_second
from demo_source.timeline import EPOCH, LAST_SECOND, SECONDS_PER_DAY, to_naive_utc
from demo_source.vocabulary import (
    _CHANNEL_CUM,
    _ITEM_COUNT_CUM,
    _METHOD_CUM,
    _ONE_TO_FIVE,
    _STATUS_CUM,
    CHANNELS,
    ORDER_STATUSES,
    PAYMENT_METHODS,
)

if TYPE_CHECKING:
    from demo_source.days import _ShopDays

ORDER_ID_BLOCK = 10_000_000
NEW_CUSTOMER_ORDER_SHARE = 0.3

# The life of an order (DATA_SPEC.md): what the day's status draw makes of it, and the ranges, in seconds,
# its transition times are drawn from. Statuses are coded by their index in ORDER_STATUSES.
_PLACED, _PAID, _SHIPPED, _DELIVERED, _CANCELLED, _REFUNDED = range(len(ORDER_STATUSES))
_OUTCOME_OF_DRAW = (_PLACED, _DELIVERED, _DELIVERED, _DELIVERED, _CANCELLED, _REFUNDED)  # paid/shipped end delivered
PAYMENT_DELAY = (5, 120)  # ordered -> paid (or failed), clamped to the order's day like every payment
SHIPPING_DELAY = (6 * 3600, 3 * SECONDS_PER_DAY)  # paid -> shipped
DELIVERY_DELAY = (SECONDS_PER_DAY, 6 * SECONDS_PER_DAY)  # shipped -> delivered
REFUND_AFTER_DELIVERY = SECONDS_PER_DAY  # the earliest refund; the latest is LIFECYCLE_DAYS after ordered_at
LIFECYCLE_DAYS = 30  # no order changes later than this after its ordered_at
# How long after it happened a late order (with its items and payments) reaches the source
# (`Faults.late_arrival_rate` decides which orders are late).
LATE_ARRIVAL_DELAY = timedelta(days=1)
_DELAY_SECONDS = SECONDS_PER_DAY
# A ledger's change index packs (second since the ledger's midnight, status, order index) into one int.
_INDEX_BITS = 20  # orders per day stay under 2^18 even at MAX_SCALE
_INDEX_MASK = (1 << _INDEX_BITS) - 1
_TIME_SHIFT = _INDEX_BITS + 3


def settles_at(table: str, end: datetime, late_arrivals: bool) -> datetime:
    """From this instant on, what `table` holds for dates or update times before `end` no longer changes.

    By then every order ordered before `end` has finished its life (only orders change; items and
    payments exist from their time on) and, if some orders arrive late, every late arrival is in;
    before it, the same query can answer differently at different clocks.
    """
    settled = to_naive_utc(end) + (timedelta(days=LIFECYCLE_DAYS) if table == "orders" else timedelta(0))
    return settled + LATE_ARRIVAL_DELAY if late_arrivals else settled


@dataclass(slots=True)
class _Ledger:
    """One day's orders in compact form: everything lifecycle and customer questions need, no records.

    Order k (0-based) is order_id first_order_id + k. Times are seconds since the day's midnight and run
    past the day for later transitions; -1 marks a transition the order never makes. About 40 bytes an
    order (0.8 MB a day at scale 10), and 30 more once a change feed has asked for the change index.
    """

    day: date
    start: int  # the day's midnight in seconds since EPOCH_START
    first_order_id: int
    ordered: array  # ascending: order numbers follow the clock
    customer_ids: array
    outcomes: bytes  # the status each order ends in
    channels: bytes
    methods: bytes
    item_starts: array  # order k's items are positions item_starts[k] .. item_starts[k + 1] - 1 of the day's
    settled: array  # paid, or failed for an order that ends cancelled
    shipped: array
    delivered: array
    refunded: array
    refunds: array  # (refund second << _INDEX_BITS | k) of the refunded orders, ascending
    bad_orders: dict[int, tuple[str, Any]]  # k -> (column, value)
    bad_items: dict[int, tuple[str, Any]]  # item position -> (column, value)
    totals: array  # order totals in cents, filled in when first asked for (0: not yet)
    changes: array | None = None  # every transition, packed and ascending; built on first use
    pricing: tuple[list[int], list[int], list[int]] | None = None  # the day's active ids, weights, prices

    def __len__(self) -> int:
        return len(self.ordered)

    def state(self, k: int, second: int) -> tuple[int, int] | None:
        """(status, second it was reached) of order k at `second`; None before the order exists."""
        ordered = self.ordered[k]
        if second < ordered:
            return None
        outcome = self.outcomes[k]
        settled = self.settled[k]
        if outcome == _PLACED or second < settled:
            return _PLACED, ordered
        if outcome == _CANCELLED:
            return _CANCELLED, settled
        shipped = self.shipped[k]
        if second < shipped:
            return _PAID, settled
        delivered = self.delivered[k]
        if second < delivered:
            return _SHIPPED, shipped
        if outcome == _REFUNDED and second >= self.refunded[k]:
            return _REFUNDED, self.refunded[k]
        return _DELIVERED, delivered

    def transitions(self, k: int) -> list[tuple[int, int]]:
        """Every (status, second) of order k's life, in order."""
        life = [(_PLACED, self.ordered[k])]
        outcome = self.outcomes[k]
        if outcome == _CANCELLED:
            life.append((_CANCELLED, self.settled[k]))
        elif outcome != _PLACED:
            life += [(_PAID, self.settled[k]), (_SHIPPED, self.shipped[k]), (_DELIVERED, self.delivered[k])]
            if outcome == _REFUNDED:
                life.append((_REFUNDED, self.refunded[k]))
        return life

    def change_index(self) -> array:
        """(second << _TIME_SHIFT | status << _INDEX_BITS | k) for every transition of every order, ascending."""
        if self.changes is None:
            outcomes = self.outcomes
            packed = [second << _TIME_SHIFT | k for k, second in enumerate(self.ordered)]
            packed += [
                second << _TIME_SHIFT | (_CANCELLED if outcomes[k] == _CANCELLED else _PAID) << _INDEX_BITS | k
                for k, second in enumerate(self.settled)
                if second >= 0
            ]
            for status, seconds in ((_SHIPPED, self.shipped), (_DELIVERED, self.delivered), (_REFUNDED, self.refunded)):
                tag = status << _INDEX_BITS
                packed += [second << _TIME_SHIFT | tag | k for k, second in enumerate(seconds) if second >= 0]
            packed.sort()
            self.changes = array("q", packed)
        return self.changes


def _draw_orders(world: _ShopDays, day: date) -> tuple[random.Random, list[int], list[int]]:
    """Who ordered when on `day`: (the day's order stream, ordered seconds ascending, customer ids)."""
    di = (day - EPOCH).days
    rng = world._rng("orders", day)
    rand = rng.random
    per_day = world.customers_per_day
    first_new_id = di * per_day + 1
    signup_second = _signup_second
    who_when = []  # second << 32 | customer_id: ints sort several times faster than tuples
    for _ in range(world.orders_per_day):
        if first_new_id == 1 or rand() < NEW_CUSTOMER_ORDER_SHARE:
            customer_id = first_new_id + int(rand() * per_day)
            signed_up = signup_second(customer_id)
            second = signed_up + int(rand() * (SECONDS_PER_DAY - signed_up))
        else:
            customer_id = 1 + int(rand() * (first_new_id - 1))
            second = _profile_second(rand)
        who_when.append(second << 32 | customer_id)
    who_when.sort()  # order numbers follow the clock, like a database sequence
    return rng, [packed >> 32 for packed in who_when], [packed & 0xFFFFFFFF for packed in who_when]


def _build_ledger(world: _ShopDays, day: date) -> _Ledger:
    rng, ordered, customer_ids = _draw_orders(world, day)
    n = len(ordered)
    # The status draw of the day decides how each order's life ends; the times come from its id.
    outcomes = rng.choices(_OUTCOME_OF_DRAW, cum_weights=_STATUS_CUM, k=n)
    channels = rng.choices(range(len(CHANNELS)), cum_weights=_CHANNEL_CUM, k=n)
    methods = rng.choices(range(len(PAYMENT_METHODS)), cum_weights=_METHOD_CUM, k=n)
    item_counts = rng.choices(_ONE_TO_FIVE, cum_weights=_ITEM_COUNT_CUM, k=n)
    first_order_id = (day - EPOCH).days * ORDER_ID_BLOCK + 1
    settled, shipped, delivered, refunded = ([-1] * n for _ in range(4))
    refunds = []
    pay_low, pay_span = PAYMENT_DELAY[0], PAYMENT_DELAY[1] - PAYMENT_DELAY[0] + 1
    ship_low, ship_span = SHIPPING_DELAY[0], SHIPPING_DELAY[1] - SHIPPING_DELAY[0] + 1
    delivery_low, delivery_span = DELIVERY_DELAY[0], DELIVERY_DELAY[1] - DELIVERY_DELAY[0] + 1
    deadline = LIFECYCLE_DAYS * SECONDS_PER_DAY
    for k, outcome in enumerate(outcomes):
        if outcome == _PLACED:
            continue
        order_id = first_order_id + k
        h = _mix(_SALT_LIFECYCLE, order_id)  # 16 bits to pay, 20 to ship, 20 to deliver
        settled[k] = paid = min(ordered[k] + pay_low + (h & 0xFFFF) % pay_span, LAST_SECOND)
        if outcome == _CANCELLED:
            continue
        shipped[k] = ship = paid + ship_low + (((h >> 16) & 0xFFFFF) * ship_span >> 20)
        delivered[k] = delivery = ship + delivery_low + (((h >> 36) & 0xFFFFF) * delivery_span >> 20)
        if outcome == _REFUNDED:
            earliest, latest = delivery + REFUND_AFTER_DELIVERY, ordered[k] + deadline
            refunded[k] = refund = earliest + _mix(_SALT_REFUND, order_id) % (latest - earliest + 1)
            refunds.append(refund << _INDEX_BITS | k)
    refunds.sort()
    item_starts = array("i", accumulate(item_counts, initial=0))
    return _Ledger(
        day=day,
        start=(day - EPOCH).days * SECONDS_PER_DAY,
        first_order_id=first_order_id,
        ordered=array("i", ordered),
        customer_ids=array("i", customer_ids),
        outcomes=bytes(outcomes),
        channels=bytes(channels),
        methods=bytes(methods),
        item_starts=item_starts,
        settled=array("i", settled),
        shipped=array("i", shipped),
        delivered=array("i", delivered),
        refunded=array("i", refunded),
        refunds=array("q", refunds),
        bad_orders=world._bad_positions("orders", day, n),
        bad_items=world._bad_positions("order_items", day, item_starts[-1]),
        totals=array("q", bytes(8 * n)),
    )
