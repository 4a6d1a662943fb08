"""The demo shop's world: a deterministic generator of every record the shop ever produced.

This module owns the *data* of the demo source, nothing about transport. Given a scale and a bad-record
rate, `ShopWorld` regenerates any day's customers, products, orders, order items, payments and web events
identically in any process: every random draw comes from a `random.Random` seeded by a SHA-256 hash of
(purpose, date, scale), and every per-entity attribute (a customer's tier, a product's price) is a
stateless hash of (entity, day). The rules are the shared data spec's (DATA_SPEC.md, "The demo world" and
"Bad-record injection"); `ground_truth` computes the daily marts straight from the generated records so the
pipeline's output can be checked against them.

Records are dicts of plain Python values (int, str, bool, None, naive-UTC `datetime`) sorted by primary
key. Public methods hand out copies; the HTTP server and the landing writer read the cached originals
through the package-private `_rows`, `_versions_between` and `_web_event_rows`.
"""

from __future__ import annotations

import gc
import hashlib
import math
import random
import threading
from bisect import bisect_right
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from itertools import accumulate
from typing import Any

EPOCH = date(2020, 1, 1)
MAX_SCALE = 100.0
PRODUCT_COUNT = 500
SECONDS_PER_DAY = 86_400
LAST_SECOND = SECONDS_PER_DAY - 1
ORDER_ID_BLOCK = 10_000_000

TABLES = ("customers", "products", "orders", "order_items", "payments", "web_events")
PRIMARY_KEYS = {
    "customers": "customer_id",
    "products": "product_id",
    "orders": "order_id",
    "order_items": "order_item_id",
    "payments": "payment_id",
    "web_events": "event_id",
}
DAILY_TABLES = ("orders", "order_items", "payments")  # partitioned by the date of ordered_at / paid_at
VERSIONED_TABLES = ("customers", "products")  # partitioned by the date of updated_at
WEB_EVENT_COLUMNS = (
    "event_id",
    "session_id",
    "customer_id",
    "event_type",
    "product_id",
    "page_path",
    "occurred_at",
)

BILLABLE_STATUSES = frozenset({"paid", "shipped", "delivered", "refunded"})
FUNNEL_STEPS = {  # web_funnel column -> event type
    "product_view_sessions": "product_view",
    "add_to_cart_sessions": "add_to_cart",
    "checkout_sessions": "checkout_started",
    "purchase_sessions": "purchase",
}

# What a corrupted record looks like, per table. Orders alternate between their two breakages so both
# quarantine rules get exercised every day.
BAD_VALUES: dict[str, tuple[tuple[str, Any], ...]] = {
    "customers": (("email", "not-an-email"),),
    "products": (("unit_price_cents", -1),),
    "orders": (("order_status", "unknown"), ("customer_id", None)),
    "order_items": (("quantity", 0),),
    "payments": (("amount_cents", -100),),
    "web_events": (("event_type", "bogus"),),
}

NEW_CUSTOMER_ORDER_SHARE = 0.3
# Signups stop an hour before midnight so a new customer's same-day orders have room after the signup.
SIGNUP_WINDOW_SECONDS = 23 * 3600

ORDER_STATUSES = ("placed", "paid", "shipped", "delivered", "cancelled", "refunded")
_STATUS_CUM = list(accumulate((5, 15, 25, 40, 8, 7)))
CHANNELS = ("web", "mobile", "marketplace")
_CHANNEL_CUM = list(accumulate((55, 35, 10)))
_ONE_TO_FIVE = (1, 2, 3, 4, 5)
_ITEM_COUNT_CUM = list(accumulate((30, 25, 20, 15, 10)))  # mean 2.5 items per order
_QUANTITY_CUM = list(accumulate((70, 20, 7, 2, 1)))
_DISCOUNT_PERCENTS = (5, 10, 15, 20)
PAYMENT_METHODS = ("card", "paypal", "bank_transfer", "gift_card")
_METHOD_CUM = list(accumulate((60, 25, 10, 5)))
LOYALTY_TIERS = ("bronze", "silver", "gold", "platinum")
_TIER_CUM = list(accumulate((50, 30, 15, 5)))

# Traffic by UTC hour: quiet nights, busy evenings. Stored as a 1000-entry quantile table so drawing an
# hour costs one random() and one index instead of a choices() call.
_HOUR_WEIGHTS = (2, 1, 1, 1, 1, 2, 3, 5, 6, 7, 7, 8, 8, 8, 7, 7, 8, 9, 10, 10, 9, 7, 5, 3)
_HOUR_TABLE = tuple(
    bisect_right(list(accumulate(_HOUR_WEIGHTS)), (q + 0.5) * sum(_HOUR_WEIGHTS) / 1000) for q in range(1000)
)

# fmt: off
# Plain ASCII without spaces: emails are built from them.
FIRST_NAMES = (
    "Ada", "Ben", "Chloe", "David", "Elena", "Felix", "Grace", "Hugo", "Iris", "Jonas", "Kara", "Liam",
    "Maya", "Noah", "Olivia", "Paul", "Quinn", "Rosa", "Sam", "Tara", "Umar", "Vera", "Will", "Xena", "Yusuf",
    "Zoe", "Anna", "Lukas", "Sofia", "Mateo", "Emma", "Leon", "Mia", "Oscar", "Lena", "Hannah", "Ivan",
    "Nora",
)
LAST_NAMES = (
    "Smith", "Mueller", "Garcia", "Rossi", "Martin", "Novak", "Jansen", "Berg", "Kowalski", "Dubois", "Brown",
    "Schmidt", "Lopez", "Bianchi", "Bernard", "Horvat", "Visser", "Lind", "Nowak", "Moreau", "Taylor",
    "Fischer", "Perez", "Romano", "Petit", "Wright", "Weber", "Sanchez", "Ricci", "Laurent",
)
ADJECTIVES = (
    "Classic", "Urban", "Everyday", "Premium", "Compact", "Vintage", "Essential", "Deluxe", "Lightweight",
    "Organic",
)
# fmt: on
COUNTRIES: tuple[tuple[str, int, tuple[str, ...]], ...] = (  # (ISO-2, weight, cities)
    ("US", 30, ("New York", "Chicago", "Austin", "Seattle", "Denver", "Boston")),
    ("DE", 15, ("Berlin", "Hamburg", "Munich", "Cologne", "Leipzig")),
    ("GB", 12, ("London", "Manchester", "Bristol", "Leeds", "Glasgow")),
    ("FR", 10, ("Paris", "Lyon", "Marseille", "Toulouse", "Nantes")),
    ("ES", 7, ("Madrid", "Barcelona", "Valencia", "Seville")),
    ("NL", 6, ("Amsterdam", "Rotterdam", "Utrecht", "Eindhoven")),
    ("IT", 6, ("Rome", "Milan", "Turin", "Naples")),
    ("PL", 5, ("Warsaw", "Krakow", "Gdansk", "Wroclaw")),
    ("CA", 5, ("Toronto", "Vancouver", "Montreal", "Calgary")),
    ("SE", 4, ("Stockholm", "Gothenburg", "Malmo")),
)
_COUNTRY_POOL = tuple(i for i, (_, weight, _) in enumerate(COUNTRIES) for _ in range(weight))
EMAIL_DOMAINS = ("example.com", "mail.example.org", "inbox.example.net", "post.example.de")

CATEGORIES: tuple[tuple[str, tuple[int, int], tuple[str, ...]], ...] = (  # (name, price range, nouns)
    ("apparel", (1_500, 12_000), ("T-Shirt", "Hoodie", "Jacket", "Jeans", "Dress", "Sweater")),
    ("footwear", (3_000, 18_000), ("Sneakers", "Boots", "Sandals", "Loafers")),
    ("accessories", (900, 25_000), ("Backpack", "Wallet", "Belt", "Sunglasses", "Watch")),
    ("home", (1_200, 15_000), ("Throw Pillow", "Blanket", "Lamp", "Vase", "Candle")),
    ("kitchen", (800, 20_000), ("Chef Knife", "Frying Pan", "Coffee Grinder", "Teapot", "Cutting Board")),
    ("electronics", (1_500, 40_000), ("Headphones", "Speaker", "Charger", "Keyboard", "Webcam")),
    ("beauty", (400, 9_000), ("Face Cream", "Shampoo", "Perfume", "Lip Balm")),
    ("outdoors", (1_000, 30_000), ("Tent", "Sleeping Bag", "Water Bottle", "Trekking Poles")),
)
COLOURS = ("Black", "White", "Navy", "Olive", "Sand", "Red", "Grey", "Teal")

# Web-event steps as shared (event_type, product_id, page_path) tuples, indexed by product_id where needed,
# so a day's half million events allocate no per-step objects.
_LANDING_PAGES = ("/", "/", "/", "/search", "/deals", "/new-arrivals") + tuple(
    f"/category/{name}" for name, _, _ in CATEGORIES
)
_PAGE_STEPS = tuple(("page_view", None, path) for path in _LANDING_PAGES)
_VIEW_STEPS = tuple(("product_view", pid, f"/products/{pid}") for pid in range(PRODUCT_COUNT + 1))
_CART_STEPS = tuple(("add_to_cart", pid, f"/products/{pid}") for pid in range(PRODUCT_COUNT + 1))
_CHECKOUT_STEP = ("checkout_started", None, "/checkout")
_PURCHASE_STEP = ("purchase", None, "/checkout/complete")
# Session sort keys pack (start second < 2^17, generation index < 2^22) exactly into a double's 53 bits,
# and float keys take CPython's fastest sort path. Even scale 100 stays under 1.5M sessions a day.
_START_KEY = float(1 << 22)
_START_INDEX_MASK = (1 << 22) - 1

# Salts keep the stateless hashes of different attributes independent of each other.
_SALT_CUSTOMER, _SALT_SIGNUP, _SALT_CITY, _SALT_TIER, _SALT_EMAIL, _SALT_OPT_IN = range(1, 7)
_SALT_PRODUCT, _SALT_PRICE, _SALT_STOCK, _SALT_ACTIVE, _SALT_POPULARITY = range(11, 16)
_M64 = (1 << 64) - 1


def _mix(salt: int, entity: int, period: int = 0) -> int:
    """A stateless 64-bit hash of small non-negative ints, stable across processes (unlike hash()).

    A weighted sum with odd 64-bit constants (in practice distinct for distinct small inputs) through the
    splitmix64 finaliser, written out flat because it runs about a hundred thousand times per day at
    scale 10.
    """
    h = (salt * 0x9E3779B97F4A7C15 + entity * 0xD6E8FEB86659FD93 + period * 0xCA5A826395121157) & _M64
    h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & _M64
    return h ^ (h >> 31)


def _seed(purpose: str, day: date, scale: float) -> int:
    digest = hashlib.sha256(f"{purpose}|{day.isoformat()}|{scale:.6f}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _profile_second(rand: Callable[[], float]) -> int:
    """A second of the day drawn from the hourly traffic profile."""
    return _HOUR_TABLE[int(rand() * 1000)] * 3600 + int(rand() * 3600)


def _endless_choices(rng: random.Random, population: list[int], cum_weights: list[int]) -> Iterator[int]:
    """Weighted draws in bulk: one choices() call per 4096 draws instead of one per draw."""
    while True:
        yield from rng.choices(population, cum_weights=cum_weights, k=4096)


class _DaySeconds(dict):
    """Second of a day -> datetime, built on first use and then shared by all records of that day.

    A dict with __missing__ keeps lookups at C speed while small scales only pay for the seconds they use.
    """

    __slots__ = ("start",)

    def __init__(self, day: date) -> None:
        super().__init__()
        self.start = datetime(day.year, day.month, day.day)

    def __missing__(self, second: int) -> datetime:
        moment = self[second] = self.start + timedelta(seconds=second)
        return moment


@lru_cache(maxsize=8)
def _day_seconds(day: date) -> _DaySeconds:
    return _DaySeconds(day)


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


def to_naive_utc(moment: datetime) -> datetime:
    """Aware datetimes converted to naive UTC; naive ones are taken to be UTC already."""
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)


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
    """The products partition of one day, plus what order generation needs from it (clean prices)."""

    records: list[dict[str, Any]] = field(default_factory=list)
    prices: list[int] = field(default_factory=list)  # index == product_id
    active_ids: list[int] = field(default_factory=list)
    active_cum_weights: list[int] = field(default_factory=list)
    bad: dict[int, str] = field(default_factory=dict)


@dataclass(slots=True)
class _Commerce:
    """One day's orders, items, payments and customers partition, as served (bad records applied)."""

    orders: list[dict[str, Any]] = field(default_factory=list)
    order_items: list[dict[str, Any]] = field(default_factory=list)
    payments: list[dict[str, Any]] = field(default_factory=list)
    customers: list[dict[str, Any]] = field(default_factory=list)
    # The clean facts web events are built from: (ordered second, customer_id, product ids) per order.
    purchases: list[tuple[int, int, list[int]]] = field(default_factory=list)
    bad: dict[str, dict[int, str]] = field(default_factory=lambda: {t: {} for t in TABLES})


@dataclass(slots=True)
class _WebDay:
    rows: list[tuple] = field(default_factory=list)  # WEB_EVENT_COLUMNS order, sorted by event_id
    bad: dict[str, str] = field(default_factory=dict)


class _LRU:
    def __init__(self, maxsize: int) -> None:
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self._maxsize = maxsize

    def get_or_build(self, key: Any, build: Callable[[], Any]) -> Any:
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        value = self._items[key] = build()
        if len(self._items) > self._maxsize:
            self._items.popitem(last=False)
        return value


class ShopWorld:
    """Deterministic generator of the demo shop's records (see the module docstring and DATA_SPEC.md).

    `scale` multiplies the daily volumes (at 1.0: 150 signups, 2000 orders, about 50k web events);
    `bad_record_rate` is the share of each table's daily records that get one rule-breaking column.
    The world starts at EPOCH (2020-01-01); earlier days are empty. Thread-safe.
    """

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
        self._catalogs = _LRU(16)
        self._commerce_days = _LRU(8)
        self._web_days = _LRU(2)  # the big one: 500k events a day at scale 10

    def __repr__(self) -> str:
        return f"ShopWorld(scale={self.scale:g}, bad_record_rate={self.bad_record_rate:g})"

    # ------------------------------------------------------------------------------------ public API

    def customers_updated_between(self, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Customers whose updated_at is in [start, end), one (the latest) version per customer."""
        return [dict(r) for r in self._versions_between("customers", start, end)]

    def products_updated_between(self, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Products whose updated_at is in [start, end), one (the latest) version per product."""
        return [dict(r) for r in self._versions_between("products", start, end)]

    def orders_on(self, day: date) -> list[dict[str, Any]]:
        return [dict(r) for r in self._rows("orders", day)]

    def order_items_on(self, day: date) -> list[dict[str, Any]]:
        return [dict(r) for r in self._rows("order_items", day)]

    def payments_on(self, day: date) -> list[dict[str, Any]]:
        return [dict(r) for r in self._rows("payments", day)]

    def web_events_on(self, day: date) -> list[dict[str, Any]]:
        return [dict(zip(WEB_EVENT_COLUMNS, row, strict=True)) for row in self._web_event_rows(day)]

    def bad_records(self, table: str, day: date) -> dict[Any, str]:
        """Primary key -> broken column, for every corrupted record in `table`'s partition of `day`."""
        if table not in TABLES:
            raise ValueError(f"unknown table {table!r}; expected one of {', '.join(TABLES)}")
        if table == "products":
            return dict(self._catalog(day).bad)
        if table == "web_events":
            return dict(self._web_day(day).bad)
        return dict(self._commerce(day).bad[table])

    def ground_truth(self, day: date) -> dict[str, int]:
        """The daily_revenue and web_funnel figures of `day` by DATA_SPEC.md's definitions, money in cents.

        Computed from the records exactly as served, so it describes a clean day only at bad_record_rate 0.
        """
        orders = self._rows("orders", day)
        order_totals: Counter[int] = Counter()
        order_quantities: Counter[int] = Counter()
        for item in self._rows("order_items", day):
            quantity = item["quantity"]
            order_totals[item["order_id"]] += quantity * item["unit_price_cents"] - item["discount_cents"]
            order_quantities[item["order_id"]] += quantity
        billable = [o["order_id"] for o in orders if o["order_status"] in BILLABLE_STATUSES]
        gross = sum(order_totals[order_id] for order_id in billable)
        refunded = sum(order_totals[o["order_id"]] for o in orders if o["order_status"] == "refunded")

        events = self._web_event_rows(day)
        sessions_by_type: dict[str, set[str]] = {}
        for _, session_id, _, event_type, _, _, _ in events:
            sessions_by_type.setdefault(event_type, set()).add(session_id)
        return {
            "orders_count": len(orders),
            "billable_orders_count": len(billable),
            "items_sold": sum(order_quantities[order_id] for order_id in billable),
            "gross_revenue_cents": gross,
            "refunded_revenue_cents": refunded,
            "net_revenue_cents": gross - refunded,
            "customers_count": len({o["customer_id"] for o in orders if o["customer_id"] is not None}),
            "sessions": len({row[1] for row in events}),
            **{column: len(sessions_by_type.get(t, ())) for column, t in FUNNEL_STEPS.items()},
            "events": len(events),
        }

    def record_counts(self, day: date) -> dict[str, int]:
        """Rows per table in the partitions of `day` (customers, products: the versions updated that day)."""
        return {
            "customers": len(self._commerce(day).customers),
            "products": len(self._catalog(day).records),
            **{table: len(self._rows(table, day)) for table in DAILY_TABLES},
            "web_events": len(self._web_event_rows(day)),
        }

    # ----------------------------------------------------------------- package-private and uncopied

    def _rows(self, table: str, day: date) -> list[dict[str, Any]]:
        """The cached records of a date-partitioned table. Callers must not mutate them."""
        if table not in DAILY_TABLES:
            raise ValueError(f"{table!r} is not partitioned by date; expected one of {DAILY_TABLES}")
        return getattr(self._commerce(day), table)

    def _versions_between(self, table: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """The latest version per key among `table`'s versions with updated_at in [start, end).

        A version is what a day's partition holds, so a range over several days keeps the last day's
        version of a customer seen on more than one. Callers must not mutate the records.
        """
        if table not in VERSIONED_TABLES:
            raise ValueError(f"{table!r} is not versioned; expected one of {VERSIONED_TABLES}")
        start, end = to_naive_utc(start), to_naive_utc(end)
        key = PRIMARY_KEYS[table]
        latest: dict[int, dict[str, Any]] = {}
        day = max(start.date(), EPOCH)
        while start < end and day <= (end - timedelta(microseconds=1)).date():
            partition = self._commerce(day).customers if table == "customers" else self._catalog(day).records
            for record in partition:
                if start <= record["updated_at"] < end:
                    latest[record[key]] = record
            day += timedelta(days=1)
        return [latest[k] for k in sorted(latest)]

    def _web_event_rows(self, day: date) -> list[tuple]:
        """The cached web events as tuples in WEB_EVENT_COLUMNS order. Callers must not mutate them."""
        return self._web_day(day).rows

    # -------------------------------------------------------------------------------- generation

    def _rng(self, purpose: str, day: date) -> random.Random:
        return random.Random(_seed(purpose, day, self.scale))

    def _catalog(self, day: date) -> _Catalog:
        if day < EPOCH:
            return _Catalog()
        with self._lock, gc_paused():
            return self._catalogs.get_or_build(day, lambda: self._build_catalog(day))

    def _commerce(self, day: date) -> _Commerce:
        if day < EPOCH:
            return _Commerce()
        with self._lock, gc_paused():
            return self._commerce_days.get_or_build(day, lambda: self._build_commerce(day))

    def _web_day(self, day: date) -> _WebDay:
        if day < EPOCH:
            return _WebDay()
        with self._lock, gc_paused():
            return self._web_days.get_or_build(day, lambda: self._build_web_day(day))

    def _corrupted_indices(self, table: str, day: date, count: int) -> list[int]:
        """Which of a partition's `count` records to break: a deterministic sample of about rate * count."""
        if self.bad_record_rate == 0 or count == 0:
            return []
        # At least one, so that small demo days still exercise the quarantine path.
        k = min(count, max(1, round(self.bad_record_rate * count)))
        return sorted(self._rng(f"bad:{table}", day).sample(range(count), k))

    def _corrupt(self, table: str, day: date, records: list[dict[str, Any]]) -> dict[int, str]:
        key = PRIMARY_KEYS[table]
        variants = BAD_VALUES[table]
        bad = {}
        for n, index in enumerate(self._corrupted_indices(table, day, len(records))):
            column, value = variants[n % len(variants)]
            records[index][column] = value
            bad[records[index][key]] = column
        return bad

    def _build_catalog(self, day: date) -> _Catalog:
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
        catalog.bad = self._corrupt("products", day, catalog.records)
        return catalog

    def _signup_second(self, customer_id: int) -> int:
        return _mix(_SALT_SIGNUP, customer_id) % SIGNUP_WINDOW_SECONDS

    def _customer_record(self, customer_id: int, di: int, updated_at: datetime) -> dict[str, Any]:
        """A customer's attributes as of day index `di`: a stateless function of (customer, day)."""
        h = _mix(_SALT_CUSTOMER, customer_id)  # 64 bits for the name, the country and the phases below
        first = FIRST_NAMES[h % len(FIRST_NAMES)]
        h //= len(FIRST_NAMES)
        last = LAST_NAMES[h % len(LAST_NAMES)]
        h //= len(LAST_NAMES)
        country, _, cities = COUNTRIES[_COUNTRY_POOL[h % len(_COUNTRY_POOL)]]
        h //= len(_COUNTRY_POOL)
        # Each attribute changes in its own period, phase-shifted per customer, so on any day a few
        # customers differ from their previous version: the input the SCD2 snapshot exists for.
        city_period = (di + h % 365) // 365
        tier_period = (di + (h >> 9) % 90) // 90
        email_period = (di + (h >> 16) % 400) // 400
        opt_in_period = (di + (h >> 25) % 120) // 120
        email_hash = _mix(_SALT_EMAIL, customer_id, email_period)
        local = f"{first}.{last}" if email_hash % 2 else first[0] + last
        domain = EMAIL_DOMAINS[(email_hash >> 1) % len(EMAIL_DOMAINS)]
        tier_draw = _mix(_SALT_TIER, customer_id, tier_period) % _TIER_CUM[-1]
        signup_day_index = (customer_id - 1) // self.customers_per_day
        return {
            "customer_id": customer_id,
            "email": f"{local.lower()}.{customer_id}@{domain}",
            "full_name": f"{first} {last}",
            "country": country,
            "city": cities[_mix(_SALT_CITY, customer_id, city_period) % len(cities)],
            "loyalty_tier": LOYALTY_TIERS[bisect_right(_TIER_CUM, tier_draw)],
            "marketing_opt_in": _mix(_SALT_OPT_IN, customer_id, opt_in_period) % 100 < 40,
            "signup_at": datetime(2020, 1, 1) + timedelta(signup_day_index, self._signup_second(customer_id)),
            "updated_at": updated_at,
        }

    def _build_commerce(self, day: date) -> _Commerce:
        di = (day - EPOCH).days
        catalog = self._catalog(day)
        seconds = _day_seconds(day)
        rng = self._rng("orders", day)
        rand = rng.random
        per_day = self.customers_per_day
        first_new_id = di * per_day + 1
        n_orders = self.orders_per_day

        who_when = []
        for _ in range(n_orders):
            if first_new_id == 1 or rand() < NEW_CUSTOMER_ORDER_SHARE:
                customer_id = first_new_id + int(rand() * per_day)
                signed_up = self._signup_second(customer_id)
                second = signed_up + int(rand() * (SECONDS_PER_DAY - signed_up))
            else:
                customer_id = 1 + int(rand() * (first_new_id - 1))
                second = _profile_second(rand)
            who_when.append((second, customer_id))
        who_when.sort()  # order numbers follow the clock, like a database sequence

        statuses = rng.choices(ORDER_STATUSES, cum_weights=_STATUS_CUM, k=n_orders)
        channels = rng.choices(CHANNELS, cum_weights=_CHANNEL_CUM, k=n_orders)
        methods = rng.choices(PAYMENT_METHODS, cum_weights=_METHOD_CUM, k=n_orders)
        item_counts = rng.choices(_ONE_TO_FIVE, cum_weights=_ITEM_COUNT_CUM, k=n_orders)
        n_items = sum(item_counts)
        # Drawn with replacement, so now and then an order lists one product on two lines; the marts'
        # distinct-order counts have to cope with that.
        product_ids = rng.choices(catalog.active_ids, cum_weights=catalog.active_cum_weights, k=n_items)
        quantities = rng.choices(_ONE_TO_FIVE, cum_weights=_QUANTITY_CUM, k=n_items)
        prices = catalog.prices

        day_data = _Commerce()
        orders, items, payments = day_data.orders, day_data.order_items, day_data.payments
        last_activity: dict[int, int] = {}
        first_order_id = di * ORDER_ID_BLOCK + 1
        j = 0
        for k, (second, customer_id) in enumerate(who_when):
            order_id = first_order_id + k
            status = statuses[k]
            ordered_at = seconds[second]
            orders.append(
                {
                    "order_id": order_id,
                    "customer_id": customer_id,
                    "order_status": status,
                    "channel": channels[k],
                    "currency": "USD",
                    "ordered_at": ordered_at,
                    "updated_at": seconds[min(second + 60 + int(rand() * 840), LAST_SECOND)],
                }
            )
            order_pids = product_ids[j : j + item_counts[k]]
            total = 0
            for line, pid in enumerate(order_pids, 1):
                quantity = quantities[j]
                price = prices[pid]
                j += 1
                discount = 0
                if rand() < 0.1:
                    discount = quantity * price * _DISCOUNT_PERCENTS[int(rand() * 4)] // 100
                total += quantity * price - discount
                items.append(
                    {
                        "order_item_id": order_id * 100 + line,
                        "order_id": order_id,
                        "product_id": pid,
                        "quantity": quantity,
                        "unit_price_cents": price,
                        "discount_cents": discount,
                        "ordered_at": ordered_at,
                        "updated_at": ordered_at,
                    }
                )
            if status != "placed":
                paid_second = min(second + 5 + int(rand() * 115), LAST_SECOND)
                payments.append(
                    {
                        "payment_id": order_id * 10 + 1,
                        "order_id": order_id,
                        "payment_method": methods[k],
                        "payment_status": "failed" if status == "cancelled" else "captured",
                        "amount_cents": total,
                        "paid_at": seconds[paid_second],
                        "updated_at": seconds[paid_second],
                    }
                )
                if status == "refunded":
                    # Refunds come hours later but, per the spec, still on the order's UTC day.
                    refunded_at = seconds[min(paid_second + 3600 + int(rand() * 14_400), LAST_SECOND)]
                    payments.append(
                        {
                            "payment_id": order_id * 10 + 2,
                            "order_id": order_id,
                            "payment_method": methods[k],
                            "payment_status": "refunded",
                            "amount_cents": total,
                            "paid_at": refunded_at,
                            "updated_at": refunded_at,
                        }
                    )
            last_activity[customer_id] = second  # orders come in time order: the last one wins
            day_data.purchases.append((second, customer_id, order_pids))

        for customer_id in range(first_new_id, first_new_id + per_day):
            # A new customer's orders all follow the signup, so the signup only counts without orders.
            last_activity.setdefault(customer_id, self._signup_second(customer_id))
        day_data.customers = [
            self._customer_record(customer_id, di, seconds[last_activity[customer_id]])
            for customer_id in sorted(last_activity)
        ]
        for table in ("customers", *DAILY_TABLES):
            day_data.bad[table] = self._corrupt(table, day, getattr(day_data, table))
        return day_data

    def _build_web_day(self, day: date) -> _WebDay:
        commerce = self._commerce(day)
        catalog = self._catalog(day)
        seconds = _day_seconds(day)
        rng = self._rng("web_events", day)
        rand = rng.random
        gap = rng.getrandbits  # 5 + gap(7): 5..132 seconds between a session's steps
        next_product = _endless_choices(rng, catalog.active_ids, catalog.active_cum_weights).__next__
        n_pages = len(_PAGE_STEPS)

        # A session is a list of shared steps plus their seconds. Sessions are numbered by start time and
        # events by session, then step: ids roughly follow the clock while a session's events stay
        # together, which is far cheaper to assemble than a global per-event sort.
        session_steps: list[list[tuple]] = []
        session_seconds: list[list[int]] = []
        session_customers: list[int | None] = []
        start_keys: list[float] = []
        n_events = 0

        for purchase_second, customer_id, order_pids in commerce.purchases:
            steps = [_PAGE_STEPS[int(rand() * n_pages)]]
            if rand() < 0.3:  # a look at something they did not buy
                steps.append(_VIEW_STEPS[next_product()])
            steps += [_VIEW_STEPS[pid] for pid in order_pids]
            steps += [_CART_STEPS[pid] for pid in order_pids]
            steps += (_CHECKOUT_STEP, _PURCHASE_STEP)
            # The purchase happens at the order's ordered_at; earlier steps count back from it and pile up
            # at midnight rather than spill into the previous day.
            second = purchase_second
            times = [second]
            for _ in range(len(steps) - 1):
                second -= 5 + gap(7)
                times.append(second if second > 0 else 0)
            times.reverse()
            start_keys.append(times[0] * _START_KEY + len(session_steps))
            session_steps.append(steps)
            session_seconds.append(times)
            session_customers.append(customer_id)
            n_events += len(steps)

        while n_events < self.web_events_per_day:
            steps = [_PAGE_STEPS[int(rand() * n_pages)]]
            if rand() < 0.35:
                steps.append(_PAGE_STEPS[int(rand() * n_pages)])
            depth = rand()  # 40% leave after browsing pages, 35% after viewing products, 15% after the cart
            if depth >= 0.4:
                steps.append(_VIEW_STEPS[next_product()])
                if rand() < 0.4:
                    steps.append(_VIEW_STEPS[next_product()])
                if depth >= 0.75:
                    steps.append(_CART_STEPS[steps[-1][1]])
                    if depth >= 0.9:
                        steps.append(_CHECKOUT_STEP)
            second = _profile_second(rand)
            times = [second]
            for _ in range(len(steps) - 1):
                second += 5 + gap(7)
                times.append(second if second < LAST_SECOND else LAST_SECOND)
            start_keys.append(times[0] * _START_KEY + len(session_steps))
            session_steps.append(steps)
            session_seconds.append(times)
            session_customers.append(None)  # browsing without logging in
            n_events += len(steps)

        start_keys.sort()
        event_prefix = day.strftime("e-%Y%m%d-")
        session_prefix = day.strftime("s-%Y%m%d-")
        # Zero-padded numbers make the string ids sort like the numbers they carry.
        rows = []
        add = rows.append
        n = 0
        for session_number, key in enumerate(start_keys, 1):
            index = int(key) & _START_INDEX_MASK
            session_id = session_prefix + str(session_number).zfill(8)
            customer_id = session_customers[index]
            for (event_type, pid, path), second in zip(session_steps[index], session_seconds[index], strict=True):
                n += 1
                add(
                    (
                        event_prefix + str(n).zfill(8),
                        session_id,
                        customer_id,
                        event_type,
                        pid,
                        path,
                        seconds[second],
                    )
                )

        bad = {}
        for index in self._corrupted_indices("web_events", day, len(rows)):
            event_id, session_id, customer_id, _, pid, path, occurred_at = rows[index]
            rows[index] = (event_id, session_id, customer_id, "bogus", pid, path, occurred_at)
            bad[event_id] = "event_type"
        return _WebDay(rows, bad)
