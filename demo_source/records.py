"""The records the world serves, built only for what is asked: orders in their status at an instant,
order items, payments (captures, failures, refunds), customer versions, and an order's lines.

Records are dicts of plain Python values (int, str, bool, None, naive-UTC `datetime`), a bad record with
its broken column set.
"""

from __future__ import annotations

import gc
from bisect import bisect_right
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from typing import TYPE_CHECKING, Any

from demo_source.customers import _customer_record
from demo_source.ledger import _CANCELLED, _Ledger
from demo_source.randomness import _SALT_LINE, _mix
from demo_source.timeline import EPOCH, _moment
from demo_source.vocabulary import (
    _DISCOUNT_PERCENTS,
    _ONE_TO_FIVE,
    _QUANTITY_CUM,
    CHANNELS,
    ORDER_STATUSES,
    PAYMENT_METHODS,
)

if TYPE_CHECKING:
    from demo_source.days import _ShopDays


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while building many records.

    The records hold no reference cycles, and the collections that hundreds of thousands of fresh
    containers trigger would otherwise rescan the growing heap again and again (measured: 20-40% of a
    scale-10 build).
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _order_record(ledger: _Ledger, k: int, state: tuple[int, int], shift: int) -> dict[str, Any]:
    status, second = state
    record = {
        "order_id": ledger.first_order_id + k,
        "customer_id": ledger.customer_ids[k],
        "order_status": ORDER_STATUSES[status],
        "channel": CHANNELS[ledger.channels[k]],
        "currency": "USD",
        "ordered_at": _moment(ledger.start + ledger.ordered[k]),
        "updated_at": _moment(ledger.start + second + shift),
    }
    bad = ledger.bad_orders.get(k)
    if bad is not None:
        record[bad[0]] = bad[1]
    return record


def _item_records(world: _ShopDays, ledger: _Ledger, k: int, shift: int) -> list[dict[str, Any]]:
    order_id = ledger.first_order_id + k
    ordered_at = _moment(ledger.start + ledger.ordered[k])
    updated_at = _moment(ledger.start + ledger.ordered[k] + shift) if shift else ordered_at
    position = ledger.item_starts[k]
    records = []
    for line, (product_id, quantity, price, discount) in enumerate(_lines(world, ledger, k), 1):
        record = {
            "order_item_id": order_id * 100 + line,
            "order_id": order_id,
            "product_id": product_id,
            "quantity": quantity,
            "unit_price_cents": price,
            "discount_cents": discount,
            "ordered_at": ordered_at,
            "updated_at": updated_at,
        }
        bad = ledger.bad_items.get(position + line - 1)
        if bad is not None:
            record[bad[0]] = bad[1]
        records.append(record)
    return records


def _payment_record(
    world: _ShopDays, ledger: _Ledger, k: int, is_refund: bool, paid: int, shift: int, bad: tuple[str, Any] | None
) -> dict[str, Any]:
    order_id = ledger.first_order_id + k
    status = "refunded" if is_refund else "failed" if ledger.outcomes[k] == _CANCELLED else "captured"
    record = {
        "payment_id": order_id * 10 + (2 if is_refund else 1),
        "order_id": order_id,
        "payment_method": PAYMENT_METHODS[ledger.methods[k]],
        "payment_status": status,
        "amount_cents": _total(world, ledger, k),
        "paid_at": _moment(ledger.start + paid),
        "updated_at": _moment(ledger.start + paid + shift),
    }
    if bad is not None:
        record[bad[0]] = bad[1]
    return record


def _customer_version(world: _ShopDays, customer_id: int, day: date, updated: int) -> dict[str, Any]:
    record = _customer_record(world, customer_id, (day - EPOCH).days, _moment(updated))
    bad = world._bad_customer_ids(day).get(customer_id)
    if bad is not None:
        record[bad[0]] = bad[1]
    return record


def _lines(world: _ShopDays, ledger: _Ledger, k: int) -> list[tuple[int, int, int, int]]:
    """(product_id, quantity, unit_price_cents, discount_cents) of each line of order k, clean.

    A stateless hash per (order, line), so one order's lines (and total) cost no other order's draws.
    Drawn with replacement, so now and then an order lists one product on two lines; the marts'
    distinct-order counts have to cope with that.
    """
    if ledger.pricing is None:
        catalog = world._catalog(ledger.day)
        ledger.pricing = (catalog.active_ids, catalog.active_cum_weights, catalog.prices)
    active_ids, cum_weights, prices = ledger.pricing
    weight = cum_weights[-1]
    order_id = ledger.first_order_id + k
    lines = []
    total = 0
    for line in range(1, ledger.item_starts[k + 1] - ledger.item_starts[k] + 1):
        h = _mix(_SALT_LINE, order_id, line)
        product_id = active_ids[bisect_right(cum_weights, (h & 0xFFFFFFFF) * weight >> 32)]
        quantity = _ONE_TO_FIVE[bisect_right(_QUANTITY_CUM, ((h >> 32) & 0xFF) * 100 >> 8)]
        price = prices[product_id]
        discount = 0
        if (h >> 40) & 0x3FF < 102:  # about 10% of lines
            discount = quantity * price * _DISCOUNT_PERCENTS[(h >> 50) & 3] // 100
        lines.append((product_id, quantity, price, discount))
        total += quantity * price - discount
    ledger.totals[k] = total
    return lines


def _total(world: _ShopDays, ledger: _Ledger, k: int) -> int:
    return ledger.totals[k] or sum(q * p - d for _, q, p, d in _lines(world, ledger, k))
