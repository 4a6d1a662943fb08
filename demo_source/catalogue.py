"""The shop's products: the fixed catalogue of PRODUCT_COUNT products (index == product_id), and each
day's catalog as the nightly inventory sync leaves it (prices moving in 45-day periods, stock, which
products are active and so sold and browsed that day).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date
from itertools import accumulate
from typing import TYPE_CHECKING, Any

from demo_source.randomness import _SALT_ACTIVE, _SALT_POPULARITY, _SALT_PRICE, _SALT_PRODUCT, _SALT_STOCK, _mix
from demo_source.timeline import EPOCH, _day_seconds
from demo_source.vocabulary import ADJECTIVES, CATEGORIES, COLOURS, PRODUCT_COUNT

if TYPE_CHECKING:
    from demo_source.days import _ShopDays


@dataclass(frozen=True, slots=True)
class _Product:
    sku: str
    product_name: str
    category: str
    base_price_cents: int
    price_phase: int
    active_phase: int
    popularity: int


def _build_catalogue() -> tuple[_Product, ...]:
    """The fixed part of the 500 products; index 0 is a placeholder so that index == product_id."""
    products = [_Product("", "", "", 0, 0, 0, 0)]
    for pid in range(1, PRODUCT_COUNT + 1):
        h = _mix(_SALT_PRODUCT, pid)
        category, (low, high), nouns = CATEGORIES[h % len(CATEGORIES)]
        h //= len(CATEGORIES)
        noun = nouns[h % len(nouns)]
        h //= len(nouns)
        adjective = ADJECTIVES[h % len(ADJECTIVES)]
        h //= len(ADJECTIVES)
        colour = COLOURS[h % len(COLOURS)]
        h //= len(COLOURS)
        # Log-uniform within the category's range, ending in 99 like a shop's price.
        price = int(low * math.exp((h % 10_000) / 10_000 * math.log(high / low)))
        h //= 10_000
        products.append(
            _Product(
                sku=f"{category[:3].upper()}-{pid:05d}",
                product_name=f"{adjective} {noun} ({colour})",
                category=category,
                base_price_cents=price // 100 * 100 + 99,
                price_phase=h % 45,
                active_phase=(h >> 8) % 60,
                # A squared hash gives a long tail: a few bestsellers, many slow movers.
                popularity=(_mix(_SALT_POPULARITY, pid) % 100 + 1) ** 2,
            )
        )
    return tuple(products)


_CATALOGUE = _build_catalogue()


@dataclass(slots=True)
class _Catalog:
    """The products partition of one day, plus what order lines need from it (clean prices)."""

    records: list[dict[str, Any]] = field(default_factory=list)
    prices: list[int] = field(default_factory=list)  # index == product_id
    active_ids: list[int] = field(default_factory=list)
    active_cum_weights: list[int] = field(default_factory=list)
    bad: dict[int, str] = field(default_factory=dict)


def _build_catalog(world: _ShopDays, day: date) -> _Catalog:
    di = (day - EPOCH).days
    # The nightly inventory sync touches every product at 00:05, changed or not.
    synced_at = _day_seconds(day)[5 * 60]
    catalog = _Catalog(prices=[0])
    active_weights = []
    for pid in range(1, PRODUCT_COUNT + 1):
        product = _CATALOGUE[pid]
        # Prices move by -15%..+15% in 45-day periods, phase-shifted per product.
        change = 85 + _mix(_SALT_PRICE, pid, (di + product.price_phase) // 45) % 31
        price = product.base_price_cents * change // 10_000 * 100 + 99
        stock = _mix(_SALT_STOCK, pid, di) % 420
        is_active = _mix(_SALT_ACTIVE, pid, (di + product.active_phase) // 60) % 40 != 0
        catalog.records.append(
            {
                "product_id": pid,
                "sku": product.sku,
                "product_name": product.product_name,
                "category": product.category,
                "unit_price_cents": price,
                "stock_quantity": stock - 20 if stock >= 20 else 0,  # about 5% sold out
                "is_active": is_active,
                "updated_at": synced_at,
            }
        )
        catalog.prices.append(price)
        if is_active:  # inactive products are neither sold nor browsed that day
            catalog.active_ids.append(pid)
            active_weights.append(product.popularity)
    catalog.active_cum_weights = list(accumulate(active_weights))
    positions = world._bad_positions("products", day, len(catalog.records))
    for index, (column, value) in positions.items():
        catalog.records[index][column] = value
        catalog.bad[catalog.records[index]["product_id"]] = column
    return catalog
