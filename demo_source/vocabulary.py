"""The demo shop's vocabulary: its tables and their keys, the values its columns take and how often, the
name pools, countries and product categories its records are made of, and what a broken record looks like
(DATA_SPEC.md, "The demo world").
"""

from __future__ import annotations

from itertools import accumulate
from typing import Any

PRODUCT_COUNT = 500

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
