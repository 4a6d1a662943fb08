"""Where every draw of the world comes from, so that any day regenerates identically in any process.

Per-entity attributes (a customer's tier, a product's price, an order's lines, the times of an order's
life) are stateless hashes of (salt, entity, period); a day's draws come from a `random.Random` seeded by
a SHA-256 hash of (purpose, date, scale). Also the hourly traffic profile and weighted draws in bulk.
"""

from __future__ import annotations

import hashlib
import random
from bisect import bisect_right
from collections.abc import Callable, Iterator
from datetime import date
from itertools import accumulate

# Salts keep the stateless hashes of different attributes independent of each other.
_SALT_CUSTOMER, _SALT_SIGNUP, _SALT_CITY, _SALT_TIER, _SALT_EMAIL, _SALT_OPT_IN = range(1, 7)
_SALT_PRODUCT, _SALT_PRICE, _SALT_STOCK, _SALT_ACTIVE, _SALT_POPULARITY = range(11, 16)
_SALT_LIFECYCLE, _SALT_REFUND, _SALT_LINE = range(21, 24)
_M64 = (1 << 64) - 1

# Traffic by UTC hour: quiet nights, busy evenings. Stored as a 1000-entry quantile table so drawing an
# hour costs one random() and one index instead of a choices() call.
_HOUR_WEIGHTS = (2, 1, 1, 1, 1, 2, 3, 5, 6, 7, 7, 8, 8, 8, 7, 7, 8, 9, 10, 10, 9, 7, 5, 3)
_HOUR_TABLE = tuple(
    bisect_right(list(accumulate(_HOUR_WEIGHTS)), (q + 0.5) * sum(_HOUR_WEIGHTS) / 1000) for q in range(1000)
)


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
