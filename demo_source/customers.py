"""The shop's customers: when each signs up, and a customer's attributes on any day.

Customers are numbered by signup day (customers_per_day a day), and every attribute is a stateless hash of
(customer, period), each changing in its own period, so any version of any customer costs no other draw.
"""

from __future__ import annotations

from bisect import bisect_right
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from demo_source.randomness import _SALT_CITY, _SALT_CUSTOMER, _SALT_EMAIL, _SALT_OPT_IN, _SALT_SIGNUP, _SALT_TIER, _mix
from demo_source.vocabulary import (
    _COUNTRY_POOL,
    _TIER_CUM,
    COUNTRIES,
    EMAIL_DOMAINS,
    FIRST_NAMES,
    LAST_NAMES,
    LOYALTY_TIERS,
)

if TYPE_CHECKING:
    from demo_source.days import _ShopDays

# Signups stop an hour before midnight so a new customer's same-day orders have room after the signup.
SIGNUP_WINDOW_SECONDS = 23 * 3600


def _signup_second(customer_id: int) -> int:
    return _mix(_SALT_SIGNUP, customer_id) % SIGNUP_WINDOW_SECONDS


def _customer_record(world: _ShopDays, customer_id: int, di: int, updated_at: datetime) -> dict[str, Any]:
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
    signup_day_index = (customer_id - 1) // world.customers_per_day
    return {
        "customer_id": customer_id,
        "email": f"{local.lower()}.{customer_id}@{domain}",
        "full_name": f"{first} {last}",
        "country": country,
        "city": cities[_mix(_SALT_CITY, customer_id, city_period) % len(cities)],
        "loyalty_tier": LOYALTY_TIERS[bisect_right(_TIER_CUM, tier_draw)],
        "marketing_opt_in": _mix(_SALT_OPT_IN, customer_id, opt_in_period) % 100 < 40,
        "signup_at": datetime(2020, 1, 1) + timedelta(signup_day_index, _signup_second(customer_id)),
        "updated_at": updated_at,
    }
