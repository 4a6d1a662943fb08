"""The demo shop's world: a deterministic generator of every record the shop ever produced, at any instant.

This module owns the *data* of the demo source, nothing about transport. Given a scale and a bad-record
rate, `ShopWorld` regenerates any day's customers, products, orders, order items, payments and web events
identically in any process: every random draw comes from a `random.Random` seeded by a SHA-256 hash of
(purpose, date, scale), and every per-entity attribute (a customer's tier, a product's price, an order's
lines, the times of an order's life) is a stateless hash of (entity, day). Orders live on after their day:
placed, paid, shipped, delivered, some refunded up to 30 days later (DATA_SPEC.md, "The life of an order"),
so every accessor takes an `as_of` instant and answers with the records as they stood then (None: the end
of time, every life finished). The rules are the shared data spec's; `ground_truth` computes the daily
marts straight from the generated records so the pipeline's output can be checked against them.

A day's orders are kept as a compact `_Ledger` (arrays of ordered second, customer, outcome and transition
times, about 40 bytes an order) in a cache of many days, so questions that span weeks (a change
feed, the refunds landing on a day, a customer's latest activity) need no records; records are built only
for what is asked. Records are dicts of plain Python values (int, str, bool, None, naive-UTC `datetime`)
sorted by primary key. The HTTP server and the landing writer use the package-private methods
(`_partition`, `_changes`, `_versions_between`, `_current_versions`, `_web_event_rows`), whose records
callers must not mutate.
"""

from __future__ import annotations

import gc
import hashlib
import math
import random
import threading
from array import array
from bisect import bisect_left, bisect_right
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from itertools import accumulate
from typing import Any

EPOCH = date(2020, 1, 1)
EPOCH_START = datetime(2020, 1, 1)
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
_SALT_LIFECYCLE, _SALT_REFUND, _SALT_LINE = range(21, 24)
_M64 = (1 << 64) - 1

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
_END_OF_TIME = (date(9999, 1, 1) - EPOCH).days * SECONDS_PER_DAY  # as_of=None: after every transition
# A ledger's change index packs (second since the ledger's midnight, status, order index) into one int.
_INDEX_BITS = 20  # orders per day stay under 2^18 even at MAX_SCALE
_INDEX_MASK = (1 << _INDEX_BITS) - 1
_TIME_SHIFT = _INDEX_BITS + 3


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


def _to_second(moment: datetime | None) -> int:
    """Whole seconds since EPOCH_START (floored); None is the end of time."""
    if moment is None:
        return _END_OF_TIME
    delta = to_naive_utc(moment) - EPOCH_START
    return delta.days * SECONDS_PER_DAY + delta.seconds


def _moment(second: int) -> datetime:
    return EPOCH_START + timedelta(seconds=second)


def settles_at(table: str, end: datetime, late_arrivals: bool) -> datetime:
    """From this instant on, what `table` holds for dates or update times before `end` no longer changes.

    By then every order ordered before `end` has finished its life (only orders change; items and
    payments exist from their time on) and, if some orders arrive late, every late arrival is in;
    before it, the same query can answer differently at different clocks.
    """
    settled = to_naive_utc(end) + (timedelta(days=LIFECYCLE_DAYS) if table == "orders" else timedelta(0))
    return settled + LATE_ARRIVAL_DELAY if late_arrivals else settled


@dataclass(slots=True)
class _Catalog:
    """The products partition of one day, plus what order lines need from it (clean prices)."""

    records: list[dict[str, Any]] = field(default_factory=list)
    prices: list[int] = field(default_factory=list)  # index == product_id
    active_ids: list[int] = field(default_factory=list)
    active_cum_weights: list[int] = field(default_factory=list)
    bad: dict[int, str] = field(default_factory=dict)


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


@dataclass(slots=True)
class _WebDay:
    rows: list[tuple] = field(default_factory=list)  # WEB_EVENT_COLUMNS order, sorted by event_id
    bad: dict[str, str] = field(default_factory=dict)


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


def _days(first: date, last: date) -> Iterator[date]:
    """The days from `first` to `last` inclusive, none before EPOCH."""
    day = max(first, EPOCH)
    while day <= last:
        yield day
        day += timedelta(days=1)


def _day_of(second: int) -> date:
    return EPOCH + timedelta(days=second // SECONDS_PER_DAY)


class ShopWorld:
    """Deterministic generator of the demo shop's records (see the module docstring and DATA_SPEC.md).

    `scale` multiplies the daily volumes (at 1.0: 150 signups, 2000 orders, about 50k web events);
    `bad_record_rate` is the share of each table's daily records that get one rule-breaking column.
    The world starts at EPOCH (2020-01-01); earlier days are empty. Every record accessor takes `as_of`,
    the instant the records are asked as of (None: the end of time). Thread-safe.
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
        # A 31-day change feed of orders reads 62 days of ledgers, and the refunds landing on a day need
        # the prices of the 30 days before it; a cache smaller than a request's sweep would miss every time.
        self._ledgers = _LRU(72)
        self._catalogs = _LRU(72)
        self._activities = _LRU(370)  # a current-state listing of customers reaches back up to 366 days
        self._bad_payments = _LRU(40)
        self._bad_customers = _LRU(40)
        self._web_days = _LRU(2)  # the big one: 500k events a day at scale 10

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
        order_totals: Counter[int] = Counter()
        order_quantities: Counter[int] = Counter()
        for item in self._partition("order_items", day, as_of):
            quantity = item["quantity"]
            order_totals[item["order_id"]] += quantity * item["unit_price_cents"] - item["discount_cents"]
            order_quantities[item["order_id"]] += quantity
        billable = [o["order_id"] for o in orders if o["order_status"] in BILLABLE_STATUSES]
        gross = sum(order_totals[order_id] for order_id in billable)
        refunded = sum(order_totals[o["order_id"]] for o in orders if o["order_status"] == "refunded")

        events = self._web_event_rows(day)
        if as_of is not None:
            cutoff = _moment(_to_second(as_of))
            events = [row for row in events if row[6] <= cutoff]
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
                    records.append(self._payment_record(ledger, k, is_refund, paid, shift, bad.get(payment_id)))
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
                        records += self._item_records(ledger, k, shift)
                    continue
                state = ledger.state(k, now - shift - ledger.start)
                if state is not None:
                    records.append(self._order_record(ledger, k, state, shift))
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
                    records.append(self._order_record(ledger, k, ledger.state(k, now - shift - ledger.start), shift))
                elif table == "order_items":
                    records += self._item_records(ledger, k, shift)
                else:
                    is_refund = status == _REFUNDED
                    paid = ledger.refunded[k] if is_refund else ledger.settled[k]
                    bad = self._bad_payment_ids(_day_of(ledger.start + paid)).get(key)
                    records.append(self._payment_record(ledger, k, is_refund, paid, shift, bad))
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
            return [self._customer_version(customer_id, *latest[customer_id]) for customer_id in sorted(latest)]

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
            return [self._customer_version(customer_id, *found[customer_id]) for customer_id in sorted(found)]

    def _web_event_rows(self, day: date) -> list[tuple]:
        """The cached web events as tuples in WEB_EVENT_COLUMNS order. Callers must not mutate them."""
        return self._web_day(day).rows

    # ------------------------------------------------------------------------------- records

    def _order_record(self, ledger: _Ledger, k: int, state: tuple[int, int], shift: int) -> dict[str, Any]:
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

    def _item_records(self, ledger: _Ledger, k: int, shift: int) -> list[dict[str, Any]]:
        order_id = ledger.first_order_id + k
        ordered_at = _moment(ledger.start + ledger.ordered[k])
        updated_at = _moment(ledger.start + ledger.ordered[k] + shift) if shift else ordered_at
        position = ledger.item_starts[k]
        records = []
        for line, (product_id, quantity, price, discount) in enumerate(self._lines(ledger, k), 1):
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
        self, ledger: _Ledger, k: int, is_refund: bool, paid: int, shift: int, bad: tuple[str, Any] | None
    ) -> dict[str, Any]:
        order_id = ledger.first_order_id + k
        status = "refunded" if is_refund else "failed" if ledger.outcomes[k] == _CANCELLED else "captured"
        record = {
            "payment_id": order_id * 10 + (2 if is_refund else 1),
            "order_id": order_id,
            "payment_method": PAYMENT_METHODS[ledger.methods[k]],
            "payment_status": status,
            "amount_cents": self._total(ledger, k),
            "paid_at": _moment(ledger.start + paid),
            "updated_at": _moment(ledger.start + paid + shift),
        }
        if bad is not None:
            record[bad[0]] = bad[1]
        return record

    def _customer_version(self, customer_id: int, day: date, updated: int) -> dict[str, Any]:
        record = self._customer_record(customer_id, (day - EPOCH).days, _moment(updated))
        bad = self._bad_customer_ids(day).get(customer_id)
        if bad is not None:
            record[bad[0]] = bad[1]
        return record

    def _lines(self, ledger: _Ledger, k: int) -> list[tuple[int, int, int, int]]:
        """(product_id, quantity, unit_price_cents, discount_cents) of each line of order k, clean.

        A stateless hash per (order, line), so one order's lines (and total) cost no other order's draws.
        Drawn with replacement, so now and then an order lists one product on two lines; the marts'
        distinct-order counts have to cope with that.
        """
        if ledger.pricing is None:
            catalog = self._catalog(ledger.day)
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

    def _total(self, ledger: _Ledger, k: int) -> int:
        return ledger.totals[k] or sum(q * p - d for _, q, p, d in self._lines(ledger, k))

    # -------------------------------------------------------------------------------- generation

    def _rng(self, purpose: str, day: date) -> random.Random:
        return random.Random(_seed(purpose, day, self.scale))

    def _catalog(self, day: date) -> _Catalog:
        if day < EPOCH:
            return _Catalog()
        with self._lock, gc_paused():
            return self._catalogs.get_or_build(day, lambda: self._build_catalog(day))

    def _ledger(self, day: date) -> _Ledger | None:
        if day < EPOCH:
            return None
        with self._lock, gc_paused():
            return self._ledgers.get_or_build(day, lambda: self._build_ledger(day))

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
        ordered, customer_ids = (ledger.ordered, ledger.customer_ids) if ledger else self._draw_orders(day)[1:]
        last: dict[int, int] = {}
        for second, customer_id in zip(ordered, customer_ids, strict=True):
            if second > until:
                break
            last[customer_id] = second  # orders come in time order: the last one wins
        first_new_id = (day - EPOCH).days * self.customers_per_day + 1
        for customer_id in range(first_new_id, first_new_id + self.customers_per_day):
            # A new customer's orders all follow the signup, so the signup only counts without orders.
            signed_up = self._signup_second(customer_id)
            if signed_up <= until:
                last.setdefault(customer_id, signed_up)
        ids = sorted(last)
        return array("i", ids), array("i", [last[customer_id] for customer_id in ids])

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
        positions = self._bad_positions("products", day, len(catalog.records))
        for index, (column, value) in positions.items():
            catalog.records[index][column] = value
            catalog.bad[catalog.records[index]["product_id"]] = column
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

    def _draw_orders(self, day: date) -> tuple[random.Random, list[int], list[int]]:
        """Who ordered when on `day`: (the day's order stream, ordered seconds ascending, customer ids)."""
        di = (day - EPOCH).days
        rng = self._rng("orders", day)
        rand = rng.random
        per_day = self.customers_per_day
        first_new_id = di * per_day + 1
        signup_second = self._signup_second
        who_when = []  # second << 32 | customer_id: ints sort several times faster than tuples
        for _ in range(self.orders_per_day):
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

    def _build_ledger(self, day: date) -> _Ledger:
        rng, ordered, customer_ids = self._draw_orders(day)
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
            bad_orders=self._bad_positions("orders", day, n),
            bad_items=self._bad_positions("order_items", day, item_starts[-1]),
            totals=array("q", bytes(8 * n)),
        )

    def _build_web_day(self, day: date) -> _WebDay:
        ledger = self._ledger(day)
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

        for k, (purchase_second, customer_id) in enumerate(zip(ledger.ordered, ledger.customer_ids, strict=True)):
            order_pids = [line[0] for line in self._lines(ledger, k)]
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
