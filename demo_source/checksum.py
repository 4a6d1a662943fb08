"""The key checksum of the control figures (DATA_SPEC.md, "Control figures"), computable by any source.

This module owns the definition, nothing else: a key value's text, its 64-bit hash and the checksum of a
set of keys. It is order-independent and additive (a sum modulo 2**64), so a source can compute it in SQL
and a client can compare it with what it loaded without sorting anything:

    key_text(value)  int -> its decimal digits; str -> the string itself; anything else (null, float,
                     bool, object, array) -> its compact JSON text ("null", "1.5", "true")
    key_hash(value)  the first 8 bytes of MD5(UTF-8 key_text), as a big-endian unsigned integer
    key_checksum     the sum of key_hash over the DISTINCT key texts, modulo 2**64
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import orjson

MODULUS = 1 << 64


def key_text(value: Any) -> str:
    """The text a key value is hashed by: decimal digits, the string itself, or compact JSON."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def text_hash(text: str) -> int:
    """key_hash of a key whose key_text is `text`."""
    return int.from_bytes(hashlib.md5(text.encode(), usedforsecurity=False).digest()[:8], "big")


def key_hash(value: Any) -> int:
    return text_hash(key_text(value))


def key_checksum(values: Iterable[Any]) -> int:
    """The checksum of a set of keys: duplicates (by key_text) count once."""
    return sum(text_hash(text) for text in {key_text(value) for value in values}) % MODULUS
